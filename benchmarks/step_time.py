"""Seconds per GRPO step on the shipped tiny model, and the trainer's overhead over a bare loop.

Measured in one process, interleaved (GRPO step, bare step, GRPO step, ...) so machine noise hits
both alike. The bare loop does only what any GRPO step must: ``generate`` the same 8 prompts x 8
samples, then per optimizer step one forward/backward of a plain policy-gradient loss and
``optimizer.step()`` — the same number of optimizer steps as the measured config, no old-policy
pass, no metrics, no interventions.

With ``--methods``, one row per entropy method: its median step time over vanilla GRPO's, both
measured in the same interleaved run (target: <= 5% overhead).

    python benchmarks/step_time.py                 # default tiny run, overhead over the bare loop
    python benchmarks/step_time.py --methods all   # plus a row per entropy method
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.config import parse_config  # noqa: E402
from trainers.entropy.base import registered_interventions  # noqa: E402
from trainers.grpo import GRPOTrainer  # noqa: E402
from trainers.rollout import SamplingSettings  # noqa: E402


def bare_step(trainer: GRPOTrainer, step: int) -> float:
    """generate + (mini_batches x ppo_epochs) x (forward/backward + optimizer step), nothing else."""
    cfg = trainer.config
    started = time.perf_counter()
    problems = trainer._sample_problems(step)
    sampling = SamplingSettings(cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.top_k, cfg.rollout.max_new_tokens)
    rollout = trainer.engine.generate([p.prompt for p in problems], cfg.rollout.group_size, sampling)
    G, minis = cfg.rollout.group_size, cfg.train.mini_batches
    rows_per_mini = len(problems) * G // minis
    rewards = torch.randn(rollout.response_ids.shape[0])
    for _ in range(cfg.train.ppo_epochs):
        for mini in range(minis):
            rows = torch.arange(mini * rows_per_mini, (mini + 1) * rows_per_mini)
            part = rollout.select(rows)
            logits = trainer._response_logits(trainer.model, part)
            logp = torch.log_softmax(logits.float(), -1).gather(-1, part.response_ids[..., None]).squeeze(-1)
            loss = -(logp * part.response_mask * rewards[rows, None]).sum() / part.response_mask.sum()
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="run config YAML (default: examples/tiny_grpo.yaml)")
    parser.add_argument("--steps", type=int, default=15, help="measured steps per variant (after 2 warm-up steps)")
    parser.add_argument("--methods", default="", help="comma list of entropy methods, or 'all'")
    args = parser.parse_args()

    import yaml

    path = Path(args.config) if args.config else Path(__file__).resolve().parents[1] / "examples" / "tiny_grpo.yaml"
    base = yaml.safe_load(path.read_text())
    base.setdefault("train", {})["output_dir"] = "/tmp/entropy-sweeper-bench"
    methods = [m for m in registered_interventions() if m != "none"] if args.methods == "all" else \
        [m for m in args.methods.split(",") if m]

    def trainer_for(method: str) -> GRPOTrainer:
        data = {**base, "entropy": {**base.get("entropy", {}), "method": method}}
        return GRPOTrainer(parse_config(data))

    variants = {"grpo": trainer_for("none")}
    for method in methods:
        variants[method] = trainer_for(method)
    times: dict[str, list[float]] = {name: [] for name in variants}
    splits: dict[str, list[float]] = {"time/rollout": [], "time/train": [], "time/other": []}
    bare: list[float] = []
    for step in range(1, args.steps + 3):
        for name, trainer in variants.items():
            metrics = trainer.train_step(step)
            if step > 2:
                times[name].append(metrics["time/step"])
                if name == "grpo":
                    for key in splits:
                        splits[key].append(metrics[key])
        seconds = bare_step(variants["grpo"], step)
        if step > 2:
            bare.append(seconds)

    cfg = variants["grpo"].config
    med = statistics.median
    print(f"config: {path.name}  {cfg.rollout.prompts_per_step} prompts x {cfg.rollout.group_size} samples, "
          f"{cfg.train.ppo_epochs} epoch(s) x {cfg.train.mini_batches} mini-batches, {args.steps} measured steps")
    print(f"GRPO step      median {med(times['grpo']):.4f} s  (rollout {med(splits['time/rollout']):.4f}, "
          f"train {med(splits['time/train']):.4f}, other {med(splits['time/other']):.4f})")
    print(f"bare loop      median {med(bare):.4f} s")
    print(f"GRPO / bare    {med(times['grpo']) / med(bare):.3f}  (overhead {100 * (med(times['grpo']) / med(bare) - 1):+.1f}%, target <= +10%)")
    for method in methods:
        ratio = med(times[method]) / med(times["grpo"])
        print(f"{method:<18} median {med(times[method]):.4f} s  vs GRPO {ratio:.3f}  (overhead {100 * (ratio - 1):+.1f}%, target <= +5%)")


if __name__ == "__main__":
    main()
