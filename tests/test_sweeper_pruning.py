"""Entropy-health rules (pure functions of metric histories) and the Optuna pruners built from the spec."""

from __future__ import annotations

import math

import optuna
import pytest

from sweeper.study.pruning import EntropyCollapse, EntropyExplosion, NonFinite, build_pruner, first_verdict, health_rules
from sweeper.study.pruning import HealthSpec
from sweeper.study.spec import load_spec


def test_collapse_needs_patience_consecutive_reports_below_fraction_of_first():
    rule = EntropyCollapse(fraction=0.5, patience=2, metrics=["train/entropy"])
    assert rule.check({}) is None
    assert rule.check({"train/entropy": [1.0]}) is None
    assert rule.check({"train/entropy": [1.0, 0.4]}) is None                 # one report below 0.5
    assert rule.check({"train/entropy": [1.0, 0.4, 0.6, 0.45]}) is None      # not consecutive
    verdict = rule.check({"train/entropy": [1.0, 0.4, 0.6, 0.45, 0.3]})
    assert verdict.reason == "entropy_collapse"
    assert "train/entropy" in verdict.message and "0.45, 0.3" in verdict.message
    assert rule.check({"train/entropy": [1.0, 0.5, 0.5]}) is None            # strictly below
    assert rule.check({"val/entropy": [1.0, 0.1, 0.1]}) is None              # not a watched metric


def test_collapse_watches_several_metrics_and_skips_non_finite_and_zero_first_values():
    rule = EntropyCollapse(fraction=0.3, patience=1, metrics=["train/entropy", "val/entropy"])
    assert rule.check({"train/entropy": [1.0, 0.9], "val/entropy": [2.0, 0.5]}).message.startswith("val/entropy")
    assert rule.check({"train/entropy": [math.nan, 1.0, 0.5]}) is None       # first finite value is 1.0
    assert rule.check({"train/entropy": [math.nan, 1.0, 0.2]}).reason == "entropy_collapse"
    assert rule.check({"train/entropy": [0.0, 0.0]}) is None


def test_explosion_above_multiple_of_first():
    rule = EntropyExplosion(multiple=3.0, patience=2, metrics=["val/entropy"])
    assert rule.check({"val/entropy": [1.0, 3.5]}) is None
    assert rule.check({"val/entropy": [1.0, 3.5, 2.0, 3.1]}) is None
    assert rule.check({"val/entropy": [1.0, 3.0, 3.0]}) is None              # strictly above
    assert rule.check({"val/entropy": [1.0, 3.5, 4.0]}).reason == "entropy_explosion"


def test_non_finite_looks_at_the_latest_value_of_every_metric():
    rule = NonFinite()
    assert rule.check({"train/loss": [1.0, 0.5], "train/entropy": [1.0]}) is None
    assert rule.check({"train/loss": [1.0, math.nan]}).reason == "nan"
    assert rule.check({"val/pass@8": [0.1, math.inf]}).reason == "nan"
    assert rule.check({"train/loss": [math.nan, 1.0]}) is None               # recovered: latest is finite
    assert NonFinite(["train/loss"]).check({"train/other": [math.nan]}) is None


def test_rule_arguments_are_checked():
    with pytest.raises(ValueError, match="fraction"):
        EntropyCollapse(fraction=1.2)
    with pytest.raises(ValueError, match="multiple"):
        EntropyExplosion(multiple=0.9)
    with pytest.raises(ValueError, match="patience"):
        EntropyCollapse(patience=0)


def test_rules_from_spec_and_order():
    health = HealthSpec(collapse={"fraction": 0.5, "patience": 1}, explosion={"multiple": 2.0, "patience": 1}, nan=True)
    rules = health_rules(health)
    assert [r.reason for r in rules] == ["nan", "entropy_collapse", "entropy_explosion"]
    history = {"train/entropy": [1.0, 0.1], "train/loss": [math.nan]}
    assert first_verdict(rules, history).reason == "nan"                     # NaN explains the rest: reported first
    assert health_rules(HealthSpec(nan=False)) == []


@pytest.mark.parametrize("pruner,cls", [
    ({"type": "none"}, optuna.pruners.NopPruner),
    ({"type": "median", "n_startup_trials": 2, "n_warmup_steps": 4}, optuna.pruners.MedianPruner),
    ({"type": "successive_halving", "reduction_factor": 3}, optuna.pruners.SuccessiveHalvingPruner),
    ({"type": "hyperband", "min_resource": 2}, optuna.pruners.HyperbandPruner),
    ({"type": "wilcoxon", "p_threshold": 0.05}, optuna.pruners.WilcoxonPruner),
])
def test_pruner_from_spec(tmp_path, pruner, cls):
    spec = load_spec({"study": {"name": "p"}, "objective": {"metric": "val/pass@8"}, "budget": {"n_trials": 1},
                      "base": {"train": {"steps": 40}}, "pruner": pruner}, base_dir=tmp_path)
    built = build_pruner(spec.pruner, spec.trial_steps())
    assert isinstance(built, cls)
    if pruner["type"] == "median":
        assert built._n_startup_trials == 2 and built._n_warmup_steps == 4
    if pruner["type"] == "hyperband":
        assert built._max_resource == 40   # defaults to the trial's steps, not "auto"
