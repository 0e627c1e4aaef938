"""Runs inside .venv-trl (TRL 1.16.x) with PYTHONPATH at the repository root: the TRL engine against the native
trainer. Not a test module: tests/test_engines.py runs it as ``.venv-trl/bin/python tests/engines/trl_engine_check.py
MODE`` with a JSON request on stdin and reads a JSON answer on stdout.

``equivalence``: request ``{"methods": {name: run-config sections}, "output": folder}``. For each method, one rollout
step of the native trainer (``trainers.grpo.GRPOTrainer.train_step``, its own HF generation) and one optimizer step
of ``trainers.engines.trl.EntropyGRPOTrainer`` built from ``sweeper.results.formats.to_trl`` of the same run config, whose
``rollout_func`` hands TRL the completions the native step sampled (the same batch). Answer per method: both
losses, the largest gradient difference and the gradient scale, the method's metrics from both.

``run``: request ``{"run_config": path, "trl_config": path}``: ``trainers.engines.trl.main`` (the launcher's entry
point) for the file's ``max_steps``; answer: the metrics TRL logged.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path


def native_step(config):
    """(native trainer's train/loss, gradients by parameter name, its metrics, the rollout it sampled, prompts)."""
    from trainers.grpo import GRPOTrainer

    trainer = GRPOTrainer(config)
    recorded = {}
    generate = trainer.engine.generate

    def recording(prompts, n, sampling):
        recorded["rollout"], recorded["prompts"] = generate(prompts, n, sampling), list(prompts)
        return recorded["rollout"]

    trainer.engine.generate = recording
    metrics = trainer.train_step(1)
    grads = {name: p.grad.detach().clone() for name, p in trainer.accelerator.unwrap_model(trainer.model).named_parameters()
             if p.grad is not None}
    return metrics, grads, recorded["rollout"], recorded["prompts"], trainer.model_path


def trl_step(config, rollout, prompts, model_path, output_dir):
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig

    from sweeper.results.formats import to_trl
    from trainers.engines.trl import EntropyGRPOTrainer
    from trainers.rewards import get_reward

    kwargs, _, _ = to_trl(config.model_dump(mode="json"))
    kwargs.update(output_dir=str(output_dir), max_steps=1, report_to=[], use_cpu=True, save_strategy="no",
                  eval_strategy="no", logging_steps=1)
    args = GRPOConfig(**kwargs)
    G = config.rollout.group_size
    rows_of = {}
    for index, prompt in enumerate(prompts):
        rows_of.setdefault(prompt, []).append(list(range(index * G, (index + 1) * G)))
    answers = {p.prompt: p.answer for p in _problems(config)}

    def rollout_func(batch_prompts, trainer):
        taken, prompt_ids, completion_ids = {}, [], []
        for prompt in batch_prompts:
            group = rows_of[prompt][0]
            row = group[taken.get(prompt, 0)]
            taken[prompt] = taken.get(prompt, 0) + 1
            mask = rollout.prompt_mask[row].bool()
            prompt_ids.append(rollout.prompt_ids[row][mask].tolist())
            completion_ids.append(rollout.response_ids[row][rollout.response_mask[row].bool()].tolist())
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}

    reward_fn = get_reward(config.data.reward)

    def reward(completions, answer, **_):
        return [float(reward_fn(c, a)) for c, a in zip(completions, answer)]

    captured = {}

    class Grads(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **_):
            captured["grads"] = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    data = Dataset.from_dict({"prompt": prompts, "answer": [answers[p] for p in prompts]})
    trainer = EntropyGRPOTrainer(model=model_path, reward_funcs=reward, args=args, train_dataset=data,
                                 rollout_func=rollout_func, callbacks=[Grads()], run_config=config)
    trainer.train()
    logged = {k: v for entry in trainer.state.log_history for k, v in entry.items() if isinstance(v, (int, float))}
    return logged, captured["grads"]


def _problems(config):
    from trainers.data import load_problems

    return load_problems(config.data)[0]


def equivalence(request: dict) -> dict:
    import torch

    from trainers.config import parse_config

    answers = {}
    for name, sections in request["methods"].items():
        output = Path(request["output"]) / name
        config = parse_config(_config(sections, output / "native"), name)
        native_metrics, native_grads, rollout, prompts, model_path = native_step(config)
        trl_logged, trl_grads = trl_step(config, rollout, prompts, model_path, output / "trl")
        worst, scale = 0.0, 0.0
        for key, grad in native_grads.items():
            other = trl_grads[key]
            worst = max(worst, float((grad - other).abs().max()))
            scale = max(scale, float(grad.abs().max()))
        method = config.entropy.method
        answers[name] = {
            "method": method,
            "native_loss": native_metrics["train/loss"], "trl_loss": trl_logged.get("train/loss"),
            "grad_max_abs_diff": worst, "grad_max_abs": scale, "grad_params": len(native_grads),
            "grad_params_trl": len(trl_grads),
            "micro_batch_tokens": _micro_batch_tokens(config, rollout),
            "native_method_metrics": {k: v for k, v in native_metrics.items() if k.startswith(method + "/")},
            "trl_method_metrics": {k: v for k, v in trl_logged.items() if k.startswith(method + "/")},
        }
    return answers


def _micro_batch_tokens(config, rollout) -> list[int]:
    """Response tokens of each micro-batch of the step (one mini-batch, rows in order)."""
    rows = rollout.response_mask.shape[0]
    micro = config.train.micro_batch_size or rows
    return [int(rollout.response_mask[start:start + micro].sum()) for start in range(0, rows, micro)]


def _config(sections: dict, output: Path) -> dict:
    config = {
        "seed": 0, "model": {"path": "builtin:tiny-arith"},
        "rollout": {"prompts_per_step": 2, "group_size": 4, "max_new_tokens": 6},
        "train": {"steps": 1, "eval_every": 100, "mini_batches": 1, "ppo_epochs": 1, "checkpoint_every": 0,
                  "output_dir": str(output), "eval_at_start": False},
        "optim": {"lr": 1e-4, "max_grad_norm": None},
    }
    for key, value in sections.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
    return config


def run(request: dict) -> dict:
    from trainers.engines import trl as engine

    trainer_holder = {}
    original = engine.EntropyGRPOTrainer.train

    def train(self, *args, **kwargs):
        trainer_holder["trainer"] = self
        return original(self, *args, **kwargs)

    engine.EntropyGRPOTrainer.train = train
    engine.main([request["run_config"], request["trl_config"]])
    trainer = trainer_holder["trainer"]
    return {"log_history": trainer.state.log_history, "global_step": trainer.state.global_step,
            "model_dtype": str(trainer.model.dtype).removeprefix("torch."), "bf16": trainer.args.bf16}


def main() -> None:
    mode = sys.argv[1]
    request = json.load(sys.stdin)
    warnings.simplefilter("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    answer = {"equivalence": equivalence, "run": run}[mode](request)
    print("\n" + json.dumps(answer, default=str))


if __name__ == "__main__":
    main()
