"""Trials on TRL (``engine: trl``): a run config names its engine; a trial on TRL reports the same metrics,
validations and per-prompt results through the same reporters, and is pruned by the same rules.

- the run config refuses what a TRL trial cannot honour, naming the field and the fix (no TRL needed);
- a TRL run stops when a reporter says stop (pruning), after that step's validation; a preempted one saves a
  checkpoint and resumes from it;
- a 2-trial study with ``engine: trl`` end to end through the local executor: Optuna intermediate values, MLflow
  metrics (``val/pass@k``, ``train/entropy``, the method's), per-prompt results.
The loss and gradients of one step equal the native trainer's for every method: tests/test_engines.py.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import yaml
from _studies import trials_of
from conftest import tiny_run_config

from trainers.config import ConfigError, SirenConfig, launch_problems, logged_metrics, parse_config
from trainers.reporting import read_per_prompt


@pytest.fixture
def needs_trl():
    """TRL importable here: else skipped, with the way to install it (failed in CI: scripts/setup.sh installs it)."""
    if importlib.util.find_spec("trl") is None:
        message = "TRL is not installed here: pip install -e '.[trl]' (scripts/setup.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def trl_config(output_dir, **sections) -> dict:
    """A tiny run on TRL: one PPO epoch (TRL keeps one mini-batch split for every epoch)."""
    config = tiny_run_config(output_dir, engine="trl", **sections)
    config["train"] = {**config["train"], "ppo_epochs": 1, **sections.get("train", {})}
    return config


# --------------------------------------------------------------------------- refusals (no TRL needed)


@pytest.mark.parametrize(
    "section, value, field",
    [
        ("rollout", {"engine": "vllm"}, "rollout.engine"),
        ("kl", {"beta": 0.1, "ref_path": "builtin:tiny-arith"}, "kl.ref_path"),
        ("rollout", {"generation_batch_size": 4}, "rollout.generation_batch_size"),
        ("train", {"ppo_epochs": 2, "mini_batches": 2}, "train.ppo_epochs"),
    ],
)
def test_a_trl_run_config_refuses_what_trl_cannot_honour(tmp_path, section, value, field):
    config = trl_config(tmp_path)
    config[section] = {**config.get(section, {}), **value}
    with pytest.raises(ConfigError, match=rf"engine: trl cannot honour {field} = .*set engine: native"):
        parse_config(config)
    parse_config({**config, "engine": "native"})  # the native trainer runs it


def test_a_method_trl_cannot_run_is_refused_at_validation(tmp_path, monkeypatch):
    monkeypatch.setattr(SirenConfig, "refused_on", {"trl": "it needs what TRL does not give"})
    config = trl_config(tmp_path, entropy={"method": "siren"})
    with pytest.raises(
        ConfigError,
        match=r"engine: trl: entropy.method 'siren' cannot run on trl: it needs what TRL "
        r"does not give; set engine: native",
    ):
        parse_config(config)


def test_engine_defaults_to_native_and_names_the_accepted_engines(tmp_path):
    assert parse_config(tiny_run_config(tmp_path)).engine == "native"
    with pytest.raises(ConfigError, match=r"engine.*'native'.*'trl'"):
        parse_config(tiny_run_config(tmp_path, engine="verl"))


def test_a_trl_run_without_trl_installed_is_a_launch_problem(tmp_path, monkeypatch):
    config = parse_config(trl_config(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    assert any(field == "engine" and "pip install -e '.[trl]'" in problem for field, problem in launch_problems(config))


# --------------------------------------------------------------------------- on TRL


class StopAfter:
    """A reporter that records what it is told and says stop after the validation of step ``step``."""

    def __init__(self, step: int):
        self.step, self.validations, self.train_steps, self.summary = step, [], [], None

    def on_start(self, run_info):
        pass

    def on_train_step(self, step, metrics):
        self.train_steps.append((step, dict(metrics)))

    def on_validation(self, step, metrics, per_prompt=None):
        self.validations.append((step, dict(metrics), per_prompt))

    def stop_reason(self):
        return "pruned" if self.validations and self.validations[-1][0] >= self.step else None

    def on_end(self, summary):
        self.summary = summary


@pytest.mark.slow
@pytest.mark.usefixtures("needs_trl")
def test_a_trl_run_stops_when_a_reporter_says_stop(tmp_path):
    from trainers.grpo import train

    config = parse_config(
        trl_config(
            tmp_path / "run",
            entropy={"method": "siren"},
            train={"steps": 4, "eval_every": 1, "mini_batches": 2},
            eval={"num_prompts": 4, "n_samples": 2, "k": [1, 2]},
        )
    )
    reporter = StopAfter(1)
    summary = train(config, [reporter])
    assert summary["status"] == "stopped" and summary["stop_reason"] == "pruned" and summary["step"] == 1
    assert reporter.summary == summary
    assert [step for step, _, _ in reporter.validations] == [0, 1]  # step 0 (eval_at_start), then step 1: stop
    assert [step for step, _ in reporter.train_steps] == [1]
    declared = logged_metrics(config)  # what the sweeper checks a study's metric names against
    assert set(reporter.train_steps[0][1]) >= declared.train
    assert declared.validation <= set(reporter.validations[1][1]) <= declared.validation | declared.validation_sometimes
    per_prompt = reporter.validations[1][2]
    assert per_prompt["step"] == 1 and per_prompt["prompt_digest"] and len(per_prompt["per_prompt"]["pass@2"]) == 4
    assert len(read_per_prompt(tmp_path / "run" / "per_prompt.jsonl")) == 2  # the trainer's own files, as native


@pytest.mark.slow
@pytest.mark.usefixtures("needs_trl")
def test_a_preempted_trl_run_saves_a_checkpoint_and_resumes_from_it(tmp_path):
    from trainers.grpo import train

    config = parse_config(
        trl_config(
            tmp_path / "run",
            train={"steps": 2, "eval_every": 1},
            eval={"num_prompts": 4, "n_samples": 2, "k": [1, 2]},
            optim={"lr": 1e-4, "warmup_steps": 2},
        )
    )
    preempted = StopAfter(1)
    preempted.stop_reason = lambda: "preempted" if preempted.train_steps else None
    assert train(config, [preempted])["stop_reason"] == "preempted"
    assert (tmp_path / "run" / "checkpoint-2").is_dir()  # rollout step 1 = 2 optimizer steps (2 mini-batches)
    resumed = StopAfter(99)
    summary = train(config, [resumed])
    assert summary["status"] == "completed" and summary["step"] == 2
    assert [step for step, _ in resumed.train_steps] == [2] and [step for step, _, _ in resumed.validations] == [2]
    # the native schedule, once per rollout step (2 optimizer steps each here), resumed: warmup (s + 1) / 2 x lr
    assert preempted.train_steps[0][1]["train/lr"] == pytest.approx(5e-5)
    assert resumed.train_steps[0][1]["train/lr"] == pytest.approx(1e-4)
    assert [r["step"] for r in read_per_prompt(tmp_path / "run" / "per_prompt.jsonl")] == [0, 1, 2]


@pytest.mark.slow
@pytest.mark.usefixtures("needs_trl")
def test_a_two_trial_study_on_trl_end_to_end(tmp_path):
    from mlflow.tracking import MlflowClient

    from sweeper.run.driver import run_study
    from sweeper.study.spec import load_spec
    from sweeper.tracking.names import TAG_PARENT, TAG_TRIAL_NUMBER, find_study_run

    spec = {
        "study": {"name": "on-trl"},
        "objective": {"metric": "val/pass@4"},
        "base": trl_config(tmp_path / "unused", entropy={"method": "siren"}, train={"steps": 2, "eval_every": 1}),
        "space": {"params": {"entropy.siren.coef": {"type": "float", "low": 0.1, "high": 0.5}}},
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "budget": {"n_trials": 2},
        "executor": {"type": "local", "resources": {"cpus_per_trial": 1, "timeout_min": 10}},
        "tracking": {"enabled": True},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    report = run_study(path, progress=False, log=lambda m: None)
    trials = trials_of(path)
    assert report.counts == {"COMPLETE": 2}, [t.user_attrs.get("stderr_tail") for t in trials]
    loaded = load_spec(path)
    client = MlflowClient(tracking_uri=loaded.tracking.uri)
    experiment = client.get_experiment_by_name(loaded.tracking.experiment)
    parent = find_study_run(client, experiment.experiment_id, loaded.study.name)
    runs = {
        int(r.data.tags[TAG_TRIAL_NUMBER]): r
        for r in client.search_runs([experiment.experiment_id], f"tags.`{TAG_PARENT}` = '{parent.info.run_id}'")
    }
    for trial in trials:
        assert sorted(trial.intermediate_values) == [1, 2] and trial.value == trial.intermediate_values[2]
        run_id = runs[trial.number].info.run_id
        history = {m.step: m.value for m in client.get_metric_history(run_id, "val/pass_at_4")}
        assert sorted(history) == [0, 1, 2] and history[2] == pytest.approx(trial.value)
        for key in ("train/entropy", "siren/selected_fraction"):
            assert sorted(m.step for m in client.get_metric_history(run_id, key)) == [1, 2], key
        records = read_per_prompt(Path(trial.user_attrs["trial_dir"]) / "run" / "per_prompt.jsonl")
        assert [r["step"] for r in records] == [0, 1, 2] and len({r["prompt_digest"] for r in records}) == 1
        assert yaml.safe_load((Path(trial.user_attrs["trial_dir"]) / "config.yaml").read_text())["engine"] == "trl"


def test_a_study_giving_a_trl_trial_several_processes_cannot_launch(tmp_path):
    from sweeper.run.checks import launch_problems as study_launch_problems
    from sweeper.study.spec import load_spec

    spec = {
        "study": {"name": "trl-dp"},
        "objective": {"metric": "val/pass@4"},
        "base": trl_config(tmp_path / "unused"),
        "space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.3}}},
        "budget": {"n_trials": 1},
        "executor": {"type": "slurm", "tasks_per_node": 2},
        "tracking": {"enabled": False},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    problems = study_launch_problems(load_spec(path))
    assert any(p.startswith("executor: 2 processes per trial") and "engine: trl" in p for p in problems), problems
