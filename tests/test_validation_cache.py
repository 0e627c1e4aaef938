"""The step-0 validation cache (trainers/validation_cache.py): one validation of the untrained model per
model and validation settings, reused by every run that starts from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from trainers.config import parse_config, resolve_model_path
from trainers.grpo import train
from trainers.reporting import read_metrics, read_per_prompt
from trainers.validation_cache import step0_key


def run(make_run_config, tmp_path: Path, name: str, **sections):
    config = parse_config(make_run_config(**{"train": {"steps": 1, "eval_every": 1, "output_dir": str(tmp_path / name)},
                                             **sections}))
    train(config)
    out = Path(config.train.output_dir)
    return read_metrics(out / "metrics.jsonl", "val")[0], read_per_prompt(out / "per_prompt.jsonl")[0]


def test_runs_from_one_model_share_one_step0_validation(tmp_path, make_run_config):
    cache = tmp_path / "cache"
    eval_section = {"num_prompts": 8, "n_samples": 4, "k": [1, 4], "step0_cache": str(cache)}
    first_metrics, first = run(make_run_config, tmp_path, "a", seed=0, eval=eval_section)
    files = list(cache.glob("*.json"))
    assert len(files) == 1
    stored = files[0].read_text()
    again_metrics, again = run(make_run_config, tmp_path, "b", seed=7, eval=eval_section)   # another run seed
    assert files[0].read_text() == stored and list(cache.glob("*.json")) == files           # read, not recomputed
    assert again["step"] == first["step"] == 0 and again["per_prompt"] == first["per_prompt"]
    assert {k: v for k, v in again_metrics.items() if k.startswith("val/")} == \
           {k: v for k, v in first_metrics.items() if k.startswith("val/")}
    assert json.loads(stored)["per_prompt"]["correct"] == first["correct"]
    # another validation setting is another result
    run(make_run_config, tmp_path, "c", eval={**eval_section, "n_samples": 8, "k": [1, 8]})
    assert len(list(cache.glob("*.json"))) == 2


def test_the_key_follows_the_model_files_and_the_validation_not_the_run(tmp_path, make_run_config):
    folder = tmp_path / "model"
    shutil.copytree(resolve_model_path("builtin:tiny-arith"), folder)
    config = parse_config(make_run_config(model={"path": str(folder)}))
    key = step0_key(config, str(folder))
    other_run = parse_config(make_run_config(model={"path": str(folder)}, seed=5, optim={"lr": 3e-5},
                                             train={"steps": 9, "output_dir": str(tmp_path / "x")}))
    assert step0_key(other_run, str(folder)) == key
    assert step0_key(parse_config(make_run_config(model={"path": str(folder)}, eval={"seed": 1})), str(folder)) != key
    (folder / "config.json").write_text((folder / "config.json").read_text() + "\n")   # a retrained model, same folder
    assert step0_key(config, str(folder)) != key


def test_the_key_holds_the_engine_args_the_dataset_files_and_the_code(tmp_path, make_run_config, monkeypatch):
    import subprocess

    import trainers.validation_cache as cache

    model = resolve_model_path("builtin:tiny-arith")
    config = parse_config(make_run_config())
    key = step0_key(config, model)
    # rollout.vllm_engine_args
    assert step0_key(parse_config(make_run_config(rollout={"vllm_engine_args": {"enforce_eager": True}})), model) != key
    # a local dataset file: its contents, not its name
    data_file = tmp_path / "problems.jsonl"
    data_file.write_text('{"prompt": "1+1=", "answer": "2"}\n')
    with_data = parse_config(make_run_config(data={"source": "dataset", "dataset": {"path": "json", "data_files": str(data_file)}}))
    data_key = step0_key(with_data, model)
    assert step0_key(with_data, model) == data_key
    data_file.write_text('{"prompt": "1+1=", "answer": "3"}\n')                   # same file, other contents
    assert step0_key(with_data, model) != data_key
    assert cache.dataset_files(with_data.model_dump(mode="json")["data"])[0][0] == str(data_file.resolve())
    # the code: this package, its commit, the libraries
    versions = cache.code_versions()
    import torch
    import transformers

    assert versions["torch"] == torch.__version__ and versions["transformers"] == transformers.__version__
    head = subprocess.run(["git", "-C", str(cache.PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert versions["git_commit"].startswith(head.stdout.strip())
    monkeypatch.setattr(cache, "code_versions", lambda: {**versions, "transformers": "0.0.1"})
    assert step0_key(config, model) != key


def test_a_record_is_read_only_under_its_own_key_and_prompts(tmp_path):
    from trainers.validation_cache import read_step0, write_step0

    per_prompt = {"prompt_digest": "abc", "correct": [1, 2]}
    path = write_step0(tmp_path, "k1", {"val/pass@1": 0.5}, per_prompt)
    assert read_step0(tmp_path, "k1", "abc")["metrics"] == {"val/pass@1": 0.5}
    assert read_step0(tmp_path, "k1") is not None
    assert read_step0(tmp_path, "k1", "other prompts") is None                      # digest checked on read
    shutil.copy(path, tmp_path / "k2.json")                                          # a record under another key
    assert read_step0(tmp_path, "k2", "abc") is None
    (tmp_path / "k3.json").write_text(json.dumps({"metrics": {}, "per_prompt": per_prompt}))  # format 1: no key
    assert read_step0(tmp_path, "k3", "abc") is None
