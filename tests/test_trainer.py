"""The GRPO trainer end to end on the shipped tiny model: a run completes, logs every metric,
resumes exactly, rejects bad configs cleanly, and trains data-parallel over 2 CPU processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from trainers.config import parse_config
from trainers.grpo import GRPOTrainer, train
from trainers.reporting import PREEMPTED, Reporter, read_metrics, read_per_prompt

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

TRAIN_KEYS = {
    "train/reward_mean", "train/reward_std", "train/accuracy", "train/entropy", "train/clip_frac_low",
    "train/clip_frac_high", "train/ratio_mean", "train/kl_old", "train/response_length",
    "train/zero_variance_groups", "train/grad_norm", "train/lr", "train/loss", "train/pg_loss",
    "time/rollout", "time/train", "time/other", "time/step",
}
VAL_KEYS = {"val/pass@1", "val/pass@4", "val/maj@1", "val/maj@4", "val/mean@1", "val/mean@4", "val/entropy"}


def test_short_run_completes_with_every_metric(make_run_config):
    config = parse_config(make_run_config())
    summary = train(config)
    assert summary["status"] == "completed" and summary["step"] == 4
    out = Path(config.train.output_dir)
    train_records = read_metrics(out / "metrics.jsonl", "train")
    val_records = read_metrics(out / "metrics.jsonl", "val")
    assert [r["step"] for r in train_records] == [1, 2, 3, 4]
    assert [r["step"] for r in val_records] == [0, 2, 4]
    for record in train_records:
        assert TRAIN_KEYS <= set(record), TRAIN_KEYS - set(record)
    for record in val_records:
        assert VAL_KEYS <= set(record), VAL_KEYS - set(record)
        assert 0.0 <= record["val/pass@1"] <= record["val/pass@4"] <= 1.0
    # several mini-batch updates per rollout batch move the ratio off 1 (so clipping can matter)
    assert any(abs(r["train/ratio_mean"] - 1.0) > 1e-6 or r["train/kl_old"] > 0 for r in train_records)
    assert (out / "checkpoint" / "trainer_state.json").exists()
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["steps"] == 4

    # per-prompt results: one record per validation, consistent with the reported means and standard errors
    per_prompt = read_per_prompt(out / "per_prompt.jsonl")
    assert [r["step"] for r in per_prompt] == [0, 2, 4]
    for record, metrics in zip(per_prompt, val_records):
        assert record["n_samples"] == 4 and record["k"] == [1, 4] and len(record["correct"]) == 8
        assert set(record["per_prompt"]) == {"pass@1", "pass@4", "maj@1", "maj@4", "mean@1", "mean@4", "entropy"}
        assert record["per_prompt"]["pass@1"] == pytest.approx([c / 4 for c in record["correct"]])
        for name in ("pass@1", "pass@4", "maj@4"):
            values = record["per_prompt"][name]
            assert metrics[f"val/{name}"] == pytest.approx(sum(values) / 8, abs=1e-6)
            mean = sum(values) / 8
            assert metrics[f"val/{name}_se"] == pytest.approx((sum((v - mean) ** 2 for v in values) / 7 / 8) ** 0.5, abs=1e-6)


class StopAt(Reporter):
    def __init__(self, step, reason):
        self.step, self.reason, self.seen = step, reason, 0

    def on_train_step(self, step, metrics):
        self.seen = step

    def stop_reason(self):
        return self.reason if self.seen >= self.step else None


def _weights(output_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(output_dir) / "checkpoint" / "model.safetensors"))


def test_preempted_run_resumes_to_the_same_state(tmp_path, make_run_config):
    straight = parse_config(make_run_config(train={"output_dir": str(tmp_path / "straight")}))
    interrupted = parse_config(make_run_config(train={"output_dir": str(tmp_path / "interrupted")}))
    assert train(straight)["step"] == 4

    first = train(interrupted, [StopAt(2, PREEMPTED)])
    assert first["status"] == "stopped" and first["step"] == 2 and first["stop_reason"] == PREEMPTED
    second = GRPOTrainer(interrupted)
    resumed = second.train()
    assert resumed["status"] == "completed" and resumed["step"] == 4

    a = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    b = read_metrics(tmp_path / "interrupted" / "metrics.jsonl")
    assert [(r["kind"], r["step"]) for r in a] == [(r["kind"], r["step"]) for r in b]  # no repeated or lost steps
    pa, pb = (read_per_prompt(tmp_path / name / "per_prompt.jsonl") for name in ("straight", "interrupted"))
    assert [r["step"] for r in pa] == [r["step"] for r in pb] == [0, 2, 4]
    assert [r["correct"] for r in pa] == [r["correct"] for r in pb]
    for ra, rb in zip(a, b):
        for key in ("train/reward_mean", "train/entropy", "train/loss", "val/pass@1", "val/entropy"):
            if key in ra:
                assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), (ra["step"], key)
    wa, wb = _weights(tmp_path / "straight"), _weights(tmp_path / "interrupted")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_validation_is_paired_across_run_seeds(tmp_path, make_run_config):
    """Validation samples depend on eval.seed, not on the run's seed: two runs of the untrained model with
    different seeds give identical per-prompt results (same prompts, same random numbers); another
    eval.seed draws other samples."""
    def step0(seed, eval_seed, name):
        config = parse_config(make_run_config(seed=seed, eval={"seed": eval_seed},
                                              train={"steps": 1, "eval_every": 1, "output_dir": str(tmp_path / name)}))
        return GRPOTrainer(config).evaluate()[1]

    a, b, other = step0(0, 0, "a"), step0(7, 0, "b"), step0(0, 3, "c")
    assert a["prompt_digest"] == b["prompt_digest"] == other["prompt_digest"]
    assert a["per_prompt"] == b["per_prompt"] and a["correct"] == b["correct"]
    assert a["per_prompt"]["entropy"] != other["per_prompt"]["entropy"]


def test_pruning_stop_reason_stops_without_error(make_run_config):
    summary = train(parse_config(make_run_config()), [StopAt(1, "pruned")])
    assert summary == {**summary, "status": "stopped", "step": 1, "stop_reason": "pruned"}


BAD_CONFIGS = {
    "unknown key": ({"trian": {"steps": 3}}, "trian: unknown key"),
    "wrong type": ({"train": {"steps": "many"}}, "train.steps"),
    "k > n": ({"eval": {"n_samples": 4, "k": [8]}}, "eval.k"),
    "eps_low >= 1": ({"clip": {"eps_low": 1.0}}, "clip.eps_low"),
    "missing model path": ({"model": {"path": "/no/such/model"}}, "model.path"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_run_yaml_gives_one_clear_error(tmp_path, case):
    data, expected = BAD_CONFIGS[case]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**data, "train": {**data.get("train", {}), "output_dir": str(tmp_path / "o")}}))
    for command in ([PYTHON, "-m", "trainers", str(path)], [PYTHON, "-m", "sweeper.cli", "train", str(path)]):
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert expected in done.stderr
        assert "Traceback" not in done.stderr


DDP_SCRIPT = """
import json, os, sys, torch
from trainers.config import parse_config
from trainers.grpo import GRPOTrainer
config = parse_config(json.loads(open(sys.argv[1]).read()))
trainer = GRPOTrainer(config)
trainer.train()
state = trainer.accelerator.unwrap_model(trainer.model).state_dict()
rank = trainer.accelerator.process_index
torch.save({k: v.detach().cpu() for k, v in state.items()}, os.path.join(sys.argv[2], f"rank{rank}.pt"))
with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as f:
    json.dump({"num_processes": trainer.accelerator.num_processes,
               "distributed_type": str(trainer.accelerator.distributed_type)}, f)
"""


@pytest.mark.slow
def test_two_processes_train_data_parallel_and_agree_on_weights(tmp_path, make_run_config):
    config = make_run_config(rollout={"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 6},
                             train={"steps": 2, "mini_batches": 2, "ppo_epochs": 1, "eval_every": 2,
                                    "output_dir": str(tmp_path / "run")},
                             eval={"num_prompts": 16, "n_samples": 32, "k": [1, 32]})  # 2 validation chunks: one per rank
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    launcher = [PYTHON, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    done = subprocess.run([*launcher, str(tmp_path / "ddp.py"), str(tmp_path / "config.json"), str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["num_processes"] for i in infos] == [2, 2]
    assert all("MULTI_CPU" in i["distributed_type"] for i in infos)
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "ranks disagree on weights after data-parallel steps"
    from transformers import AutoModelForCausalLM
    from trainers.config import resolve_model_path

    start = AutoModelForCausalLM.from_pretrained(resolve_model_path(config["model"]["path"])).state_dict()
    assert any(not torch.equal(start[k], w0[k]) for k in w0), "no update happened"

    # the step-0 validation on 2 processes = on 1 process, prompt by prompt (seeds follow chunks, not ranks)
    two = read_per_prompt(tmp_path / "run" / "per_prompt.jsonl")[0]
    one = GRPOTrainer(parse_config({**config, "train": {**config["train"], "output_dir": str(tmp_path / "one")}})).evaluate()[1]
    assert two["step"] == one["step"] == 0 and len(one["correct"]) == 16
    assert two["correct"] == one["correct"] and two["per_prompt"].keys() == one["per_prompt"].keys()
    for name, values in one["per_prompt"].items():
        assert two["per_prompt"][name] == pytest.approx(values, abs=1e-5), name


def test_run_preempted_at_step_0_resumes_without_a_second_step_0_validation(make_run_config):
    config = parse_config(make_run_config(train={"steps": 2, "eval_every": 2}))
    first = train(config, [StopAt(0, PREEMPTED)])       # stops right after the step-0 validation
    assert first["status"] == "stopped" and first["step"] == 0
    assert train(config)["status"] == "completed"
    records = read_metrics(Path(config.train.output_dir) / "metrics.jsonl")
    assert [(r["kind"], r["step"]) for r in records] == [("val", 0), ("train", 1), ("train", 2), ("val", 2)]
