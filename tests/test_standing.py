"""What the user sees of a study's decisions (sweeper/results/standing.py, status, export): gains over the best
and the baseline paired by seed with their SE, the race, and why a trial stopped. Real Optuna storage, real
trial processes of tests/noisy_trainer.py (whose truth is known: clip.eps_high 0.28 best, 0.29 close, 0.4 far
worse)."""

from __future__ import annotations

import pytest

from sweeper.cli import main
from sweeper.results.export import export_trial
from sweeper.results.standing import contenders, stop_text, study_standings
from sweeper.run.driver import run_study
from sweeper.run.storage import open_study
from sweeper.study.spec import load_spec
from test_paired_pruning import quiet, study, trials_of

pytestmark = pytest.mark.slow


def test_gains_race_and_contenders_of_a_replicated_study(tmp_path, capsys):
    path = study(tmp_path, "race", space={"params": {"clip.eps_high": [0.28, 0.29, 0.4]}}, pruner={"type": "none"},
                 objective={"metric": "val/pass@8", "aggregation": "last", "baseline": {"clip.eps_high": 0.4}},
                 enqueue=[{"clip.eps_high": 0.28}, {"clip.eps_high": 0.29}],
                 budget={"n_trials": 3, "max_parallel": 2, "seeds": 2})
    run_study(path, progress=False, log=quiet)
    spec = load_spec(path)
    by_eps = {t.params["clip.eps_high"]: t for t in trials_of(path)}
    best, close, far = by_eps[0.28], by_eps[0.29], by_eps[0.4]
    study_obj, _ = open_study(spec, create=False)
    standings, chosen, baseline, pool = study_standings(spec, study_obj, delta=0.03)
    assert chosen.number == best.number and baseline.number == far.number
    # the sd of a paired difference against the best: 2 other configs x (2 common seeds - 1)
    assert (pool.df, pool.configs, pool.paired) == (2, 2, True)
    # the gain over the best pairs seed s with seed s
    seeds = far.user_attrs["seeds"]
    by_seed = {t.number: {r["seed"]: r["values"][0] for r in t.user_attrs["replicates"]} for t in (best, far)}
    expected = sum(by_seed[far.number][s] - by_seed[best.number][s] for s in seeds) / len(seeds)
    assert standings[far.number].over_best.difference.mean == pytest.approx(expected)
    assert standings[best.number].race == "best" and standings[close.number].race == "in the race"
    assert standings[far.number].race == "ruled out" and "< -delta 0.03" in standings[far.number].why
    assert contenders(standings) == [best.number, close.number]

    assert main(["status", str(path), "--delta", "0.03"]) == 0
    out = capsys.readouterr().out
    assert "vs best ± SE" in out and "vs baseline ± SE" in out and "ruled out" in out and "in the race" in out
    assert "sd of a paired difference" in out and "pooled over 2 configs vs the reference, 2 df" in out
    assert main(["status", str(path), "--delta", "-1"]) == 2
    assert "--delta must be >= 0" in capsys.readouterr().err

    exported = export_trial(path, tmp_path / "best.yaml", delta=0.03)
    header = (tmp_path / "best.yaml").read_text()
    assert "paired over 2 common seeds; sd of a paired difference" in header and "selection-biased" in header
    assert f"configs not ruled out within delta 0.03 of the best (trial {best.number}" in header
    assert exported.contenders[0].endswith(f"#{best.number}, #{close.number}")


def test_why_a_trial_stopped_prefers_the_pruners_own_reason():
    import optuna

    pruned = optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                       user_attrs={"prune_reason": "pass@k", "pruned_at_step": 20})
    assert stop_text(pruned) == "pass@k at step 20"
    pruned.set_user_attr("stop_reason", "stopped after seed 1: gain <= +0.012 (90% UCB) < delta 0.03")
    assert stop_text(pruned) == "stopped after seed 1: gain <= +0.012 (90% UCB) < delta 0.03"
