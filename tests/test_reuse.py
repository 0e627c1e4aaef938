"""Identical configs reuse a complete trial's result (sweeper/run/reuse.py): real Optuna storage, real trial
processes of the stand-in trainer (tests/standin_trainer.py)."""

from __future__ import annotations

from pathlib import Path

from sweeper.contract import ATTR_SAME_CONFIG
from sweeper.results.status import study_status
from sweeper.run.driver import run_study
from sweeper.run.reuse import config_key
from sweeper.study.spec import load_spec
from test_sweeper_driver import quiet, study_file, trials_of


def test_config_key_ignores_the_trial_folders_and_float_noise():
    a = {"seed": 0, "clip": {"eps_high": 0.3}, "train": {"output_dir": "/x/00000/run", "steps": 4},
         "eval": {"step0_cache": "/x/step0_cache", "k": [1]}}
    b = {"seed": 0, "clip": {"eps_high": 0.1 + 0.2}, "train": {"output_dir": "/x/00007/run", "steps": 4},
         "eval": {"step0_cache": "/y", "k": [1]}}
    assert 0.1 + 0.2 != 0.3 and config_key(a) == config_key(b)
    assert config_key(a) != config_key({**a, "seed": 1})
    assert config_key(a) != config_key({**a, "clip": {"eps_high": 0.3001}})


def test_a_repeated_config_is_told_the_earlier_result_and_not_trained(tmp_path: Path):
    # two choices, five trials: the sampler must repeat itself; the enqueued 0.28 twice repeats for sure
    path = study_file(tmp_path, space={"params": {"clip.eps_high": [0.28, 0.4]}},
                      enqueue=[{"clip.eps_high": 0.28}, {"clip.eps_high": 0.28}],
                      budget={"n_trials": 5, "max_parallel": 1})
    report = run_study(path, progress=False, log=quiet)
    trials = trials_of(path)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    originals = [t for t in trials if ATTR_SAME_CONFIG not in t.user_attrs]
    copies = [t for t in trials if ATTR_SAME_CONFIG in t.user_attrs]
    assert len(originals) == len({t.params["clip.eps_high"] for t in trials}) and len(copies) == 5 - len(originals)
    assert trials[1].user_attrs[ATTR_SAME_CONFIG] == 0                   # the second enqueued 0.28
    by_number = {t.number: t for t in trials}
    for copy in copies:
        source = by_number[copy.user_attrs[ATTR_SAME_CONFIG]]
        assert copy.params == source.params and copy.value == source.value
        assert copy.user_attrs["replicates"] == source.user_attrs["replicates"]
        assert "trial_dir" not in copy.user_attrs                         # never launched
    assert report.launched == len(originals)
    spec = load_spec(path)
    folders = sorted(p.name for p in (spec.study_dir / "trials").iterdir())
    assert folders == [f"{t.number:05d}" for t in originals]
    assert "same config as #0" in study_status(spec)
    from sweeper.results.standing import contenders, study_standings
    from sweeper.run.storage import open_study

    standings, *_ = study_standings(spec, open_study(spec, create=False)[0], delta=1.0)
    assert sorted(contenders(standings)) == sorted(t.number for t in originals)   # each config once
