"""Seconds per optimizer step of TRL's GRPOTrainer against trainers.engines.trl.EntropyGRPOTrainer (plain GRPO and
a method): what running a tuned method on TRL costs over TRL itself.

Runs in TRL's environment with this checkout on the path::

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv-trl/bin/python benchmarks/trl_engine_overhead.py --method siren --generations 3

The contestants are built from the same run config through ``sweeper.results.formats.to_trl`` (same GRPOConfig: batch,
sampling, clip, optimizer, float32) and train in turn, one optimizer step each, round after round: each runs
``Trainer.train()`` unmodified in its own thread, held at the start of every step by a callback until its turn (one
thread computes at a time). A step is the whole loop iteration: generation, reward, (old-policy pass), loss,
backward, optimizer, logging; TRL generates once per ``steps_per_generation`` steps, so the figure is the CPU time
of whole generations (all their optimizer steps) divided by their steps. Timed in CPU seconds of this process (only the thread whose turn it is runs, so on a
shared machine this is the step's own work; wall-clock is printed too). Printed: mean seconds per step and its ratio to plain
TRL, with the range of that ratio over the generations. The first generation is warm-up and not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Turns:
    """A ``TrainerCallback`` factory: holds a trainer at each step's start until ``go()``; records step seconds."""

    def __init__(self):
        from transformers import TrainerCallback

        self.go_event, self.done_event = threading.Event(), threading.Event()
        self.seconds: list[float] = []
        self.wall: list[float] = []
        self.started: tuple[float, float] | None = None
        turns = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                turns.record()
                turns.done_event.set()
                turns.go_event.wait()
                turns.go_event.clear()
                turns.started = time.process_time(), time.perf_counter()

            def on_train_end(self, args, state, control, **kwargs):
                turns.record()
                turns.done_event.set()

        self.callback = Callback()

    def record(self) -> None:
        if self.started is not None:
            self.seconds.append(time.process_time() - self.started[0])
            self.wall.append(time.perf_counter() - self.started[1])
            self.started = None

    def step(self) -> None:
        self.done_event.clear()
        self.go_event.set()
        self.done_event.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="siren", help="entropy.method of the third contestant (default siren)")
    parser.add_argument("--generations", type=int, default=3, help="timed generations (after one warm-up generation)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from trl import GRPOConfig, GRPOTrainer

    from sweeper.results.formats import to_trl
    from trainers.config import parse_config, resolve_model_path
    from trainers.engines.trl import EntropyGRPOTrainer, dataset_and_reward

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    contestants = {"TRL GRPOTrainer": None, "EntropyGRPOTrainer none": "none",
                   f"EntropyGRPOTrainer {args.method}": args.method}
    turns, threads = {}, []
    for label, method in contestants.items():
        config = parse_config({
            "seed": 0, "model": {"path": "builtin:tiny-arith"}, "entropy": {"method": method or "none"},
            "rollout": {"prompts_per_step": args.prompts, "group_size": args.group_size, "max_new_tokens": args.max_new_tokens},
            "train": {"steps": args.generations + 1, "eval_every": 10_000, "eval_at_start": False, "checkpoint_every": 0,
                      "output_dir": tempfile.mkdtemp(prefix="trl-overhead-")},
        }, label)
        kwargs, _, _ = to_trl(config.model_dump(mode="json"))
        kwargs.update(report_to=[], use_cpu=True, save_strategy="no", eval_strategy="no", disable_tqdm=True,
                      logging_steps=1, shuffle_dataset=False, log_completions=False)
        train, _, reward = dataset_and_reward(config)
        turns[label] = Turns()
        common = dict(model=resolve_model_path(config.model.path), reward_funcs=reward, args=GRPOConfig(**kwargs),
                      train_dataset=train, callbacks=[turns[label].callback])
        trainer = GRPOTrainer(**common) if method is None else EntropyGRPOTrainer(**common, run_config=config)
        thread = threading.Thread(target=trainer.train, daemon=True)
        thread.start()
        turns[label].done_event.wait()   # held at step 1
        threads.append(thread)
    per_generation = kwargs["steps_per_generation"] * kwargs["num_iterations"] // kwargs["gradient_accumulation_steps"]
    for _ in range((args.generations + 1) * per_generation):
        for label in contestants:
            turns[label].step()
    for label in contestants:
        turns[label].go_event.set()
    for thread in threads:
        thread.join(timeout=60)

    def per_generation_means(values: list[float]) -> list[float]:
        timed = values[per_generation:(args.generations + 1) * per_generation]
        return [statistics.fmean(timed[i:i + per_generation]) for i in range(0, len(timed), per_generation)]

    base = per_generation_means(turns["TRL GRPOTrainer"].seconds)
    print(f"tiny-arith, {args.prompts} prompts x {args.group_size}, {args.max_new_tokens} new tokens, the default run "
          f"config's batch shape ({per_generation} optimizer steps per generation), float32, {torch.get_num_threads()} "
          f"thread(s); {args.generations} generations each after 1 warm-up, in turn; CPU seconds per optimizer step")
    for label in contestants:
        ours = per_generation_means(turns[label].seconds)
        ratios = [a / b for a, b in zip(ours, base)]
        wall = statistics.fmean(turns[label].wall[per_generation:(args.generations + 1) * per_generation])
        print(f"{label:32s} mean {statistics.fmean(ours):.3f} s/step   x TRL {statistics.fmean(ours) / statistics.fmean(base):.3f} "
              f"[{min(ratios):.3f}, {max(ratios):.3f}]   (wall {wall:.3f} s)")

if __name__ == "__main__":
    main()
