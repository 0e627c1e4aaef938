"""One process of the loss-aggregation invariance test (tests/test_loss_aggregation.py).

``python tests/_agg_run.py OUT`` runs one GRPO step for every ``loss_agg`` and every micro-batch size in
:data:`MICRO_SIZES` on one process; under ``accelerate launch --num_processes 2`` the same on two. Each rank
saves, per (loss_agg, micro-batch size), the gradients of that step (data parallel has averaged them over the
processes) and the response-token count of each of its micro-batches. The rollouts are replayed from the
initial policy (``_dp_run.ReplayEngine``), so every process count sees the same 16 responses.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from _dp_run import ReplayEngine  # noqa: E402
from trainers.config import parse_config  # noqa: E402
from trainers.grpo import GRPOTrainer  # noqa: E402

LOSS_AGGS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
MICRO_SIZES = (None, 4, 2)   # None: the process's whole mini-batch (16 rows on one process, 8 on each of two)


def run_config(loss_agg: str, micro_batch_size: int | None, output_dir: Path) -> dict:
    return {
        "seed": 5,
        "model": {"path": "builtin:tiny-arith"},
        "data": {"synthetic": {"train_size": 200, "val_size": 8}},
        "rollout": {"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 6},
        "loss_agg": loss_agg,
        "kl": {"beta": 0.05},   # the KL term is aggregated with loss_agg too
        "train": {"steps": 1, "ppo_epochs": 1, "mini_batches": 1, "micro_batch_size": micro_batch_size,
                  "eval_at_start": False, "checkpoint_every": 0, "output_dir": str(output_dir)},
        "eval": {"num_prompts": 2, "n_samples": 2, "k": [1, 2]},
        "optim": {"lr": 1e-4},
    }


def main(out: Path) -> None:
    for loss_agg in LOSS_AGGS:
        for micro in MICRO_SIZES:
            trainer = GRPOTrainer(parse_config(run_config(loss_agg, micro, out / f"{loss_agg}-{micro}")))
            trainer.engine = ReplayEngine(trainer)
            counts: list[int] = []
            slice_loss = trainer._micro_batch_loss

            def counting(rollout, rows, batch, *args, **kwargs):
                counts.append(int(batch.response_mask[rows].sum()))
                return slice_loss(rollout, rows, batch, *args, **kwargs)

            trainer._micro_batch_loss = counting
            metrics = trainer.train_step(1)
            model = trainer.accelerator.unwrap_model(trainer.model)
            torch.save({"world": trainer.world, "loss": metrics["train/loss"], "pg_loss": metrics["train/pg_loss"],
                        "micro_tokens": counts,
                        "grads": {k: v.grad.detach().clone() for k, v in model.named_parameters() if v.grad is not None}},
                       out / f"w{trainer.world}-{loss_agg}-{micro}-rank{trainer.rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
