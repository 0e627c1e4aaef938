"""TRL's GRPOTrainer, one step at a time on command: the other contestant of ``step_time.py --trl``.

Runs in TRL's own environment (``.venv-trl``: ``bash scripts/setup_exports.sh trl``), started by step_time.py,
which hands it the run (a JSON file: model folder, prompts in step order, settings) and two pipe ends. TRL's
own ``Trainer.train()`` loop runs unmodified; a callback holds it at the start of each optimizer step until
step_time.py writes ``go``, and reports the seconds from one step's start to the next (generation, reward,
loss, backward, optimizer, TRL's logging and data loading: the whole iteration), wall-clock and this process's
CPU time. One JSON line per event on the result pipe: ``{"ready": ...}`` once, then ``{"seconds": s,
"cpu_seconds": c, "completion_length": l}`` per step.

Settings (equal work with the trainer's on-policy step): one process, float32 (``bf16=False``), no gradient
checkpointing (TRL's default is on; the trainer has none), ``per_device_train_batch_size`` = prompts x G,
``num_generations`` = G, one optimizer step per generation (``steps_per_generation`` 1, ``num_iterations`` 1:
TRL then skips its old-policy pass), ``beta`` 0, ``loss_type`` dapo (one process: the token mean), rewards
scaled per group, clip ``epsilon``, AdamW with the trainer's lr, betas, weight decay and grad clipping, a
constant schedule, metrics logged every step (the trainer computes its metrics every step), the prompts of
the trainer's steps in the same order (``shuffle_dataset`` False), the trainer's reward function.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main(spec_path: str, command_fd: int, result_fd: int) -> None:
    spec = json.loads(Path(spec_path).read_text())
    sys.path.insert(0, spec["repo"])
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from trainers.rewards import get_reward   # pure Python: the trainer's own reward

    torch.set_num_threads(spec["threads"])
    commands = os.fdopen(command_fd, "r")
    results = os.fdopen(result_fd, "w", buffering=1)
    reward = get_reward(spec["reward"])

    def reward_func(completions, answer, **_):
        return [reward(completion, expected) for completion, expected in zip(completions, answer)]

    class Stepper(TrainerCallback):
        """Holds the loop at each step's start until ``go``; reports the previous step's seconds."""

        def __init__(self):
            self.started: tuple[float, float] | None = None
            self.completion_length: float | None = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                self.completion_length = float(logs["completions/mean_length"])

        def on_step_begin(self, args, state, control, **kwargs):
            now, cpu_now = time.perf_counter(), time.process_time()
            if self.started is None:
                results.write(json.dumps({"ready": True}) + "\n")
            else:
                results.write(json.dumps({"seconds": now - self.started[0], "cpu_seconds": cpu_now - self.started[1],
                                          "completion_length": self.completion_length}) + "\n")
            if commands.readline().strip() != "go":   # step_time.py closed the pipe: done
                os._exit(0)
            self.started = time.perf_counter(), time.process_time()

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    dataset = Dataset.from_list([{"prompt": p, "answer": a} for p, a in spec["problems"]])
    settings = spec["settings"]
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-side-"), use_cpu=True, bf16=False, fp16=False,
        gradient_checkpointing=False, disable_dropout=True, seed=spec["seed"], data_seed=spec["seed"],
        per_device_train_batch_size=settings["prompts"] * settings["group_size"], num_generations=settings["group_size"],
        gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1, max_steps=spec["steps"] + 1,
        max_completion_length=settings["max_new_tokens"], temperature=settings["temperature"],
        top_p=settings["top_p"], top_k=settings["top_k"], beta=0.0, epsilon=settings["eps_low"],
        epsilon_high=settings["eps_high"], loss_type="dapo", scale_rewards="group",
        learning_rate=settings["lr"], lr_scheduler_type="constant", warmup_steps=0, adam_beta1=settings["betas"][0],
        adam_beta2=settings["betas"][1], weight_decay=settings["weight_decay"],
        max_grad_norm=settings["max_grad_norm"] if settings["max_grad_norm"] is not None else 0.0,
        shuffle_dataset=False, logging_steps=1, report_to="none", disable_tqdm=True, save_strategy="no",
        dataloader_num_workers=0, log_completions=False)
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[reward_func], args=config,
                          train_dataset=dataset, callbacks=[Stepper()])
    trainer.train()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
