"""The synthetic task's generators and split, and loading problems from a `datasets` dataset."""

from __future__ import annotations

import json
import re

import pytest

from trainers.config import DataConfig, DatasetConfig, SyntheticTaskConfig, parse_config
from trainers.data import LEVEL_GENERATORS, Problem, is_validation_prompt, load_problems, synthetic_problems

FORMS = {
    1: re.compile(r"^(\d+)\+(\d+)=$"),
    2: re.compile(r"^(\d+)\*(\d+)\+(\d+)=$"),
    3: re.compile(r"^(\d+)\*(\d+)-(\d+)=$"),
}


def recompute(problem: Problem) -> int:
    """The answer, recomputed from the prompt text by a separate path."""
    numbers = [int(x) for x in FORMS[problem.level].match(problem.prompt).groups()]
    if problem.level == 1:
        return numbers[0] + numbers[1]
    if problem.level == 2:
        return numbers[0] * numbers[1] + numbers[2]
    return numbers[0] * numbers[1] - numbers[2]


# --------------------------------------------------------------------------- synthetic


def test_each_level_has_its_form_operand_ranges_and_right_answers():
    config = SyntheticTaskConfig(levels=[1, 2, 3], train_size=3000, val_size=150, seed=7)
    problems = synthetic_problems(config, "train") + synthetic_problems(config, "val")
    for problem in problems:
        match = FORMS[problem.level].match(problem.prompt)
        assert match, problem
        numbers = [int(x) for x in match.groups()]
        if problem.level == 1:
            assert all(0 <= x <= 99 for x in numbers)
        elif problem.level == 2:
            assert 0 <= numbers[0] <= 9 and 0 <= numbers[1] <= 9 and 0 <= numbers[2] <= 99
        else:
            assert 10 <= numbers[0] <= 99 and 2 <= numbers[1] <= 9 and 0 <= numbers[2] <= 99
        assert problem.answer == str(recompute(problem))
    # every level appears, level 3 produces negative answers too
    assert {p.level for p in problems} == {1, 2, 3}
    assert any(p.answer.startswith("-") for p in problems if p.level == 3)


def test_synthetic_is_deterministic_in_the_seed():
    config = SyntheticTaskConfig(levels=[1, 2], train_size=500, val_size=64, seed=3)
    assert synthetic_problems(config, "train") == synthetic_problems(config.model_copy(), "train")
    assert synthetic_problems(config, "val") == synthetic_problems(config.model_copy(), "val")
    other = config.model_copy(update={"seed": 4})
    assert synthetic_problems(other, "val") != synthetic_problems(config, "val")


def test_sizes_level_balance_and_distinct_validation():
    train, val = load_problems(DataConfig(synthetic=SyntheticTaskConfig(levels=[1, 2], train_size=1000, val_size=256)))
    assert len(train) == 1000 and len(val) == 256
    assert len({p.prompt for p in val}) == 256
    assert sum(p.level == 1 for p in val) == 128  # round-robin over the levels
    assert sum(p.level == 1 for p in train) == 500


def test_validation_never_overlaps_training_across_configs():
    # The split is a property of (seed, prompt): the shipped model's training config (levels 1-3, many
    # problems) and a run's validation config (levels 1-2) stay disjoint.
    model_train = synthetic_problems(SyntheticTaskConfig(levels=[1, 2, 3], train_size=60000, val_size=1), "train")
    run_val = synthetic_problems(SyntheticTaskConfig(levels=[1, 2], val_size=512), "val")
    level_3_val = synthetic_problems(SyntheticTaskConfig(levels=[3], val_size=256), "val")
    train_prompts = {p.prompt for p in model_train}
    assert not train_prompts & {p.prompt for p in run_val + level_3_val}
    assert all(is_validation_prompt(p.prompt, 1234) for p in run_val)
    assert not any(is_validation_prompt(p.prompt, 1234) for p in model_train[:1000])
    # about one problem in ten is held out
    level_1 = [f"{a}+{b}=" for a in range(100) for b in range(100)]
    held_out = sum(is_validation_prompt(prompt, 1234) for prompt in level_1)
    assert 800 < held_out < 1200


def test_bad_levels_and_oversized_validation_name_the_field():
    with pytest.raises(ValueError, match=r"data\.synthetic\.levels.*\[7\]"):
        synthetic_problems(SyntheticTaskConfig(levels=[1, 7]), "train")
    with pytest.raises(ValueError, match=r"data\.synthetic\.levels is empty"):
        synthetic_problems(SyntheticTaskConfig(levels=[]), "val")
    with pytest.raises(ValueError, match=r"data\.synthetic\.val_size"):
        synthetic_problems(SyntheticTaskConfig(levels=[1], val_size=5000), "val")
    assert set(LEVEL_GENERATORS) == {1, 2, 3}


# --------------------------------------------------------------------------- datasets


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def dataset_config(**fields) -> DataConfig:
    return parse_config({"data": {"source": "dataset", "reward": "math_verify", "dataset": fields}}).data


def test_jsonl_with_field_mapping_and_held_out_validation(tmp_path):
    rows = [{"question": f"What is {i} + {i}?", "solution": f"... #### {2 * i}", "topic": "add"} for i in range(40)]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    config = dataset_config(
        path="json", data_files=path, prompt_field="question", answer_field="solution",
        prompt_template="Q ({topic}): {prompt}\nA:", val_size=10, seed=5,
    )
    train, val = load_problems(config)
    assert len(train) == 30 and len(val) == 10
    assert not {p.prompt for p in train} & {p.prompt for p in val}
    assert {p.prompt for p in train} | {p.prompt for p in val} == {f"Q (add): What is {i} + {i}?\nA:" for i in range(40)}
    first = next(p for p in train + val if p.prompt == "Q (add): What is 3 + 3?\nA:")
    assert first == Problem(prompt="Q (add): What is 3 + 3?\nA:", answer="... #### 6", level=0)
    # deterministic in the seed
    assert load_problems(config) == (train, val)


def test_named_validation_split_from_data_files(tmp_path):
    train_path = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"{i}+1=", "answer": i + 1} for i in range(5)])
    test_path = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "9+9=", "answer": 18}])
    config = dataset_config(path="json", data_files={"train": train_path, "test": test_path}, val_split="test")
    train, val = load_problems(config)
    assert [p.prompt for p in train] == [f"{i}+1=" for i in range(5)]
    assert val == [Problem(prompt="9+9=", answer="18", level=0)]


def test_local_parquet_folder(tmp_path):
    import datasets

    folder = tmp_path / "data"
    folder.mkdir()
    datasets.Dataset.from_dict({"prompt": [f"{i}*2=" for i in range(20)], "answer": [str(2 * i) for i in range(20)]}).to_parquet(
        str(folder / "train.parquet")
    )
    train, val = load_problems(dataset_config(path=str(folder), val_size=4))
    assert len(train) == 16 and len(val) == 4


def test_missing_column_lists_the_columns_found(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"question": "1+1=", "answer": "2"}])
    with pytest.raises(ValueError) as error:
        load_problems(dataset_config(path="json", data_files=path, val_size=1))
    message = str(error.value)
    assert "data.dataset.prompt_field" in message and "'prompt'" in message
    assert "['question', 'answer']" in message


def test_bad_template_split_and_val_size_name_the_field(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"prompt": f"{i}", "answer": "2"} for i in range(3)])
    with pytest.raises(ValueError, match=r"data\.dataset\.prompt_template.*'nope'"):
        load_problems(dataset_config(path="json", data_files=path, prompt_template="{nope}", val_size=1))
    with pytest.raises(ValueError, match=r"data\.dataset\.val_size"):
        load_problems(dataset_config(path="json", data_files=path, val_size=3))
    with pytest.raises(ValueError, match=r"split 'validation'"):
        load_problems(dataset_config(path="json", data_files=path, val_split="validation"))
    with pytest.raises(ValueError, match=r"data\.dataset"):
        load_problems(dataset_config(path="json", data_files=str(tmp_path / "missing.jsonl")))
