"""Every entropy method is picked by name from the registry and builds from a default config; bad
config values are rejected with errors that name the field."""

from pathlib import Path

import pytest

from trainers.config import ConfigError, EntropyConfig, RunConfig, parse_config
from trainers.entropy import EntropyIntervention, build_intervention, registered_interventions

REPO = Path(__file__).resolve().parents[1]
METHODS = ["none", "entropy_bonus", "siren", "aer", "steer", "forking_tokens", "clip_cov", "kl_cov", "entropy_advantage"]


def test_every_config_method_is_registered():
    build_intervention(EntropyConfig())   # imports every method module
    assert sorted(METHODS) == registered_interventions()


@pytest.mark.parametrize("method", METHODS)
def test_each_method_builds_from_a_default_config_with_and_without_the_run_config(method):
    alone = build_intervention(EntropyConfig(method=method))
    run = RunConfig.model_validate({"entropy": {"method": method}})
    with_run = build_intervention(run.entropy, run_config=run)
    for intervention in (alone, with_run):
        assert isinstance(intervention, EntropyIntervention)
        assert intervention.name == method
        assert isinstance(intervention.state_dict(), dict)


def test_unknown_method_names_the_field():
    config = EntropyConfig()
    object.__setattr__(config, "method", "sirem")   # bypass validation, as a hand-built config could
    with pytest.raises(ValueError, match="entropy.method"):
        build_intervention(config)


@pytest.mark.parametrize("path,value", [
    ("steer.w_min", 0.0), ("steer.w_min", 1.2), ("steer.w_min", -0.5),
    ("siren.top_p", 0.0), ("siren.top_p", 1.01),
    ("siren.peak_quantile", 1.0), ("siren.peak_quantile", -0.1),
    ("forking.top_fraction", 0.0), ("anchor.ratio", 0.0), ("aer.rho", 1.5),
])
def test_out_of_range_values_are_rejected_naming_the_field(path, value):
    section, field = path.split(".")
    with pytest.raises(ConfigError) as error:
        parse_config({"entropy": {section: {field: value}}})
    assert f"entropy.{path}" in str(error.value)
    assert repr(value) in str(error.value)


@pytest.mark.parametrize("path,value", [("steer.w_min", 1.0), ("siren.top_p", 1.0), ("siren.peak_quantile", 0.0)])
def test_boundary_values_that_are_allowed(path, value):
    section, field = path.split(".")
    parse_config({"entropy": {section: {field: value}}})


def test_linear_steer_needs_w_max_at_least_w_min():
    with pytest.raises(ConfigError, match="entropy.steer"):
        parse_config({"entropy": {"steer": {"mapping": "linear", "w_min": 0.9, "w_max": 0.8}}})


def test_fixed_anchor_needs_a_value():
    with pytest.raises(ConfigError, match="entropy.anchor"):
        parse_config({"entropy": {"anchor": {"source": "fixed"}}})


# --------------------------------------------------------------------------- a method = its module + its config section

SHARED_MODULES = {"base", "ops", "anchor"}   # modules of trainers/entropy that are not a method


def test_methods_are_discovered_by_module_and_each_has_a_config_section():
    from trainers.config import METHOD_SECTIONS, EntropyConfig
    from trainers.entropy.base import _REGISTRY, package_modules

    registered_interventions()
    by_module: dict[str, list[str]] = {}
    for name, cls in _REGISTRY.items():
        by_module.setdefault(cls.__module__.rsplit(".", 1)[-1], []).append(name)
    modules = set(package_modules())
    # every module under trainers/entropy registers exactly one method, except the shared ones
    assert modules - SHARED_MODULES == set(by_module) - {"base"}
    assert all(len(names) == 1 for names in by_module.values()), by_module
    # every registered method has a config section, and every config method has a module
    assert set(_REGISTRY) == set(METHOD_SECTIONS)
    assert set(METHOD_SECTIONS) == set(EntropyConfig.model_fields["method"].annotation.__args__)
    for method, sections in METHOD_SECTIONS.items():
        assert all(section in EntropyConfig.model_fields for section in sections), method
        if method != "none":
            assert sections and getattr(EntropyConfig(), sections[0]).method == method


def test_method_sections_as_the_sweeper_needs_them():
    from trainers.config import METHOD_SECTIONS

    assert METHOD_SECTIONS == {
        "none": (), "entropy_bonus": ("bonus",), "siren": ("siren", "anchor"), "aer": ("aer", "anchor"),
        "steer": ("steer",), "forking_tokens": ("forking",), "clip_cov": ("clip_cov",), "kl_cov": ("kl_cov",),
        "entropy_advantage": ("entropy_advantage",)}


def test_config_module_stays_torch_free():
    import subprocess
    import sys

    code = "import sys, trainers.config as c; assert c.METHOD_SECTIONS; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO))
    assert done.returncode == 0, done.stderr


def test_a_new_module_in_the_package_is_found_by_name(tmp_path, monkeypatch):
    import sys

    import trainers.entropy as package
    from trainers.entropy.base import load_methods, package_modules

    (tmp_path / "zz_probe_method.py").write_text("LOADED = True\n")
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    try:
        assert "zz_probe_method" in package_modules()
        load_methods()
        assert sys.modules["trainers.entropy.zz_probe_method"].LOADED
    finally:
        sys.modules.pop("trainers.entropy.zz_probe_method", None)


def test_a_method_without_a_config_section_is_refused_naming_the_fix():
    from trainers.entropy import register_intervention

    with pytest.raises(ValueError, match=r"no config section.*trainers/config.py"):
        register_intervention("my_new_method")


def test_hooks_that_read_clip_statistics_say_when_the_step_did_not_hand_them_over():
    from _entropy_batches import micro_batch, random_rollout, step_batch

    rollout = random_rollout(seed=1)
    micro = micro_batch(rollout, step_batch(rollout), [8, 9, 10])
    micro.clip_stats = None
    for method, section in (("steer", {"omega_form": "paper"}), ("clip_cov", {})):
        config = RunConfig.model_validate({"entropy": {"method": method, method: section}})
        with pytest.raises(RuntimeError, match="clip_stats"):
            build_intervention(config.entropy, run_config=config).token_weights(micro)
