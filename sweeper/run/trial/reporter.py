"""The trial's reporter: it feeds Optuna from the trainer's reports and decides when to stop.

:class:`TrialReporter` keeps every metric's history (the pure input of the health rules), and at each
validation the objective's value and its per-prompt values. For the replicate that reports to Optuna it
stores the per-prompt values of the first objective as the trial user attr ``per_prompt/<step>`` (what the
paired pruner compares), reports the value as the intermediate value at that step and asks the pruner.
A verdict (pruner or health rule) makes ``stop_reason()`` return ``"pruned:<reason>"``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from trainers.reporting import METRICS_FILE, PER_PROMPT_FILE, read_metrics, read_per_prompt

from sweeper.contract import STOP_PREFIX, Outcome, per_prompt_attr
from sweeper.study.pruning import Verdict, first_verdict
from sweeper.statistics import ObjectiveRule


def prompt_values(per_prompt: Mapping[str, Any] | None, metric: str) -> list[float] | None:
    """The per-prompt values of a validation metric (``val/pass@8`` -> its ``pass@8`` column) in a
    validation's per-prompt record, or None when the record has none for it."""
    values = ((per_prompt or {}).get("per_prompt") or {}).get(metric.removeprefix("val/"))
    return [float(v) for v in values] if values else None


class TrialReporter:
    """Feeds Optuna from the trainer's reports and decides when to stop (a duck-typed Reporter)."""

    def __init__(
        self,
        trial: Any,
        objectives: Sequence[Mapping[str, Any]],
        rules: Sequence[Any],
        *,
        use_pruner: bool,
        report_intermediate: bool,
        pruner_name: str = "",
        seed: int | None = None,
        look: Any = None,
    ):
        self.trial = trial
        self.objectives = [o if isinstance(o, ObjectiveRule) else ObjectiveRule.from_section(o) for o in objectives]
        self.rules = list(rules)
        self.use_pruner = use_pruner
        self.report_intermediate = report_intermediate
        self.pruner_name = pruner_name
        self.seed = seed      # set: each validation's value goes to the trial attr seed_curve/<seed>
        self.look = look      # look(step) -> a message to stop with, or None (the futility pruner's validation looks)
        self.history: dict[str, list[float]] = defaultdict(list)
        self.objective_values: list[list[float]] = [[] for _ in self.objectives]
        self.objective_vectors: list[list[list[float] | None]] = [[] for _ in self.objectives]  # per-prompt values
        self.objective_steps: list[int] = []
        self.verdict: Verdict | None = None
        self.verdict_step: int | None = None
        self.last_step = 0
        self.summary: Mapping[str, Any] | None = None
        self.num_processes = 1
        self.resumed_from_step = 0
        self._storage_warned = False

    # ---- Reporter hooks
    def on_start(self, run_info: Mapping[str, Any]) -> None:
        self.last_step = int(run_info.get("resumed_from_step") or 0)
        self.resumed_from_step = self.last_step
        self.num_processes = int(run_info.get("num_processes") or 1)
        if self.last_step and run_info.get("output_dir"):
            self._replay(Path(run_info["output_dir"]), self.last_step)

    def _replay(self, output_dir: Path, up_to_step: int) -> None:
        """A resumed run (requeued job) continues this trial: rebuild the metric histories and the
        objective's validation values (and per-prompt values) from the run's files (the trainer has cut
        them at the checkpoint's step), so health rules and aggregation see the whole trial. Optuna
        already holds the intermediate values of those steps: nothing is reported again."""
        metrics_file = output_dir / METRICS_FILE
        if not metrics_file.exists():
            return
        per_prompt = {record["step"]: record for record in read_per_prompt(output_dir / PER_PROMPT_FILE)}
        for record in read_metrics(metrics_file):
            step = int(record.get("step", 0))
            if step > up_to_step:
                continue
            metrics = {k: v for k, v in record.items() if k not in ("kind", "step", "time")}
            self._record(metrics)
            if record.get("kind") == "val" and step > 0:  # step 0 is not an objective value (see on_validation)
                self._record_objectives(step, metrics, per_prompt.get(step))

    def on_train_step(self, step: int, metrics: Mapping[str, float]) -> None:
        self.last_step = step
        self._record(metrics)
        self._judge(step)

    def on_validation(self, step: int, metrics: Mapping[str, float], per_prompt: Mapping[str, Any] | None = None) -> None:
        self.last_step = step
        self._record(metrics)
        if step == 0:
            # The untrained base model: the same score for every trial, so it says nothing about the trial's
            # config. Reported, it would be every trial's best value on a collapsing curve, and Optuna's
            # median/percentile pruners (which compare a trial's best-so-far) could never prune. It still
            # feeds the health rules above (their initial entropy).
            self._judge(step)
            return
        self._record_objectives(step, metrics, per_prompt)
        self._judge(step)
        self._seed_look(step)
        if self.verdict is not None or not self.report_intermediate:
            return
        value = self.objective_values[0][-1]
        if not math.isfinite(value):
            return
        try:
            vector = self.objective_vectors[0][-1]
            if vector is not None:
                self.trial.set_user_attr(per_prompt_attr(step), vector)  # before should_prune: the paired pruner reads it
            self.trial.report(value, step)
            if self.use_pruner and self.trial.should_prune():
                metric = self.objectives[0].metric
                pruner = self.trial.study.pruner
                explain = getattr(pruner, "explain", None)  # a pruner that can say why (the paired pruner) is asked
                why = f": {explain()}" if callable(explain) else ""
                self._stop(Verdict("pass@k", f"the {self.pruner_name} pruner stopped it at step {step} ({metric} = {value:.4g}){why}"), step)
        except Exception as error:  # noqa: BLE001 - a storage hiccup must not kill the training
            if not self._storage_warned:
                warnings.warn(f"could not report to the Optuna storage ({type(error).__name__}: {error}); training goes on without pruning")
                self._storage_warned = True

    def _seed_look(self, step: int) -> None:
        """Store this seed's curve (every seed's, not only the first: racing and replays read them), then ask
        the validation look, if any."""
        if self.seed is None or self.verdict is not None:
            return
        try:
            from sweeper.contract import seed_curve_attr

            curve = {str(s): v for s, v in zip(self.objective_steps, self.objective_values[0]) if math.isfinite(v)}
            self.trial.set_user_attr(seed_curve_attr(self.seed), curve)
            message = self.look(step) if self.look is not None else None
        except Exception as error:  # noqa: BLE001 - a storage hiccup must not kill the training
            if not self._storage_warned:
                warnings.warn(f"could not record the seed curve ({type(error).__name__}: {error}); training goes on")
                self._storage_warned = True
            return
        if message:
            self._stop(Verdict("futility", message), step)

    def stop_reason(self) -> str | None:
        return f"{STOP_PREFIX}{self.verdict.reason}" if self.verdict else None

    def on_end(self, summary: Mapping[str, Any]) -> None:
        self.summary = dict(summary)

    # ---- internals
    def _record(self, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            try:
                self.history[name].append(float(value))
            except (TypeError, ValueError):
                continue

    def _record_objectives(self, step: int, metrics: Mapping[str, float], per_prompt: Mapping[str, Any] | None) -> None:
        self.objective_steps.append(step)
        for i, objective in enumerate(self.objectives):
            value = metrics.get(objective.metric)
            self.objective_values[i].append(float(value) if value is not None else math.nan)
            self.objective_vectors[i].append(prompt_values(per_prompt, objective.metric))

    def _judge(self, step: int) -> None:
        if self.verdict is None:
            verdict = first_verdict(self.rules, self.history)
            if verdict is not None:
                self._stop(verdict, step)

    def _stop(self, verdict: Verdict, step: int) -> None:
        self.verdict = verdict
        self.verdict_step = step
        print(f"[sweeper] trial {getattr(self.trial, 'number', '?')} pruned at step {step}: {verdict.reason}: {verdict.message}", flush=True)

    def _per_prompt(self) -> list[list[float] | None]:
        """Each objective's per-prompt values, aggregated over the validations like its value (None when a
        validation had no per-prompt record for it)."""
        out: list[list[float] | None] = []
        for objective, vectors in zip(self.objectives, self.objective_vectors):
            complete = bool(vectors) and all(v is not None for v in vectors) and len({len(v) for v in vectors}) == 1
            out.append(objective.per_prompt(vectors) if complete else None)
        return out

    def outcome(self, summary: Mapping[str, Any] | None) -> Outcome:
        """COMPLETE with the aggregated objective(s), PRUNED with the reason, or FAIL (one replicate's)."""
        base = {
            "step": (summary or {}).get("step", self.last_step),
            "objective_history": {o.metric: list(zip(self.objective_steps, v)) for o, v in zip(self.objectives, self.objective_values)},
            "summary": _jsonable(summary or {}),
            "num_processes": self.num_processes,
            "resumed_from_step": self.resumed_from_step,
        }
        if self.verdict is not None:
            partial = [o.value(v) for o, v in zip(self.objectives, self.objective_values)]
            return Outcome("PRUNED", prune_reason=self.verdict.reason, message=self.verdict.message,
                           partial_values=partial, pruned_at_step=self.verdict_step, per_prompt=self._per_prompt(), **base)
        status = (summary or {}).get("status", "completed")
        if status != "completed":
            reason = (summary or {}).get("stop_reason")
            return Outcome("FAIL", fail_reason=f"the trainer ended with status {status!r} (stop_reason {reason!r})", **base)
        values = []
        for objective, series in zip(self.objectives, self.objective_values):
            value = objective.value(series)
            if value is None:
                seen = sorted(k for k in self.history if k.startswith("val/"))
                return Outcome("FAIL", fail_reason=f"objective metric {objective.metric!r} was never reported; "
                                                   f"validation metrics seen: {seen or 'none (no validation ran)'}", **base)
            if not math.isfinite(value):
                return Outcome("FAIL", fail_reason=f"objective {objective.metric} is {value}", **base)
            values.append(value)
        return Outcome("COMPLETE", values=values, per_prompt=self._per_prompt(), **base)


def _jsonable(data: Any) -> Any:
    try:
        return json.loads(json.dumps(data, default=str))
    except (TypeError, ValueError):
        return str(data)
