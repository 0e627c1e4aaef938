"""The validation every engine runs: pass@k, maj@k, mean@k and entropy on the run's fixed, seeded prompts.

:func:`validate_policy` is the one implementation: the native trainer (``trainers.grpo.GRPOTrainer.evaluate``) and
the TRL engine (``trainers.engines.trl``) call it on their policy, so a trial's validation is the same prompts,
the same seeds and the same per-prompt record whichever engine trained it. :func:`validation_or_step0` reuses the
step-0 validation kept in ``eval.step0_cache`` (``trainers.validation_cache``).

The prompts are cut into chunks of ``EVAL_PROMPTS_PER_CALL // n`` prompts; chunk c is sampled with seed
``step_seed(eval.seed, 0, 0, salt=c)`` by rank ``c % world``. So a prompt's samples depend on the policy, the
prompt set, ``eval.n_samples`` and ``eval.seed`` only: not on the run's seed, the step, the engine or the number
of processes. Runs and trials compared on these prompts share their random numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Callable, Sequence

import torch

from .entropy.ops import token_entropy
from .forward import response_logits
from .rollout import SamplingSettings
from .setup import step_seed

EVAL_PROMPTS_PER_CALL = 256  # validation sequences (prompts x n) per generate call, at least one prompt


def prompt_digest(problems: Sequence[Any]) -> str:
    """A short hash of the validation prompts and answers, in order: equal digests = the same prompts."""
    digest = hashlib.sha1()
    for problem in problems:
        digest.update(f"{problem.prompt}\x1f{problem.answer}\x1e".encode())
    return digest.hexdigest()[:16]


@torch.no_grad()
def token_entropies(
    model,
    rollout,
    temperature: float,
    rows_per_forward: int,
    chunk_size: int,
    device,
    autocast: Callable[[], Any] = contextlib.nullcontext,
) -> torch.Tensor:
    """Full-vocabulary entropy at each response position [B, T], ``rows_per_forward`` sequences per forward."""
    pieces = []
    for start in range(0, rollout.response_ids.shape[0], rows_per_forward):
        rows = torch.arange(start, min(start + rows_per_forward, rollout.response_ids.shape[0]))
        with autocast():
            logits = response_logits(model, rollout.select(rows), device, temperature)
        pieces.append(token_entropy(logits, chunk_size))
        del logits
    return torch.cat(pieces)


@torch.no_grad()
def validate_policy(
    config: Any,
    policy,
    engine,
    problems: Sequence[Any],
    reward_fn: Callable[[str, str], float],
    step: int,
    *,
    device,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    rank: int = 0,
    world: int = 1,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Validate ``policy`` (sampled through the rollout ``engine``) on ``problems``: ``(metrics, per_prompt record)``
    with the metrics under ``val/`` (see the module docstring for the seeds)."""
    from .evaluation import evaluation_metrics, per_prompt_metrics, standard_errors
    from .rewards import get_extractor

    cfg = config
    n = cfg.eval.n_samples
    per_call = max(1, EVAL_PROMPTS_PER_CALL // n)
    chunks = [range(start, min(start + per_call, len(problems))) for start in range(0, len(problems), per_call)]
    extract_answer = get_extractor(cfg.data.reward)
    local: list[
        tuple[int, list[bool], list[str | None], float, float]
    ] = []  # prompt, correct, answers, entropy sum, tokens
    for chunk_index in range(rank, len(chunks), world):
        indices = chunks[chunk_index]
        batch = [problems[i] for i in indices]
        sampling = SamplingSettings(
            cfg.eval.temperature,
            cfg.eval.top_p,
            0,
            cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens,
            seed=step_seed(cfg.eval.seed, 0, 0, salt=chunk_index),
        )
        with autocast():
            rollout = engine.generate([p.prompt for p in batch], n, sampling)
        # one forward per train.micro_batch_size sequences, as in training (None: the whole chunk at once)
        entropy = token_entropies(
            policy,
            rollout,
            cfg.eval.temperature,
            cfg.train.micro_batch_size or rollout.response_ids.shape[0],
            cfg.entropy.chunk_size,
            device,
            autocast,
        )
        mask = rollout.response_mask.float().to(entropy.device)
        entropy_sums, token_counts = (
            (entropy * mask).sum(-1).reshape(-1, n).sum(-1),
            mask.sum(-1).reshape(-1, n).sum(-1),
        )
        for i, (index, problem) in enumerate(zip(indices, batch)):
            completions = rollout.completions[i * n : (i + 1) * n]
            local.append(
                (
                    index,
                    [reward_fn(c, problem.answer) > 0 for c in completions],
                    [extract_answer(c) for c in completions],
                    float(entropy_sums[i]),
                    float(token_counts[i]),
                )
            )
    if world > 1:
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, local)
        local = [row for rows in gathered for row in rows]
    rows = sorted(local)
    correct, answers = [row[1] for row in rows], [row[2] for row in rows]
    entropy_sum, tokens = sum(row[3] for row in rows), sum(row[4] for row in rows)
    per_prompt = per_prompt_metrics(correct, answers, cfg.eval.k) if rows else {}
    metrics = (
        {f"val/{key}": value for key, value in evaluation_metrics(correct, answers, cfg.eval.k).items()} if rows else {}
    )
    metrics.update({f"val/{key}": value for key, value in standard_errors(per_prompt).items()})
    metrics["val/entropy"] = entropy_sum / max(tokens, 1.0)
    per_prompt["entropy"] = [row[3] / max(row[4], 1.0) for row in rows]
    record = {
        "step": step,
        "n_samples": n,
        "k": list(cfg.eval.k),
        "eval_seed": cfg.eval.seed,
        "prompt_digest": prompt_digest(problems),
        "correct": [sum(row[1]) for row in rows],
        "per_prompt": {key: [round(v, 6) for v in values] for key, values in per_prompt.items()},
    }
    return metrics, record


def validation_or_step0(
    config: Any,
    step: int,
    model_path: str,
    problems: Sequence[Any],
    evaluate: Callable[[], tuple[dict[str, float], dict[str, Any]]],
    *,
    is_main: bool = True,
    share: Callable[[Any], Any] = lambda value: value,
) -> tuple[dict[str, float], dict[str, Any]]:
    """``evaluate()``, or at step 0 with ``eval.step0_cache`` the cached step-0 validation of this model and validation
    (written there by the first run that computes it). ``share``: hands rank 0's cache read to every rank."""
    from .validation_cache import read_step0, step0_key, write_step0

    cache = config.eval.step0_cache if step == 0 else None
    if cache:
        key = step0_key(config, model_path)
        cached = share(read_step0(cache, key, prompt_digest(problems)) if is_main else None)
        if cached is not None:
            return dict(cached["metrics"]), {**cached["per_prompt"], "step": 0}
    metrics, per_prompt = evaluate()
    if cache and is_main:
        write_step0(cache, key, metrics, per_prompt)
    return metrics, per_prompt
