"""A tiny pure-Python stand-in for ``trainers.grpo.train``, for sweeper tests that must steer metrics.

It honours the trainer contract (``train(config, reporters) -> summary``; reporter hooks in the
same order; ``stop_reason()`` asked after each step; a validation at start, every
``train.eval_every`` steps and at the last step) but computes its metrics from closed forms driven
by the ordinary RunConfig fields, so any config the sweeper samples is a valid RunConfig:

* ``train/entropy`` and ``val/entropy`` (first value 1.0) by ``entropy.method``:
  ``none`` collapses (x 0.8 per step); ``entropy_bonus`` grows by ``100 * entropy.bonus.coef``
  per step (explodes for coef >= 1e-2, stays near 1 for 1e-4); every other method stays near 1.
* ``val/pass@K``: ``q * (1 - exp(-step / 10)) + 0.05`` with quality
  ``q = clip(1 - 4 |clip.eps_high - 0.28|, 0, 1)`` (best at the clip-higher value 0.28);
  ``val/pass@1`` is half of it.
* ``train/loss`` becomes NaN from step 3 when ``optim.lr >= 0.5``.
* ``model.path: "standin:crash"`` raises after step 2 (a Python failure with a traceback);
  ``model.path: "standin:die"`` SIGKILLs its own process after step 2 (no outcome, like an OOM kill).

Wall time per step: ``STANDIN_STEP_SECONDS`` (env, default 0.01). ``STANDIN_START_SECONDS`` (env,
default 0) is slept before the first report, like a model load. With ``STANDIN_RELEASE_FILE`` set, a
trial whose ``seed`` is 1 holds before its first step until that file exists (order tests without timing).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from typing import Any, Sequence

from trainers.reporting import MultiReporter


def entropy_at(config, step: int) -> float:
    method = config.entropy.method
    if method == "none":
        return 0.8 ** step
    if method == "entropy_bonus":
        return 1.0 + 100.0 * config.entropy.bonus.coef * step
    return 1.0 - 0.002 * step


def pass_at(config, step: int) -> float:
    quality = min(1.0, max(0.0, 1.0 - 4.0 * abs(config.clip.eps_high - 0.28)))
    return quality * (1.0 - math.exp(-step / 10.0)) + 0.05


def train(config, reporters: Sequence[Any] = ()) -> dict[str, Any]:
    reporter = MultiReporter(list(reporters))
    step_seconds = float(os.environ.get("STANDIN_STEP_SECONDS", "0.01"))
    time.sleep(float(os.environ.get("STANDIN_START_SECONDS", "0")))
    reporter.on_start({"config": config.model_dump(mode="json"), "output_dir": config.train.output_dir,
                       "resumed_from_step": 0, "num_processes": 1})
    ks = config.eval.k

    def validate(step: int) -> dict[str, float]:
        p = pass_at(config, step)
        metrics = {f"val/pass@{k}": (p if k == max(ks) else 0.5 * p) for k in ks}
        metrics["val/entropy"] = entropy_at(config, step)
        reporter.on_validation(step, metrics)
        return metrics

    last_validation: dict[str, float] = {}
    stop = None
    step = 0
    if config.train.eval_at_start:
        last_validation = validate(0)
        stop = reporter.stop_reason()
    release = os.environ.get("STANDIN_RELEASE_FILE")
    if release and config.seed == 1:
        while not os.path.exists(release):
            time.sleep(0.05)
    while stop is None and step < config.train.steps:
        time.sleep(step_seconds)
        step += 1
        if step == 3 and config.model.path in ("standin:crash", "standin:die"):
            print(f"standin: simulated failure at step {step}", file=sys.stderr, flush=True)
            if config.model.path == "standin:die":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("standin: simulated crash at step 3")
        loss = math.nan if config.optim.lr >= 0.5 and step >= 3 else 0.1 / step
        reporter.on_train_step(step, {"train/loss": loss, "train/entropy": entropy_at(config, step),
                                      "train/reward_mean": pass_at(config, step), "time/step": step_seconds})
        if step % config.train.eval_every == 0 or step == config.train.steps:
            last_validation = validate(step)
        stop = reporter.stop_reason()
    summary = {"status": "completed" if stop is None else "stopped", "step": step, "stop_reason": stop,
               "last_validation": last_validation, "output_dir": config.train.output_dir}
    reporter.on_end(summary)
    return summary
