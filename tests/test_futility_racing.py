"""Futility racing end to end, through the real driver and trial processes (tests/noisy_trainer.py, whose
truth is known): the baseline runs all its seeds, a clearly worse config is stopped after its first seed
with the reason in the trial, a config as good as the baseline stays in the race, every seed's validation
curve is recorded, and budget.seeds accepts a range only with the futility pruner."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from sweeper.contract import Outcome, objective_estimate
from sweeper.run.driver import run_study
from sweeper.run.trial.outcome import with_uncertainty
from sweeper.run.storage import make_storage
from sweeper.study.futility import steps_used
from sweeper.study.spec import SpecError, load_spec

REPO = Path(__file__).resolve().parents[1]
NOISY = f"{REPO / 'tests' / 'noisy_trainer.py'}:train"


def study(tmp_path: Path, name: str, **sections) -> Path:
    spec = {
        "study": {"name": name},
        "objective": {"metric": "val/pass@8", "aggregation": "last"},
        "base": {"seed": 10, "train": {"steps": 20, "eval_every": 10},
                 "eval": {"num_prompts": 64, "n_samples": 16, "k": [1, 8]}},
        # optim.lr: the stand-in ignores it, so the third config trains like the first without being the same
        # config (an identical one would reuse the first's result: sweeper.run.reuse)
        "space": {"params": {"clip.eps_high": [0.28, 0.45], "optim.lr": [1.0e-5, 2.0e-5]}},
        "enqueue": [{"clip.eps_high": 0.28, "optim.lr": 1.0e-5}, {"clip.eps_high": 0.45, "optim.lr": 1.0e-5},
                    {"clip.eps_high": 0.28, "optim.lr": 2.0e-5}],
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "futility", "delta": 0.03, "alpha": 0.1, "sd": 0.02},
        "budget": {"n_trials": 3, "max_parallel": 1, "seeds": "1-3"},
        "executor": {"type": "local", "entrypoint": NOISY},
        "tracking": {"enabled": False},
    }
    spec.update(sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_worse_config_leaves_the_race_after_its_first_seed(tmp_path):
    path = study(tmp_path, "race")
    run_study(path, progress=False, log=lambda _m: None)
    spec = load_spec(path)
    assert (spec.budget.seeds_min, spec.budget.seeds) == (1, 3)
    baseline, worse, same = optuna.load_study(study_name="race", storage=make_storage(spec.study.storage)).get_trials()
    assert baseline.state.name == "COMPLETE" and baseline.user_attrs["seeds"] == [10, 11, 12]
    assert worse.state.name == "PRUNED" and worse.user_attrs["prune_reason"] == "futility"
    assert worse.user_attrs["prune_message"].startswith("stopped after seed 1: gain <= ")
    assert "< delta 0.03 vs trial 0 over 1 common seed" in worse.user_attrs["prune_message"]
    assert worse.user_attrs["seeds"] == [10] and list(worse.user_attrs["seed_values"]) == ["10"]
    # its value (Optuna's and status's) is the mean over the seeds it finished, said in its message
    assert worse.value == pytest.approx(worse.user_attrs["seed_values"]["10"])
    assert objective_estimate(worse).value == pytest.approx(worse.value) and objective_estimate(worse).seeds == 1
    assert worse.user_attrs["prune_message"].endswith("(value: the mean over the 1 seed it finished)")
    # the same config as the baseline is not futile: it runs all three seeds, the same seeds (common seeds)
    assert same.state.name == "COMPLETE" and same.user_attrs["seeds"] == [10, 11, 12]
    # every seed's curve is recorded, not only the first seed's
    assert set(k for k in baseline.user_attrs if k.startswith("seed_curve/")) == {"seed_curve/10", "seed_curve/11", "seed_curve/12"}
    assert baseline.user_attrs["seed_curve/11"].keys() == {"10", "20"}
    spent = sum(steps_used(t.user_attrs) for t in (baseline, worse, same))
    assert spent == 20 * (3 + 1 + 3)          # of 20 x 9 with no race


def test_a_config_stopped_in_its_third_seed_is_valued_by_the_two_it_finished():
    # stopped at a validation of seed 12 (its partial value 0.50 there); seeds 10, 11 finished at 0.60, 0.70:
    # value 0.65, SE over the 2 seeds sqrt(0.005 / 2) = 0.05
    finished = [{"seed": 10, "values": [0.60], "per_prompt": None}, {"seed": 11, "values": [0.70], "per_prompt": None}]
    stop = Outcome("PRUNED", partial_values=[0.50], prune_reason="futility", message="stopped at step 10 of seed 12: ...")
    outcome = with_uncertainty(stop, finished)
    assert outcome.partial_values == [pytest.approx(0.65)] and outcome.values_se == [pytest.approx(0.05)]
    assert outcome.seed_mean() == [pytest.approx(0.65)]
    assert outcome.message.endswith("(value: the mean over the 2 seeds it finished)")
    # a trial stopped in its first seed finished none: Optuna's own value (its last report) stands
    assert with_uncertainty(Outcome("PRUNED", partial_values=[0.5]), []).seed_mean() is None
    # status reads the same mean from the replicates
    frozen = optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, value=0.65, intermediate_values={10: 0.5},
                                       user_attrs={**outcome.user_attrs()})
    estimate = objective_estimate(frozen)
    assert (estimate.value, estimate.seeds) == (pytest.approx(0.65), 2) and estimate.se == pytest.approx(0.05)


def test_the_trial_steps_budget_stops_launching(tmp_path):
    path = study(tmp_path, "steps", budget={"trial_steps": 60, "max_parallel": 1, "seeds": "1-3"})
    run_study(path, progress=False, log=lambda _m: None)
    spec = load_spec(path)
    trials = [t for t in optuna.load_study(study_name="steps", storage=make_storage(spec.study.storage)).get_trials()
              if t.state.name != "WAITING"]                                  # the other enqueued configs never ran
    assert len(trials) == 1 and steps_used(trials[0].user_attrs) == 60     # the baseline's 3 x 20 steps spend it


@pytest.mark.parametrize("seeds, message", [
    ("3-1", "is not a range of seeds"),
    ({"min": 1}, "is not a range"),
    ("1-3", "needs pruner.type: futility"),
    (3, "futility looks after each seed of a race or at validations"),
])
def test_a_seed_range_is_checked(tmp_path, seeds, message):
    pruner = {"type": "futility", "delta": 0.03} if seeds == 3 else {"type": "median"}
    path = study(tmp_path, "bad", pruner=pruner, budget={"n_trials": 2, "seeds": seeds})
    with pytest.raises(SpecError, match=message):
        load_spec(path)


def test_a_replay_of_a_full_study_races_as_the_live_study_did(tmp_path):
    """benchmarks/pruning_quality.py replay with the futility pruner: a finished study with every seed run (no
    pruner) replayed as a race stops the same configs after the same seeds as the live race above (one trial at
    a time, max_parallel 1, the same seeds)."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from pruning_quality import replay

    futility = {"type": "futility", "delta": 0.03, "alpha": 0.1, "sd": 0.02}
    full = study(tmp_path, "full", pruner={"type": "none"}, budget={"n_trials": 3, "max_parallel": 1, "seeds": 3})
    live = study(tmp_path, "live")
    run_study(full, progress=False, log=lambda _m: None)
    run_study(live, progress=False, log=lambda _m: None)
    [replayed] = replay(full, {"futility": futility}, seeds_min=1)
    spec = load_spec(live)
    live_trials = optuna.load_study(study_name="live", storage=make_storage(spec.study.storage)).get_trials()
    live_stops = {t.number: f"after seed {len(t.user_attrs['seeds'])}" for t in live_trials if t.state.name == "PRUNED"}
    assert live_stops == {1: "after seed 1"} and replayed["pruned_at"] == live_stops
    assert replayed["trial_steps"] == 20 * (3 + 1 + 3) and replayed["full_trial_steps"] == 20 * 9
    # the raced study itself replays too (its stopped trial holds only seed 10): its own rule stops the same
    # trial after the same seed; a pruner that would keep it has no later seeds to replay, and says so
    own, keeps = replay(live, {"own": None, "keeps": {"type": "none"}})
    assert own["pruned_at"] == live_stops and own["data_ends"] == [] and own["trial_steps"] == 20 * 7
    assert keeps["data_ends"] == [1] and keeps["complete"] == 2 and own["full_trial_steps"] == 20 * 9
