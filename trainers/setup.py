"""Setting up a run: the accelerator, the policy (float32 master weights), the learning-rate schedule,
the per-(step, rank) seeds and the checks that the step batch splits evenly over processes, mini-batches
and micro-batches. ``trainers/grpo.py`` builds the trainer from these."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from .config import ConfigError, RunConfig, micro_batch_size_error, resolve_model_path


def make_accelerator(config: RunConfig):
    """An Accelerator that really is distributed on CPU-only machines too.

    A plain ``Accelerator()`` without CUDA silently runs every rank alone (DistributedType.NO);
    ``cpu=True`` forms the gloo group. We check the world size against the launcher's.
    """
    from accelerate import Accelerator

    on_cpu = not torch.cuda.is_available()
    # mixed_precision "no": the trainer keeps float32 master weights and autocasts its forwards itself
    # (GRPOTrainer.autocast), so logits stay in the compute dtype (accelerate's bf16 mode would also cast every
    # forward's output to float32: a full-vocabulary float32 copy). step_scheduler_with_optimizer=False: the
    # scheduler steps once per rollout step on every rank (accelerate would step it num_processes times).
    accelerator = Accelerator(cpu=on_cpu, mixed_precision="no", step_scheduler_with_optimizer=False)
    expected = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != expected:
        raise RuntimeError(
            f"accelerate formed {accelerator.num_processes} process(es) but WORLD_SIZE is {expected}: on a CPU machine "
            "launch with `accelerate launch --multi_gpu --num_processes N` and ACCELERATE_USE_CPU=true, or torchrun")
    if on_cpu and "OMP_NUM_THREADS" not in os.environ:
        # Without this each rank takes every core: oversubscribed OpenMP spins and runs several times slower.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(accelerator.num_processes)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    return accelerator


COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_policy(config: RunConfig):
    """Tokenizer, model and resolved path. The weights are float32 whatever ``model.dtype`` says: they are the
    optimizer's master weights (AdamW steps of lr 1e-6 on bf16 weights of size ~0.02 round away entirely);
    ``model.dtype`` is the compute dtype the trainer autocasts its forward passes to."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(config.model.path)
    if path.startswith(("/", "./", "../", "~")) and not Path(path).expanduser().exists():
        raise ConfigError(f"model.path: folder {path!r} does not exist; give a local model folder, a hub id, or 'builtin:tiny-arith'")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=config.model.trust_remote_code)
    except OSError as error:
        raise ConfigError(f"model.path: cannot load a tokenizer from {path!r} ({error.__class__.__name__}: {str(error).splitlines()[0]})") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, trust_remote_code=config.model.trust_remote_code)
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model, path


def enable_gradient_checkpointing(model) -> None:
    """``train.gradient_checkpointing``: HF's (non-reentrant) layer checkpointing, with dropout off everywhere.

    HF checkpoints a layer only while the model is in training mode, and the trainer keeps the policy in eval
    mode (no dropout: the old-policy pass and the update must compute one function); so the training forward
    switches to training mode for its pass (``GRPOTrainer._forward``), and the dropout it would switch on is
    zeroed here (``nn.Dropout`` modules and the attention modules' ``attention_dropout``, TRL's
    ``disable_dropout_in_model``)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"train.gradient_checkpointing: {type(model).__name__} does not support HF gradient "
                          "checkpointing; set train.gradient_checkpointing: false")
    # transformers >= 5.2x names it activation checkpointing (the old name warns); earlier: gradient checkpointing
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def make_lr_lambda(config: RunConfig):
    """Multiplier of optim.lr per rollout step (the scheduler steps once per rollout step, as verl's)."""
    warmup, total, floor = config.optim.warmup_steps, config.train.steps, config.optim.min_lr_ratio
    schedule = config.optim.schedule

    def lr_lambda(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return lr_lambda


def check_batch_shape(config: RunConfig, processes: int) -> None:
    """The step batch splits into whole groups per process, mini-batch and equal micro-batches."""
    prompts, minis = config.rollout.prompts_per_step, config.train.mini_batches
    if prompts % processes or (prompts // processes) % minis:
        raise ConfigError(
            f"rollout.prompts_per_step ({prompts}) must split evenly over {processes} process(es) and then into "
            f"train.mini_batches ({minis}) per process")
    error = micro_batch_size_error(config, processes)
    if error:
        raise ConfigError(error)


def step_seed(seed: int, step: int, rank: int, salt: int = 0) -> int:
    """A seed per (run, step, rank): a resumed run draws exactly the samples the first run would have."""
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729 + salt) % (2**63 - 1)
