"""Peak memory of the trainer's passes at a real vocabulary and response length, against the README's bound.

A Llama with Qwen's vocabulary (151,936 tokens) and a tiny hidden size (64, 2 layers), one sequence of
64 prompt + 3,072 response tokens, SIREN (its nucleus entropy with grad is the heaviest hook), a KL
reference model, ``entropy.chunk_size`` 1024, compute dtype bfloat16 (``--dtype`` to change). The model is
small, so what each pass costs is almost entirely its logit blocks. Each pass runs through the trainer's
own code (``GRPOTrainer``'s old-policy pass, reference pass, evaluation entropies, and one training
micro-batch: forward, SIREN's loss, backward) and is measured as the rise of the process's peak resident
memory (``VmHWM``, reset through ``/proc/self/clear_refs`` before each pass) over its memory before.

The bound each pass is held to (README, "Memory at scale"), with n = b x T response positions,
L = n x V x (bytes of the compute dtype) the logits of one forward and F = C x V x 4 bytes one float32
block of ``chunk_size`` C positions:

    no-grad pass (old policy, reference, evaluation):  L + 4 F
    training micro-batch (forward and backward):        3 L + 4 F + parameter gradients

Run: ``python benchmarks/memory_scale.py [--dtype bfloat16|float32] [--response-tokens 3072] [--chunk-size 1024]``
(about 5 GB of memory at the defaults; Linux only). Not a test: it prints the figures and the ratios.

``--memory-options``: instead, the options that bound the rest (README, "Memory at scale"), on a model whose
activations and KV cache matter (small vocabulary, hidden 512, 8 layers), each in a fresh process: a training
micro-batch (4 x 512 tokens) with and without ``train.gradient_checkpointing``; HF generation (16 sequences x
128 new tokens) with ``rollout.generation_batch_size`` None (one call) and 4; the bytes ``kl.ref_offload``
keeps off the device (the reference's weights).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VOCAB = 151_936
PROMPT_TOKENS = 64
MIB = 2 ** 20


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def measure(name: str, run):
    """(result, peak rise in bytes, seconds): the peak resident memory during ``run()`` above the memory before."""
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")   # resets VmHWM to the current VmRSS
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    peak = _status_kib("VmHWM")
    return result, (peak - before) * 1024, seconds


def build_model_folder(folder: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainers.config import resolve_model_path

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=32,
                         max_position_embeddings=PROMPT_TOKENS + 8192, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer_source = Path(resolve_model_path("builtin:tiny-arith"))
    for file in tokenizer_source.iterdir():   # a tokenizer for pad/eos ids only: nothing is generated
        if "token" in file.name:
            shutil.copy(file, folder / file.name)


OPTION_VARIANTS = ("train-plain", "train-checkpointing", "generate-one-call", "generate-batches-of-4")


def memory_options(dtype: str) -> None:
    """Each variant in a fresh process (a process's peak resident memory never falls back, so variants measured
    one after the other in one process would hide each other's peaks); printed with their ratios."""
    import subprocess

    results = {}
    for variant in OPTION_VARIANTS:
        done = subprocess.run([sys.executable, __file__, "--dtype", dtype, "--memory-option-variant", variant],
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            sys.exit(done.stderr[-2000:])
        peak, seconds, reference = (float(x) for x in done.stdout.strip().splitlines()[-1].split())
        results[variant] = (peak, seconds)
    print(f"activation-heavy model (hidden 512, 8 layers, vocabulary 4096), {dtype}; each row a fresh process")
    print("| pass | peak rise (MiB) | s |")
    print("|---|---|---|")
    for variant, (peak, seconds) in results.items():
        print(f"| {variant} | {peak / MIB:,.0f} | {seconds:.1f} |")
    print(f"checkpointing / plain training micro-batch (4 x 512 tokens): peak "
          f"{results['train-checkpointing'][0] / results['train-plain'][0]:.2f}, time "
          f"{results['train-checkpointing'][1] / results['train-plain'][1]:.2f}")
    print(f"generation in batches of 4 / in one call (16 sequences x 128 new tokens): peak "
          f"{results['generate-batches-of-4'][0] / results['generate-one-call'][0]:.2f}")
    print(f"kl.ref_offload keeps the reference's {reference / MIB:,.0f} MiB of weights off the device between its passes")


def memory_option_variant(dtype: str, variant: str) -> None:
    """One variant of ``memory_options``; prints ``peak_bytes seconds reference_bytes``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainers.config import parse_config, resolve_model_path
    from trainers.grpo import GRPOTrainer
    from trainers.rollout import HFRolloutEngine, Rollout, SamplingSettings

    folder = Path(tempfile.mkdtemp(prefix="memory_options_"))
    try:
        config = LlamaConfig(vocab_size=4096, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                             num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=4096,
                             bos_token_id=1, eos_token_id=2, pad_token_id=0)
        LlamaForCausalLM(config).save_pretrained(folder)
        for file in Path(resolve_model_path("builtin:tiny-arith")).iterdir():
            if "token" in file.name:
                shutil.copy(file, folder / file.name)
        T, rows = 512, 4
        trainer = GRPOTrainer(parse_config({
            "model": {"path": str(folder), "dtype": dtype},
            "data": {"synthetic": {"train_size": 16, "val_size": 4}},
            "rollout": {"prompts_per_step": 1, "group_size": rows, "max_new_tokens": T,
                        "generation_batch_size": 4 if variant == "generate-batches-of-4" else None},
            "train": {"mini_batches": 1, "micro_batch_size": rows, "gradient_checkpointing": variant == "train-checkpointing",
                      "output_dir": str(folder / "run")},
            "eval": {"n_samples": 1, "k": [1]}, "kl": {"beta": 0.01, "ref_offload": True}}))
        reference = sum(p.numel() * p.element_size() for p in trainer.ref_model.parameters())
        torch.manual_seed(0)
        if variant.startswith("train"):
            rollout = Rollout(prompt_ids=torch.randint(3, 4096, (rows, 32)), prompt_mask=torch.ones(rows, 32, dtype=torch.long),
                              response_ids=torch.randint(3, 4096, (rows, T)), response_mask=torch.ones(rows, T, dtype=torch.long),
                              completions=[""] * rows)

            def run():
                logits, logp = trainer._forward(rollout)
                logp.sum().backward()
        else:
            def run():
                with trainer.autocast():
                    trainer.engine.generate(["1+1=", "2+2=", "3+3=", "4+4="], 4, SamplingSettings(max_new_tokens=128, seed=0))
        _, peak, seconds = measure(variant, run)
        print(peak, seconds, reference)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--response-tokens", type=int, default=3072)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--memory-options", action="store_true",
                        help="measure gradient checkpointing and generation batches instead (see the docstring)")
    parser.add_argument("--memory-option-variant", choices=OPTION_VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not Path("/proc/self/clear_refs").exists():
        sys.exit("needs Linux /proc (VmHWM and clear_refs) to measure peak memory")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    if args.memory_option_variant:
        memory_option_variant(args.dtype, args.memory_option_variant)
        return
    if args.memory_options:
        memory_options(args.dtype)
        return

    import torch

    from trainers.config import parse_config
    from trainers.grpo import GRPOTrainer
    from trainers.rollout import Rollout

    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp(prefix="memory_scale_"))
    try:
        build_model_folder(folder)
        T = args.response_tokens
        config = parse_config({
            "model": {"path": str(folder), "dtype": args.dtype},
            "data": {"synthetic": {"train_size": 16, "val_size": 4}},
            "rollout": {"prompts_per_step": 1, "group_size": 1, "max_new_tokens": T},
            "train": {"mini_batches": 1, "micro_batch_size": 1, "output_dir": str(folder / "run")},
            "eval": {"n_samples": 1, "k": [1]},
            "kl": {"beta": 0.01},
            "entropy": {"method": "siren", "chunk_size": args.chunk_size},
        })
        trainer = GRPOTrainer(config)
        device = trainer.accelerator.device
        rollout = Rollout(prompt_ids=torch.randint(3, VOCAB, (1, PROMPT_TOKENS)),
                          prompt_mask=torch.ones(1, PROMPT_TOKENS, dtype=torch.long),
                          response_ids=torch.randint(3, VOCAB, (1, T)),
                          response_mask=torch.ones(1, T, dtype=torch.long), completions=[""])
        response_ids, response_mask = rollout.response_ids.to(device), rollout.response_mask.float().to(device)
        policy = trainer.accelerator.unwrap_model(trainer.model)
        rows = torch.arange(1)

        old, old_peak, old_s = measure("old policy", lambda: trainer._old_policy_pass(rollout, response_ids, response_mask, 1))
        ref_logp, ref_peak, ref_s = measure("reference", lambda: trainer._reference_logprobs(rollout, response_ids, 1))
        _, eval_peak, eval_s = measure("evaluation", lambda: trainer._token_entropies(policy, rollout, 1.0, 1))

        from trainers.algorithms import compute_advantages
        from trainers.entropy import StepBatch

        old_logp, old_entropy, old_features = old
        rewards = torch.ones(1)
        batch = StepBatch(step=1, response_mask=response_mask, old_logp=old_logp, old_entropy=old_entropy,
                          advantages=compute_advantages("grpo", rewards, 1).to(device) + 1.0, rewards=rewards,
                          group_index=torch.zeros(1, dtype=torch.long), group_accuracy=rewards, old_features=old_features)
        trainer.intervention.begin_step(batch)

        def train_micro_batch():
            loss, _ = trainer._micro_batch_loss(rollout, rows, batch, ref_logp, 1)
            loss.backward()
            return float(loss.detach())

        _, train_peak, train_s = measure("training", train_micro_batch)

        itemsize = torch.empty((), dtype=getattr(torch, args.dtype)).element_size()
        logits = T * VOCAB * itemsize
        block = min(args.chunk_size, T) * VOCAB * 4
        param_grads = sum(p.numel() * p.element_size() for p in trainer.model.parameters())
        rows_out = [
            ("old-policy pass (no grad, + SIREN feature)", old_peak, logits + 4 * block, old_s),
            ("reference pass (no grad)", ref_peak, logits + 4 * block, ref_s),
            ("evaluation entropies (no grad)", eval_peak, logits + 4 * block, eval_s),
            ("training micro-batch with SIREN (fwd + bwd)", train_peak, 3 * logits + 4 * block + param_grads, train_s),
        ]
        print(f"vocabulary {VOCAB:,}, {T:,} response tokens (+{PROMPT_TOKENS} prompt), 1 sequence per forward, "
              f"compute dtype {args.dtype}, chunk_size {args.chunk_size}; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads")
        print(f"L (logits of one forward) = {logits / MIB:,.0f} MiB, F (one float32 chunk block) = {block / MIB:,.0f} MiB, "
              f"parameter gradients = {param_grads / MIB:,.0f} MiB")
        print("| pass | peak rise (MiB) | bound (MiB) | peak / bound | s |")
        print("|---|---|---|---|---|")
        for name, peak, bound, seconds in rows_out:
            print(f"| {name} | {peak / MIB:,.0f} | {bound / MIB:,.0f} | {peak / bound:.2f} | {seconds:.1f} |")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
