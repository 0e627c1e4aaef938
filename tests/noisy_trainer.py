"""A pure-Python stand-in for ``trainers.grpo.train`` whose validations look like real ones: n sampled
answers per validation prompt, per-prompt results, noise from the sampling and from the training seed.

Used by the statistics tests and ``benchmarks/pruning_quality.py``, where the truth must be known. The
model (all on the logit scale):

* prompt p has a difficulty ``d_p ~ N(3, 1.5)`` (fixed by ``data.synthetic.seed``: the same validation set
  for every trial; pass@1 ~0.1-0.2 and pass@8 ~0.5-0.7, away from the ceiling);
* the config's quality ``q = QUALITY_SCALE * (1 - 4 |clip.eps_high - 0.28|)`` (best at the clip-higher
  value 0.28, like tests/standin_trainer.py), reached as training goes: ``g(s) = 1 - exp(-s / 20)``;
* the training seed moves every prompt by a shift ``e ~ N(0, NOISY_SEED_SHIFT)`` and each prompt by its
  own ``e_p ~ N(0, NOISY_SEED_PROMPT)`` (env; defaults 0 and 0.5), both drawn from the run's ``seed``;
* ``eval.split: heldout`` validates the ``eval.num_prompts`` prompts after the first ``eval.heldout_offset`` (default
  ``eval.num_prompts``) of the same draws;
* sample i of prompt p at step s is correct when ``U_{p,i} < sigmoid(g(s) (q + e + e_p) - d_p)``, with
  ``U_{p,i}`` drawn from ``eval.seed`` alone: every trial validates with the same random numbers (as the
  real trainer does), so two trials are paired prompt by prompt.

It honours the trainer contract (reporter hooks, a validation at start, every ``train.eval_every`` steps
and at the last step; ``stop_reason()`` after each step) and writes nothing. Time per step:
``NOISY_STEP_SECONDS`` (env, default 0).
"""

from __future__ import annotations

import math
import os
import random
import time
from typing import Any, Sequence

from trainers.evaluation import evaluation_metrics, per_prompt_metrics, standard_errors
from trainers.reporting import MultiReporter

QUALITY_SCALE = 1.5


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def quality(config) -> float:
    return QUALITY_SCALE * (1.0 - 4.0 * abs(config.clip.eps_high - 0.28))


def validation(config, step: int) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, per-prompt record) of the validation at ``step``, as the trainer reports them."""
    prompts, n = config.eval.num_prompts, config.eval.n_samples
    # held-out prompts: the ones after the first `skip` of the same draws
    skip = (config.eval.heldout_offset or prompts) if config.eval.split == "heldout" else 0
    difficulty = random.Random(config.data.synthetic.seed)
    difficulties = [difficulty.gauss(3.0, 1.5) for _ in range(skip + prompts)][skip:]
    seed_rng = random.Random(1_000_003 * config.seed + 17)
    shift = seed_rng.gauss(0.0, float(os.environ.get("NOISY_SEED_SHIFT", "0")))
    prompt_noise = [seed_rng.gauss(0.0, float(os.environ.get("NOISY_SEED_PROMPT", "0.5"))) for _ in range(skip + prompts)][skip:]
    uniforms = random.Random(7_919 * config.eval.seed + 1)
    for _ in range(skip * n):
        uniforms.random()
    growth = 1.0 - math.exp(-step / 20.0)
    correct = []
    for p in range(prompts):
        probability = _sigmoid(growth * (quality(config) + shift + prompt_noise[p]) - difficulties[p])
        correct.append([uniforms.random() < probability for _ in range(n)])
    answers = [["right" if c else "wrong" for c in row] for row in correct]
    per_prompt = per_prompt_metrics(correct, answers, config.eval.k)
    metrics = {f"val/{k}": v for k, v in evaluation_metrics(correct, answers, config.eval.k).items()}
    metrics.update({f"val/{k}": v for k, v in standard_errors(per_prompt).items()})
    metrics["val/entropy"] = 1.0
    record = {"step": step, "n_samples": n, "k": list(config.eval.k), "eval_seed": config.eval.seed,
              "prompt_digest": f"noisy-{config.data.synthetic.seed}-{skip}-{prompts}",
              "correct": [sum(row) for row in correct],
              "per_prompt": per_prompt}
    return metrics, record


def train(config, reporters: Sequence[Any] = ()) -> dict[str, Any]:
    reporter = MultiReporter(list(reporters))
    step_seconds = float(os.environ.get("NOISY_STEP_SECONDS", "0"))
    reporter.on_start({"config": config.model_dump(mode="json"), "output_dir": config.train.output_dir,
                       "resumed_from_step": 0, "num_processes": 1})
    last_validation: dict[str, float] = {}
    stop = None
    step = 0
    if config.train.eval_at_start:
        last_validation, record = validation(config, 0)
        reporter.on_validation(0, last_validation, record)
        stop = reporter.stop_reason()
    while stop is None and step < config.train.steps:
        time.sleep(step_seconds)
        step += 1
        reporter.on_train_step(step, {"train/loss": 0.1, "train/entropy": 1.0, "time/step": step_seconds})
        if step % config.train.eval_every == 0 or step == config.train.steps:
            last_validation, record = validation(config, step)
            reporter.on_validation(step, last_validation, record)
        stop = reporter.stop_reason()
    summary = {"status": "completed" if stop is None else "stopped", "step": step, "stop_reason": stop,
               "last_validation": last_validation, "output_dir": config.train.output_dir}
    reporter.on_end(summary)
    return summary
