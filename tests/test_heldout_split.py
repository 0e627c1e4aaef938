"""eval.split: the held-out validation prompts `sweeper verify` confirms a selection on (trainers/data.py
validation_prompts), disjoint from the selection prompts a study chose on."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainers.config import parse_config
from trainers.data import load_problems, validation_prompts
from trainers.grpo import train
from trainers.reporting import read_per_prompt


def test_heldout_prompts_follow_the_selection_prompts_and_do_not_overlap(make_run_config):
    config = parse_config(make_run_config(eval={"num_prompts": 8, "n_samples": 4, "k": [1, 4]}))
    _, val = load_problems(config.data)
    selection = validation_prompts(val, config.eval)
    heldout = validation_prompts(val, config.eval.model_copy(update={"split": "heldout"}))
    assert selection == val[:8] and heldout == val[8:16]
    assert not {p.prompt for p in selection} & {p.prompt for p in heldout}


def test_a_heldout_split_too_small_is_refused_naming_the_fields(make_run_config):
    config = parse_config(make_run_config(eval={"num_prompts": 40, "n_samples": 4, "k": [1, 4], "split": "heldout"},
                                          data={"synthetic": {"val_size": 64}}))
    _, val = load_problems(config.data)
    with pytest.raises(ValueError, match=r"data.synthetic.val_size.*at least 80"):
        validation_prompts(val, config.eval)


def test_split_is_checked_by_the_schema(make_run_config):
    with pytest.raises(ValueError, match="split"):
        parse_config(make_run_config(eval={"split": "test"}))


def test_a_run_on_the_heldout_split_validates_other_prompts(tmp_path: Path, make_run_config):
    digests = {}
    for split in ("selection", "heldout"):
        config = parse_config(make_run_config(train={"steps": 1, "eval_every": 1, "output_dir": str(tmp_path / split)},
                                              eval={"num_prompts": 8, "n_samples": 4, "k": [1, 4], "split": split}))
        train(config)
        records = read_per_prompt(Path(config.train.output_dir) / "per_prompt.jsonl")
        digests[split] = {r["prompt_digest"] for r in records}
        assert len(digests[split]) == 1 and len(records[0]["correct"]) == 8
    assert digests["selection"] != digests["heldout"]


def test_a_larger_synthetic_draw_keeps_the_selection_prompts_first():
    """verify draws a synthetic validation set larger when 2 x eval.num_prompts do not fit: its first problems
    (the study's selection prompts) stay the same, so the held-out ones are still disjoint from them."""
    from sweeper.results.verify import _make_room_for_heldout

    small = parse_config({"data": {"synthetic": {"val_size": 64}}, "eval": {"num_prompts": 64}})
    config = small.model_dump(mode="json")
    config["eval"]["split"] = "heldout"
    _make_room_for_heldout(config)
    assert config["data"]["synthetic"]["val_size"] == 128
    large = parse_config(config)
    _, val_small = load_problems(small.data)
    _, val_large = load_problems(large.data)
    assert val_large[:64] == val_small
    assert validation_prompts(val_large, large.eval) == val_large[64:128]


# ------------------------------------------------------------------- eval.heldout_offset, sweeper verify --prompts


def test_heldout_offset_puts_more_heldout_prompts_after_the_selection_ones(make_run_config):
    config = parse_config(make_run_config(eval={"num_prompts": 24, "n_samples": 4, "k": [1, 4], "split": "heldout",
                                                "heldout_offset": 8}, data={"synthetic": {"val_size": 32}}))
    _, val = load_problems(config.data)
    heldout = validation_prompts(val, config.eval)
    assert heldout == val[8:32]
    assert not {p.prompt for p in heldout} & {p.prompt for p in val[:8]}        # a study on 8 prompts chose on val[:8]


def test_a_heldout_offset_beyond_the_validation_set_is_refused_naming_the_fields(make_run_config):
    config = parse_config(make_run_config(eval={"num_prompts": 24, "n_samples": 4, "k": [1, 4], "split": "heldout",
                                                "heldout_offset": 8}, data={"synthetic": {"val_size": 16}}))
    _, val = load_problems(config.data)
    with pytest.raises(ValueError, match=r"eval.heldout_offset.*data.synthetic.val_size.*at least 32.*--prompts"):
        validation_prompts(val, config.eval)
    with pytest.raises(ValueError, match="eval.heldout_offset .8. applies to eval.split .heldout. only, not .selection"):
        parse_config(make_run_config(eval={"heldout_offset": 8}))


def test_verify_prompts_validates_n_heldout_prompts_disjoint_from_the_selection_at_the_last_step_only():
    """`sweeper verify --prompts 24` on a study that selected on 8 prompts (val_size 16): each arm validates
    val[8:32] of a validation set drawn larger, whose first 8 are still the study's, once, at the last step."""
    from sweeper.results.verify import _heldout

    study = parse_config({"data": {"synthetic": {"val_size": 16}}, "eval": {"num_prompts": 8},
                          "train": {"steps": 30, "eval_every": 5}})
    config = study.model_dump(mode="json")
    _heldout(config, selection=8, count=24, last_only=True)
    arm = parse_config(config)
    assert (arm.eval.split, arm.eval.heldout_offset, arm.eval.num_prompts) == ("heldout", 8, 24)
    assert arm.data.synthetic.val_size == 32
    assert (arm.train.eval_every, arm.train.eval_at_start) == (30, False)
    _, val_study = load_problems(study.data)
    _, val_arm = load_problems(arm.data)
    selection = validation_prompts(val_study, study.eval)
    heldout = validation_prompts(val_arm, arm.eval)
    assert val_arm[:8] == selection and len(heldout) == 24
    assert not {p.prompt for p in heldout} & {p.prompt for p in selection}
    kept = study.model_dump(mode="json")
    _heldout(kept, selection=8, count=8, last_only=False)   # the default (--prompts = the study's): val[8:16]
    assert kept["train"]["eval_every"] == 5 and validation_prompts(val_arm, parse_config(kept).eval) == val_arm[8:16]


def test_verify_prompts_refuses_a_dataset_validation_set_too_small_naming_the_field_and_the_fix():
    from sweeper.results.verify import _heldout
    from sweeper.study.schema import SpecError

    config = parse_config({"data": {"source": "dataset", "dataset": {"path": "json", "data_files": "x.jsonl",
                                                                      "val_size": 20}},
                           "eval": {"num_prompts": 8}}).model_dump(mode="json")
    with pytest.raises(SpecError, match=r"data.dataset.val_size is 20.*at least 32; lower --prompts to 12 or less"):
        _heldout(config, selection=8, count=24, last_only=True)


def test_verify_refuses_fewer_than_2_prompts_before_running_anything(tmp_path, capsys):
    import yaml

    from sweeper.cli import main
    from sweeper.results.verify import verify
    from sweeper.study.schema import SpecError

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"study": {"name": "p"}, "objective": {"metric": "val/pass@8"},
                                    "space": {"params": {"clip.eps_high": [0.2, 0.28]}},
                                    "budget": {"n_trials": 2}, "executor": {"type": "local"},
                                    "tracking": {"enabled": False}}))
    with pytest.raises(SpecError, match="--prompts: give 2 or more"):
        verify(path, 3, prompts=1)
    assert main(["verify", str(path), "--prompts", "1", "--no-progress"]) == 2
    assert "--prompts: give 2 or more held-out prompts" in capsys.readouterr().err


def test_verify_pairs_prompts_only_between_arms_that_validate_the_same_prompts():
    from sweeper.results.verify import _heldout, _same_prompts

    arms = [parse_config({"eval": {"num_prompts": 8}, "clip": {"eps_high": eps}}).model_dump(mode="json")
            for eps in (0.2, 0.28)]
    for arm in arms:
        _heldout(arm, selection=8, count=24, last_only=True)
    assert _same_prompts(*arms)
    arms[1]["data"]["reward"] = "math_verify"                     # scored otherwise, the same prompts
    assert _same_prompts(*arms)
    arms[1]["data"]["synthetic"]["levels"] = [1, 2, 3]            # other validation problems: no pairing by prompt
    assert not _same_prompts(*arms)
