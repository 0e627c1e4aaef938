"""Built-in models built into a cache folder (trainers/built_models.py): ``builtin:NAME`` and
``builtin:NAME/path`` resolution, and the errors that name the build command. No model is built here: a
cache folder is laid out as the build script leaves it (tests/test_qwen_testbed.py builds the real one)."""

from __future__ import annotations

import json

import pytest

from trainers.built_models import (TINY_QWEN, build_script_hash, built_model_folder, cache_root, is_built,
                                   resolve_builtin_file)
from trainers.config import ConfigError, launch_problems, parse_config, resolve_model_path, shipped_models
from trainers.data import load_problems


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTROPY_SWEEPER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _lay_out_build(folder, rows):
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "build_info.json").write_text("{}")


def _dataset_config(**dataset):
    return parse_config({"model": {"path": "builtin:tiny-arith"}, "data": {
        "source": "dataset", "reward": "math_verify",
        "dataset": {"path": "json", "prompt_field": "question", "answer_field": "answer", "val_size": 1, **dataset}}})


def test_cache_folder_is_keyed_by_the_build_script_hash(cache, monkeypatch):
    assert cache_root() == cache
    folder = built_model_folder(TINY_QWEN)
    assert folder.parent == cache and folder.name == f"tiny-qwen-arith-{build_script_hash()[:12]}"
    monkeypatch.delenv("ENTROPY_SWEEPER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache.parent / "xdg"))
    assert cache_root() == cache.parent / "xdg" / "entropy-sweeper"
    assert "tiny-qwen-arith" in shipped_models() and "tiny-arith" in shipped_models()


def test_not_built_names_the_build_command(cache):
    assert not is_built(TINY_QWEN)
    with pytest.raises(ConfigError, match=r"model.path: the built-in model 'tiny-qwen-arith' is not built yet .*"
                                          r"python scripts/build_tiny_qwen_model.py"):
        resolve_model_path("builtin:tiny-qwen-arith")
    with pytest.raises(ValueError, match=r"not built yet .*build_tiny_qwen_model.py"):
        resolve_builtin_file("builtin:tiny-qwen-arith/data/train.jsonl")
    config = _dataset_config(data_files="builtin:tiny-qwen-arith/data/train.jsonl")
    problems = dict(launch_problems(config.model_copy(update={"model": config.model.model_copy(update={"path": "builtin:tiny-qwen-arith"})})))
    assert "build_tiny_qwen_model.py" in problems["model.path"]
    assert "build_tiny_qwen_model.py" in problems["data.dataset.data_files"]


def test_built_files_resolve_and_load_as_a_dataset(cache):
    folder = built_model_folder(TINY_QWEN)
    rows = [{"question": f"Compute {i}+1.", "answer": f"{i}+1 = {i + 1}\n#### {i + 1}"} for i in range(5)]
    _lay_out_build(folder, rows)
    assert resolve_model_path("builtin:tiny-qwen-arith") == str(folder)
    assert resolve_builtin_file("builtin:tiny-qwen-arith/data/train.jsonl") == str(folder / "data" / "train.jsonl")
    config = _dataset_config(data_files={"train": ["builtin:tiny-qwen-arith/data/train.jsonl"]})
    assert launch_problems(config) == []
    train, val = load_problems(config.data)
    assert sorted(p.prompt for p in train + val) == sorted(row["question"] for row in rows)
    assert len(val) == 1 and all(p.answer.startswith(p.prompt[len("Compute "):-1]) for p in train + val)


def test_bad_builtin_files_are_refused_with_the_field(cache):
    _lay_out_build(built_model_folder(TINY_QWEN), [{"question": "q", "answer": "1"}])
    for value in ("builtin:tiny-qwen-arith/data/missing.jsonl", "builtin:tiny-qwen-arith/../x.jsonl"):
        with pytest.raises(ValueError, match="no such file"):
            resolve_builtin_file(value)
    with pytest.raises(ValueError, match="no built-in model 'nope'"):
        resolve_builtin_file("builtin:nope/data/train.jsonl")
    with pytest.raises(ValueError, match=r"^data.dataset.data_files: 'builtin:tiny-qwen-arith/data/missing.jsonl': no such file"):
        load_problems(_dataset_config(data_files="builtin:tiny-qwen-arith/data/missing.jsonl").data)
    # shipped assets resolve too; anything else is left as it is
    assert resolve_builtin_file("builtin:tiny-arith/config.json").endswith("trainers/assets/tiny-arith/config.json")
    assert resolve_builtin_file("data/train.jsonl") == "data/train.jsonl"


def test_the_qwen_examples_are_valid_configs(cache):
    """examples/tiny_qwen_grpo.yaml and examples/tiny_qwen_study.yaml pass their schemas (no build needed; the
    launch checks then ask for the build: test_not_built_names_the_build_command)."""
    from pathlib import Path

    from sweeper.study.spec import load_spec
    from trainers.config import load_config

    examples = Path(__file__).resolve().parents[1] / "examples"
    run = load_config(examples / "tiny_qwen_grpo.yaml")
    assert (run.model.path, run.model.chat_template, run.data.reward) == ("builtin:tiny-qwen-arith", True, "math_verify")
    assert run.data.dataset.data_files["train"] == "builtin:tiny-qwen-arith/data/train.jsonl"
    assert "build_tiny_qwen_model.py" in dict(launch_problems(run))["model.path"]
    spec = load_spec(examples / "tiny_qwen_study.yaml")
    assert spec.base["model"]["path"] == "builtin:tiny-qwen-arith" and spec.budget.n_trials == 2
