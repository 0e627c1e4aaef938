"""Every entropy method is picked by name from the registry and builds from a default config; bad
config values are rejected with errors that name the field."""

import pytest

from trainers.config import ConfigError, EntropyConfig, RunConfig, parse_config
from trainers.entropy import EntropyIntervention, build_intervention, registered_interventions

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
