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
