"""One process of the 2-process vLLM test (tests/test_vllm_data_parallel.py): under ``accelerate launch
--num_processes 2`` each rank trains 2 GRPO steps with its own colocated vLLM engine (external launcher) and
saves its weights, the step metrics and the first rollout's prompts."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from conftest import vllm_run_config  # noqa: E402
from trainers.config import parse_config  # noqa: E402
from trainers.grpo import GRPOTrainer  # noqa: E402


def main(out: Path) -> None:
    config = parse_config(vllm_run_config(out / "run", rollout={"prompts_per_step": 4, "group_size": 4},
                                          train={"steps": 2, "mini_batches": 1, "eval_at_start": False, "eval_every": 100,
                                                 "checkpoint_every": 0}))
    trainer = GRPOTrainer(config)
    prompts = []
    generate = trainer.engine.generate
    trainer.engine.generate = lambda batch, n, sampling: prompts.append(list(batch)) or generate(batch, n, sampling)
    metrics = [trainer.train_step(step) for step in (1, 2)]
    model = trainer.accelerator.unwrap_model(trainer.model)
    torch.save({"world": trainer.world, "backend": trainer.engine.llm.llm_engine.vllm_config.parallel_config.distributed_executor_backend,
                "metrics": metrics, "prompts": prompts,
                "weights": {k: v.detach().clone() for k, v in model.named_parameters()}},
               out / f"rank{trainer.rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
