"""`sweeper verify --prompts` with the real trainer on the shipped tiny model: the two arms run fresh seeds on N
held-out validation prompts after the study's (another prompt digest than the study's), validate once at the last
step, and the answer gives the gain over seeds on these prompts and over new prompts and seeds, and whether the
selection survives."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from conftest import tiny_run_config
from sweeper.results.verify import verify
from sweeper.run.driver import run_study
from sweeper.run.storage import make_storage
from sweeper.study.spec import load_spec
from trainers.reporting import read_per_prompt


@pytest.mark.slow
def test_verify_runs_fresh_seeds_on_heldout_prompts_with_the_real_trainer(tmp_path):
    base = tiny_run_config(tmp_path / "unused", train={"steps": 1, "eval_every": 1, "mini_batches": 1, "ppo_epochs": 1,
                                                       "checkpoint_every": 0, "output_dir": str(tmp_path / "unused")})
    spec = {
        "study": {"name": "held"},
        "objective": {"metric": "val/pass@4"},
        "base": base,
        "space": {"params": {"clip.eps_high": [0.28, 0.2]}},
        "enqueue": [{"clip.eps_high": 0.2}, {"clip.eps_high": 0.28}],   # the first is the baseline
        "pruner": {"type": "none"},
        "budget": {"n_trials": 2, "max_parallel": 1},
        "executor": {"type": "local", "resources": {"cpus_per_trial": 1, "timeout_min": 10}},
        "tracking": {"enabled": False},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run_study(path, progress=False, log=lambda m: None)
    loaded = load_spec(path)
    study = optuna.load_study(study_name="held", storage=make_storage(loaded.study.storage))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"], study.trials[-1].user_attrs.get("stderr_tail")
    selection = {read_per_prompt(Path(t.user_attrs["trial_dir"]) / "run" / "per_prompt.jsonl")[0]["prompt_digest"]
                 for t in study.trials}

    result = verify(loaded, 3, trial=1, prompts=12, progress=False, log=lambda m: None)   # the study selected on 8
    assert result.seeds == [1, 2, 3] and result.gain is not None and result.gain.unit == "seeds"
    assert result.gain.pool.df == 2 and result.gain.pool.paired           # 1 config x (3 common seeds - 1)
    assert result.prompt_gain is not None and (result.prompt_gain.seeds, result.prompt_gain.prompts) == (3, 12)
    arms = optuna.load_study(study_name=result.study_name, storage=make_storage(loaded.study.storage)).trials
    assert result.study_name.endswith("-s3-p12")
    heldout = set()
    for arm in arms:
        config = arm.user_attrs["config"]
        assert arm.state.name == "COMPLETE" and config["eval"]["split"] == "heldout"
        assert (config["eval"]["heldout_offset"], config["eval"]["num_prompts"]) == (8, 12)    # val[8:20]
        for folder in ("run", "run-seed2", "run-seed3"):
            records = read_per_prompt(Path(arm.user_attrs["trial_dir"]) / folder / "per_prompt.jsonl")
            assert [r["step"] for r in records] == [1] and len(records[0]["correct"]) == 12   # the last step only
            heldout |= {r["prompt_digest"] for r in records}
    assert len(heldout) == 1 and not heldout & selection                 # one held-out set, not the selection one
    text = "\n".join(result.lines("val/pass@4"))
    assert "gain on these 12 held-out prompts, over new seeds" in text and "over new prompts and new seeds" in text
    assert "the selection" in text and ("survives" in text or "NOT survive" in text)
