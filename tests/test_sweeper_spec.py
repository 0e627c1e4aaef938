"""The study spec: every kind of user error exits 2 with the field path and what is accepted; includes,
shorthands and path resolution. No processes, no storage (except `validate` on a real file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sweeper.cli import main
from sweeper.study.spec import SpecError, load_spec

REPO = Path(__file__).resolve().parents[1]


def minimal(**overrides):
    spec = {
        "study": {"name": "t"},
        "objective": {"metric": "val/pass@8"},
        "base": {"train": {"steps": 10}},
        "space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.4}}},
        "budget": {"n_trials": 2},
        "tracking": {"enabled": False},
    }
    spec.update(overrides)
    return spec


def write(tmp_path: Path, spec: dict, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def validate_error(tmp_path, capsys, spec) -> str:
    code = main(["validate", str(write(tmp_path, spec))])
    captured = capsys.readouterr()
    assert code == 2, captured.out
    assert "Traceback" not in captured.err
    assert captured.err.startswith("error: invalid study spec")
    return captured.err


# (mutation, fragments the message must contain: the field path and the accepted values)
SPEC_ERRORS = [
    ({"study": {"name": "t", "storag": "x"}}, ["study.storag: unknown key", "accepted: name, storage, dir"]),
    ({"study": {"name": "my study"}}, ["study.name", "letters, digits"]),
    ({"study": {"name": "t", "storage": "redis://x"}}, ["study.storage", "journal:///path.log", "postgresql"]),
    ({"objective": {"metric": "val/pass@8", "aggregation": "median"}}, ["objective.aggregation", "'last', 'best' or 'mean_last_n'"]),
    ({"objective": {"metric": "val/pass@8", "direction": "up"}}, ["objective.direction", "'maximize' or 'minimize'"]),
    ({"objective": {"metric": "train/loss"}}, ["objective.metric", "val/pass@K"]),
    ({"objective": {"metric": "val/pass@16"}}, ["objective.metric", "eval.k = [1, 8]", "val/pass@8"]),
    ({"objective": {"metric": "val/pass@8", "last_n": 0}}, ["objective.last_n", "greater than 0"]),
    ({"base": {"train": {"steps": -1}}}, ["base.train.steps", "greater than 0"]),
    ({"base": {"clip": {"eps_hgh": 0.3}}}, ["base.clip.eps_hgh", "unknown key"]),
    ({"space": {"params": {"clip.eps_hi": {"type": "float", "low": 0.2, "high": 0.4}}}},
     ["space.params[clip.eps_hi]", "accepted: eps_low, eps_high, dual_c"]),
    ({"space": {"params": {"clip": {"type": "float", "low": 0.2, "high": 0.4}}}}, ["space.params[clip]", "is a section", "clip.eps_low"]),
    ({"space": {"params": {"clip.eps_high": {"type": "floot", "low": 0.2, "high": 0.4}}}},
     ["space.params[clip.eps_high]", "'float', 'int', 'categorical', 'fixed'"]),
    ({"space": {"params": {"clip.eps_high": {"low": 0.2, "high": 0.4}}}}, ["space.params[clip.eps_high]", "missing 'type'", "float, int, categorical, fixed"]),
    ({"space": {"params": {"clip.eps_high": {"type": "float", "low": 0.4, "high": 0.2}}}}, ["space.params[clip.eps_high]", "low (0.4) must be <= high (0.2)"]),
    ({"space": {"params": {"optim.lr": {"type": "float", "low": 0, "high": 0.1, "log": True}}}}, ["space.params[optim.lr]", "log: true needs low > 0"]),
    ({"space": {"params": {"clip.eps_low": {"type": "float", "low": 0.1, "high": 1.3}}}},
     ["space.params[clip.eps_low].high", "refused by the run config field clip.eps_low", "less than 1"]),
    ({"space": {"params": {"entropy.method": ["none", "sirne"]}}}, ["space.params[entropy.method].choices[1]", "'siren'"]),
    ({"space": {"params": {"entropy.method": ["none", "siren"],
                           "entropy.siren.coef": {"type": "float", "low": 1e-4, "high": 1e-2, "when": {"entropy.method": "sirne"}}}}},
     ["space.params[entropy.siren.coef].when.entropy.method", "'sirne' is never taken", "'siren'"]),
    ({"space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.4, "when": {"entropy.methd": "siren"}}}}},
     ["space.params[clip.eps_high].when", "entropy has no field 'methd'"]),
    ({"space": {"params": {"a": {"path": "entropy.anchor.ratio", "type": "float", "low": 0.3, "high": 1.0},
                           "b": {"path": "entropy.anchor.ratio", "type": "float", "low": 0.5, "high": 1.0}}}},
     ["space.params[b]", "sets entropy.anchor.ratio like space.params[a]"]),
    ({"space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.4}},
                "constraints": ["clip.eps_high >= clip.eps_lw"]}}, ["space.constraints[0]", "accepted: eps_low, eps_high, dual_c"]),
    ({"space": {"params": {}, "constraints": ["__import__('os')"]}}, ["space.constraints[0]", "comparison"]),
    ({"space": {"paramz": {}}}, ["space.paramz: unknown key", "accepted: params, constraints"]),
    ({"space": {"include": "builtin:nope"}}, ["space.include", "no ready space 'builtin:nope'", "builtin:siren"]),
    ({"sampler": "tpee"}, ["sampler", "'tpe', 'random', 'grid', 'cmaes', 'gp', 'nsga2'"]),
    ({"sampler": {"type": "tpe", "group": True, "multivariate": False}}, ["sampler", "group: true needs multivariate: true"]),
    ({"sampler": "grid"}, ["space.params[clip.eps_high]", "sampler grid needs a finite grid"]),
    ({"pruner": {"type": "median", "n_startup": 3}}, ["pruner.n_startup: unknown key", "n_startup_trials"]),
    ({"pruner": {"type": "hyperbnd"}}, ["pruner", "'none', 'median', 'successive_halving', 'hyperband', 'wilcoxon'"]),
    ({"pruner": {"type": "median", "health": {"collapse": {"fraction": 1.5}}}}, ["pruner.health.collapse.fraction", "less than 1"]),
    ({"pruner": {"type": "none", "health": {"explosion": {"multiple": 0.5}}}}, ["pruner.health.explosion.multiple", "greater than 1"]),
    ({"objective": [{"metric": "val/pass@8"}, {"metric": "val/entropy", "direction": "minimize"}]},
     ["pruner.type: 'median' cannot prune a multi-objective study", "type: none"]),
    ({"budget": {"max_parallel": 2}}, ["budget", "give n_trials, timeout or trial_steps"]),
    ({"budget": {"n_trials": 0}}, ["budget.n_trials", "greater than 0"]),
    ({"budget": {"n_trials": 3, "timeout": "ten minutes"}}, ["budget.timeout", "30m, 2h"]),
    ({"executor": {"type": "kubernetes"}}, ["executor", "'local', 'debug', 'slurm'"]),
    ({"executor": {"type": "local", "resources": {"cpus": 2}}}, ["executor.resources.cpus: unknown key", "cpus_per_trial"]),
    ({"executor": {"type": "local", "entrypoint": "trainers.grpo.train"}}, ["executor.entrypoint", "'module:function'"]),
    ({"tracking": {"enabled": False, "url": "x"}}, ["tracking.url: unknown key", "accepted: enabled, uri, experiment"]),
    ({"enqueue": [{"clip.eps_high": 0.9}]}, ["enqueue[0].clip.eps_high", "outside [0.2, 0.4]"]),
    ({"enqueue": [{"clip.eps_lowx": 0.2}]}, ["enqueue[0].clip.eps_lowx", "not a sampled parameter", "clip.eps_high"]),
    ({"studdy": {}}, ["studdy: unknown key", "accepted: study, objective, base, space"]),
]


@pytest.mark.parametrize("mutation,fragments", SPEC_ERRORS, ids=[str(i) for i in range(len(SPEC_ERRORS))])
def test_each_spec_error_names_field_and_accepted_values(tmp_path, capsys, mutation, fragments):
    message = validate_error(tmp_path, capsys, minimal(**mutation))
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_missing_sections_and_files(tmp_path, capsys):
    spec = minimal()
    del spec["objective"], spec["budget"]
    message = validate_error(tmp_path, capsys, spec)
    assert "objective: required field is missing" in message and "budget: required field is missing" in message
    message = validate_error(tmp_path, capsys, minimal(base="nowhere.yaml"))
    assert "nowhere.yaml does not exist" in message
    assert main(["validate", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml does not exist" in capsys.readouterr().err
    (tmp_path / "broken.yaml").write_text("study: [unclosed")
    assert main(["validate", str(tmp_path / "broken.yaml")]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_several_errors_are_reported_together(tmp_path, capsys):
    message = validate_error(tmp_path, capsys, minimal(base={"train": {"steps": 0}}, sampler="tpee", budget={"n_trials": -1}))
    assert "base.train.steps" in message and "sampler" in message and "budget.n_trials" in message


def test_cli_exit_code_2_without_traceback_in_a_real_process(tmp_path):
    path = write(tmp_path, minimal(sampler="tpee"))
    result = subprocess.run([sys.executable, "-m", "sweeper", "validate", str(path)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "sampler" in result.stderr


def test_valid_spec_resolves_paths_relative_to_the_study_file(tmp_path, capsys):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "run.yaml").write_text("train: {steps: 7}\n")
    (tmp_path / "conf" / "myspace.yaml").write_text(
        "params:\n  clip.eps_low: {type: float, low: 0.1, high: 0.3}\nconstraints: [clip.eps_high >= clip.eps_low]\n")
    spec_dict = minimal(base="run.yaml", space={"include": ["myspace.yaml", "builtin:clip"],
                                                "params": {"clip.eps_high": {"type": "float", "low": 0.25, "high": 0.35}}})
    spec_dict["study"]["storage"] = "journal://journal.log"
    path = write(tmp_path / "conf", spec_dict)
    spec = load_spec(path)
    assert spec.study_dir == (tmp_path / "conf" / "studies" / "t")
    assert spec.study.storage == f"journal://{tmp_path / 'conf' / 'journal.log'}"
    assert spec.tracking.uri == f"sqlite:///{tmp_path / 'conf' / 'studies' / 't' / 'mlflow.db'}" and spec.tracking.experiment == "t"
    assert spec.base["train"]["steps"] == 7 and spec.trial_steps() == 7
    # the study file's own definition replaces the included one; constraints are concatenated
    assert spec.space.params["clip.eps_high"].low == 0.25
    assert [c.expr for c in spec.space.constraints].count("clip.eps_high >= clip.eps_low") == 2
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "clip.eps_low" in out and "constraint: clip.eps_high >= clip.eps_low" in out


def test_shorthands_and_defaults(tmp_path):
    spec = load_spec(minimal(space={"params": {"entropy.method": ["none", "siren"], "rollout.group_size": 4,
                                                "entropy.siren.coef": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True,
                                                                       "when": {"entropy.method": "siren"}}}},
                             sampler="random", pruner="none", executor="debug"), base_dir=tmp_path)
    assert spec.space.params["entropy.method"].type == "categorical"
    assert spec.space.params["rollout.group_size"].type == "fixed"
    assert spec.space.params["entropy.siren.coef"].low == 1e-4  # '1e-4' read as a float
    assert (spec.sampler.type, spec.pruner.type, spec.executor.type) == ("random", "none", "debug")
    assert spec.executor.entrypoint == "trainers.grpo:train"
    assert spec.pruner.health.nan and spec.pruner.health.collapse is None
    with pytest.raises(Exception):
        spec.budget.n_trials = 5  # frozen


def test_every_ready_space_validates(tmp_path):
    spaces = sorted((REPO / "search_spaces").glob("*.yaml"))
    assert {p.stem for p in spaces} >= {"siren", "aer", "steer", "clip", "bonus", "all_methods"}
    for path in spaces:
        spec = load_spec(minimal(space={"include": f"builtin:{path.stem}"}), base_dir=tmp_path)
        assert spec.space.params, path


def test_include_cycle_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("include: b.yaml\nparams: {}\n")
    (tmp_path / "b.yaml").write_text("include: a.yaml\nparams: {}\n")
    with pytest.raises(SpecError, match="includes itself"):
        load_spec(minimal(space={"include": "a.yaml"}), base_dir=tmp_path)


def test_the_sweeper_never_imports_torch(tmp_path):
    """A login node without torch can validate, run (drive), report and export: only the trial process
    (sweeper.run.trial, inside run_trial) and `sweeper train` import the trainer. The contract is
    trainers.config with the torch-free modules it re-exports or reads (safe YAML reading, the logged metric names,
    the shipped models, the reward registry's names, the TRL engine's GRPOConfig mapping)."""
    code = (
        "import importlib, pkgutil, sys, sweeper\n"
        "for m in pkgutil.iter_modules(sweeper.__path__):\n"
        "    if m.name != '__main__': importlib.import_module('sweeper.' + m.name)\n"
        "from sweeper.cli import main\n"
        f"main(['validate', {str(write(tmp_path, minimal(space={'include': 'builtin:all_methods'})))!r}])\n"
        "heavy = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'transformers', 'accelerate'))\n"
        "contract = ('trainers.config', 'trainers.schema', 'trainers.safe_yaml', 'trainers.logged_metrics', 'trainers.launch_checks',\n"
        "            'trainers.reporting', 'trainers.assets', 'trainers.rewards',\n"
        "            'trainers.built_models', 'trainers.engines', 'trainers.engines.trl_args')\n"
        "trainer = sorted(k for k in sys.modules if k.startswith('trainers.') and k not in contract)\n"
        "assert not heavy and not trainer, (heavy, trainer)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("executor", [{"type": "local", "warm_start": True}, {"warm_start": "auto"}])
def test_a_spec_that_still_asks_for_warm_start_is_told_it_was_removed(tmp_path, executor):
    with pytest.raises(SpecError) as error:
        load_spec(minimal(executor=executor), base_dir=tmp_path)
    message = str(error.value)
    assert "warm_start" in message and "warm start was removed" in message and "delete executor.warm_start" in message
