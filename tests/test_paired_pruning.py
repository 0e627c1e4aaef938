"""The paired pruner on studies whose truth is known (tests/noisy_trainer.py): identical configs are rarely
pruned, a known-worse config is, and the trial's value carries its standard error over prompts (and over
seeds with budget.seeds)."""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from sweeper.contract import ATTR_OBJECTIVE_SE, ATTR_PROMPTS, ATTR_REPLICATES, ATTR_SEEDS, per_prompt_attr
from sweeper.run.driver import run_study
from sweeper.results.export import export_best
from sweeper.study.spec import SpecError, load_spec
from sweeper.statistics import mean_and_se
from sweeper.run.storage import make_storage
from _studies import quiet, trials_of

REPO = Path(__file__).resolve().parents[1]
NOISY = f"{REPO / 'tests' / 'noisy_trainer.py'}:train"

pytestmark = pytest.mark.slow


def study(tmp_path: Path, name: str, **sections) -> Path:
    spec = {
        "study": {"name": name},
        "objective": {"metric": "val/pass@8", "aggregation": "last"},
        "base": {"train": {"steps": 40, "eval_every": 10}, "eval": {"num_prompts": 64, "n_samples": 16, "k": [1, 8]}},
        "space": {"params": {"clip.eps_high": 0.28}},
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "paired", "p_threshold": 0.05, "run_sd": 0.02},
        "budget": {"n_trials": 2, "max_parallel": 2},
        "executor": {"type": "local", "entrypoint": NOISY},
        "tracking": {"enabled": False},
    }
    spec.update(sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.extended  # a rate over real trials: benchmarks/pruning_quality.py simulate and test_decisions measure the calibration
def test_identical_configs_are_pruned_at_most_at_the_expected_rate(tmp_path):
    # 16 runs of one config with different training seeds (seed noise per prompt, no global shift; run_sd 0.02
    # stands for the run-to-run spread). Each trial is judged at 4 validations at 0.05 / 4 (Bonferroni): a trial is pruned with
    # probability <= ~0.05, so 16 trials give more than 3 prunes with probability < 0.02 (binomial).
    path = study(tmp_path, "same", space={"params": {"clip.eps_high": 0.28, "seed": {"type": "int", "low": 0, "high": 10**6}}},
                 budget={"n_trials": 16, "max_parallel": 2})
    run_study(path, progress=False, log=quiet)
    trials = trials_of(path)
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert len(trials) == 16 and len(pruned) <= 3, [(t.number, t.user_attrs.get("prune_message")) for t in pruned]


def test_a_known_worse_config_is_pruned_against_the_incumbent(tmp_path):
    path = study(tmp_path, "worse", space={"params": {"clip.eps_high": [0.28, 0.4]}},
                 enqueue=[{"clip.eps_high": 0.28}, {"clip.eps_high": 0.4}], budget={"n_trials": 2, "max_parallel": 1})
    run_study(path, progress=False, log=quiet)
    good, worse = trials_of(path)
    assert good.state.name == "COMPLETE" and worse.state.name == "PRUNED"
    assert worse.user_attrs["prune_reason"] == "pass@k"
    message = worse.user_attrs["prune_message"]
    assert "worse at p = " in message and "run sd 0.02" in message and "vs trial 0 (the incumbent) over 64 prompts" in message
    step = worse.user_attrs["pruned_at_step"]
    assert step < 40 and len(worse.user_attrs[per_prompt_attr(step)]) == 64


@pytest.mark.extended  # test_futility_racing replays a raced study the same way
def test_a_replay_of_a_full_study_prunes_what_the_live_pruner_pruned(tmp_path):
    """benchmarks/pruning_quality.py replay: the recorded validations of an unpruned study, replayed through
    the paired pruner, stop the same trials at the same steps as a live study with that pruner (one trial at a
    time, the same configs and seeds: a pruned run's validations are the full run's up to its stop)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from pruning_quality import replay

    configs = [{"clip.eps_high": eps, "seed": seed} for eps, seed in [(0.28, 1), (0.4, 2), (0.3, 3), (0.36, 4), (0.28, 5)]]
    space = {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.5}, "seed": {"type": "int", "low": 0, "high": 10}}}
    paired = {"type": "paired", "p_threshold": 0.05, "run_sd": 0.02}
    budget = {"n_trials": len(configs), "max_parallel": 1}
    full = study(tmp_path, "full", space=space, enqueue=configs, budget=budget, pruner={"type": "none"})
    live = study(tmp_path, "live", space=space, enqueue=configs, budget=budget, pruner=paired)
    run_study(full, progress=False, log=quiet)
    run_study(live, progress=False, log=quiet)
    [replayed] = replay(full, {"paired": paired})
    live_stops = {t.number: t.user_attrs["pruned_at_step"] for t in trials_of(live) if t.state.name == "PRUNED"}
    assert live_stops, "the study should prune something for the comparison to mean anything"
    assert replayed["pruned_at"] == live_stops
    full_steps = 40 * len(configs)
    assert replayed["trial_steps"] == full_steps - sum(40 - step for step in live_stops.values())


def test_the_value_carries_its_standard_error_over_prompts_and_over_seeds(tmp_path):
    one = study(tmp_path, "one", pruner={"type": "none"}, budget={"n_trials": 1, "max_parallel": 1})
    run_study(one, progress=False, log=quiet)
    (trial,) = trials_of(one)
    vector = trial.user_attrs[per_prompt_attr(40)]
    assert trial.value == pytest.approx(sum(vector) / 64, abs=1e-5)          # aggregation last: the step-40 values
    assert trial.user_attrs[ATTR_OBJECTIVE_SE] == [pytest.approx(mean_and_se(vector)[1])]
    assert trial.user_attrs[ATTR_PROMPTS] == 64 and trial.user_attrs[ATTR_SEEDS] == [0]

    three = study(tmp_path, "three", pruner={"type": "none"}, budget={"n_trials": 1, "max_parallel": 1, "seeds": 3},
                  base={"seed": 5, "train": {"steps": 40, "eval_every": 10}, "eval": {"num_prompts": 64, "n_samples": 16, "k": [1, 8]}})
    run_study(three, progress=False, log=quiet)
    (trial,) = trials_of(three)
    replicates = trial.user_attrs[ATTR_REPLICATES]
    assert trial.user_attrs[ATTR_SEEDS] == [5, 6, 7] and [r["seed"] for r in replicates] == [5, 6, 7]
    seed_values = [r["values"][0] for r in replicates]
    assert len(set(seed_values)) == 3                                         # three different runs
    mean, seed_se = mean_and_se(seed_values)
    assert trial.value == pytest.approx(mean)
    # R >= 2: over the seeds (the prompts' difficulty, shared by every config, cancels in comparisons), never
    # below the seed-by-prompt part: prompt p's variance over the seeds, averaged, / (R x P). This stand-in's
    # seeds shift no prompt, so that part is the larger here
    vectors = [r["per_prompt"] for r in replicates]
    residual = sum(statistics.variance([v[p] for v in vectors]) for p in range(64)) / 64
    assert trial.user_attrs[ATTR_OBJECTIVE_SE] == [pytest.approx(max(seed_se, math.sqrt(residual / (3 * 64))))]
    for r in replicates:
        assert r["values"][0] == pytest.approx(sum(r["per_prompt"]) / 64, abs=1e-5)


def test_export_gives_the_paired_gain_over_the_baseline_and_verify_reruns_both(tmp_path, capsys):
    from sweeper.cli import main

    # the baseline (clip.eps_high 0.4, worse) runs first and is not pruned; the 0.28 trial beats it
    path = study(tmp_path, "gain", space={"params": {"clip.eps_high": [0.28, 0.4]}},
                 objective={"metric": "val/pass@8", "aggregation": "last", "baseline": {"clip.eps_high": 0.4}},
                 enqueue=[{"clip.eps_high": 0.28}], budget={"n_trials": 2, "max_parallel": 1})
    run_study(path, progress=False, log=quiet)
    baseline, best = trials_of(path)
    assert baseline.params == {"clip.eps_high": 0.4} and baseline.user_attrs["baseline"] is True
    assert baseline.state.name == "COMPLETE"                                 # worse, but never pruned on its score
    assert main(["export", str(path), "-o", str(tmp_path / "best.yaml")]) == 0
    out = capsys.readouterr()
    assert f"wrote {tmp_path / 'best.yaml'} (trial {best.number})" in out.out
    assert f"gain over the baseline (trial {baseline.number}): +" in out.out
    assert "paired over 64 prompts of the common seed, one run each: training randomness not included; significant)" in out.out
    header = (tmp_path / "best.yaml").read_text()
    assert f"# baseline: trial {baseline.number} (clip.eps_high=0.4), val/pass@8 = " in header and " ± " in header
    assert "# gain over the baseline: +" in header and "sweeper verify" in header

    # the default baseline is the first enqueue entry; a near-copy of it does not beat it significantly: a warning
    close = study(tmp_path, "close", space={"params": {"clip.eps_high": [0.28, 0.29]}}, pruner={"type": "none"},
                  enqueue=[{"clip.eps_high": 0.28}, {"clip.eps_high": 0.29}], budget={"n_trials": 2, "max_parallel": 1})
    run_study(close, progress=False, log=quiet)
    first, second = trials_of(close)
    assert first.user_attrs["baseline"] is True and "baseline" not in second.user_attrs
    assert main(["export", str(close), "-o", str(tmp_path / "close-best.yaml"), "--trial", str(second.number)]) == 0
    out = capsys.readouterr()
    assert "NOT significant: the interval includes 0" in out.out and "warning: the gain is not significant" in out.err
    with pytest.warns(UserWarning, match="not significant"):
        export_best(close, tmp_path / "close-best2.yaml", trial=second.number)
    with pytest.raises(SpecError, match="would overwrite the study file"):
        export_best(close, close)

    assert main(["verify", str(path), "--seeds", "1", "--no-progress"]) != 0
    assert "--seeds: give 3 or more" in capsys.readouterr().err
    assert main(["verify", str(path), "--seeds", "3", "--trial", str(best.number), "--no-progress"]) == 0
    lines = capsys.readouterr().out
    assert f"trial {best.number} vs the baseline (trial {baseline.number})" in lines
    assert "(over 3 seeds, 64 prompts)" in lines and "paired over 3 common seeds" in lines and "2 df" in lines
    assert "gain on these 64 held-out prompts, over new seeds (seed-paired, the prompts held fixed): +" in lines
    assert "gain over new prompts and new seeds (decides): +" in lines and "the selection survives" in lines
    verification = [name for name in optuna.get_all_study_names(make_storage(load_spec(path).study.storage)) if "verify" in name]
    assert verification == [f"gain-verify-t{best.number}-vs-t{baseline.number}-s3"]
    arms = optuna.load_study(study_name=verification[0], storage=make_storage(load_spec(path).study.storage)).get_trials()
    assert sorted(t.params["arm"] for t in arms) == ["baseline", "chosen"] and all(t.state.name == "COMPLETE" for t in arms)
    assert arms[0].user_attrs[ATTR_SEEDS] == arms[1].user_attrs[ATTR_SEEDS] == [1, 2, 3]   # fresh: the study used seed 0
    assert all(t.user_attrs["config"]["eval"]["split"] == "heldout" for t in arms)      # prompts it did not select on
