"""The declaration of what the trainer logs (trainers/logged_metrics.py, torch-free, read by the sweeper's
checks) against what a real short run of the trainer logs, for every entropy method: the two cannot drift."""

from __future__ import annotations

import pytest

from trainers.config import EntropyMethodName, logged_metrics, parse_config
from trainers.grpo import train
from trainers.config import METHOD_SECTIONS, RunConfig
from trainers.reporting import Reporter

METHODS = list(EntropyMethodName.__args__)
ONE_STEP = {"steps": 1, "eval_every": 1, "eval_at_start": False, "mini_batches": 2, "ppo_epochs": 1, "checkpoint_every": 0}


class Names(Reporter):
    def __init__(self):
        self.train: list[set[str]] = []
        self.validation: list[set[str]] = []

    def on_train_step(self, step, metrics):
        self.train.append(set(metrics))

    def on_validation(self, step, metrics, per_prompt=None):
        self.validation.append(set(metrics))


def check_against_a_real_run(config_data):
    config = parse_config(config_data)
    seen = Names()
    assert train(config, [seen])["status"] == "completed"
    declared = logged_metrics(config)
    assert len(seen.train) == config.train.steps and seen.validation
    for names in seen.train:
        assert declared.train <= names, f"declared but not logged: {sorted(declared.train - names)}"
        assert names <= declared.train | declared.train_sometimes, f"logged but not declared: {sorted(names - declared.train - declared.train_sometimes)}"
    for names in seen.validation:
        assert declared.validation <= names, f"declared but not logged: {sorted(declared.validation - names)}"
        assert names <= declared.validation | declared.validation_sometimes, f"logged but not declared: {sorted(names - declared.validation)}"
    return declared, seen


def test_every_registered_method_declares_its_metrics_on_its_config_section():
    assert set(METHOD_SECTIONS) == set(METHODS)
    sections = RunConfig().entropy
    for method in METHODS:
        if method != "none":
            always, _ = getattr(sections, METHOD_SECTIONS[method][0]).logged_metrics()
            assert always, f"{method}: its config section declares no metrics"


@pytest.mark.parametrize("method", METHODS)
def test_declared_metrics_are_what_the_trainer_logs(method, make_run_config):
    data = make_run_config(entropy={"method": method}, train=ONE_STEP)
    data["train"]["output_dir"] += f"-{method}"
    declared, seen = check_against_a_real_run(data)
    own = {name for name in set().union(*seen.train) if name.startswith(f"{method}/")}
    assert bool(own) == (method != "none")   # each method logs its own metrics under its name


def test_config_dependent_metrics(make_run_config):
    """kl_ref with a KL penalty, STEER's per-step range when it normalizes over the batch, and no bonus
    metrics (nor extra loss) at a zero bonus coefficient."""
    data = make_run_config(entropy={"method": "steer", "steer": {"normalize_over": "batch"}}, kl={"beta": 0.01},
                           train=ONE_STEP)
    declared, _ = check_against_a_real_run(data)
    assert {"train/kl_ref", "steer/omega_abs_max_step"} <= declared.train
    data = make_run_config(entropy={"method": "entropy_bonus", "bonus": {"coef": 0.0}},
                           train=ONE_STEP)
    data["train"]["output_dir"] += "-bonus0"
    declared, _ = check_against_a_real_run(data)
    assert not {n for n in declared.possible if n.startswith("entropy_bonus/")} and "train/extra_loss" not in declared.possible
