"""The trial process: one Optuna trial = one training run in its own process.

The driver writes the trial's folder (``config.yaml`` and ``trial.json``: :mod:`sweeper.contract`) and
submits :func:`run_trial` with that folder as its only argument.

:func:`run_trial` re-opens the study from storage with the same pruner, wraps a
:class:`TrialReporter` (plus the MLflow ``TrialTracker`` when tracking is on) around the trainer,
and calls the entry point ``train(config, reporters)``. At each validation the reporter reports
the objective metric as an Optuna intermediate value at that step and asks ``should_prune()``;
at every report it runs the health rules. A verdict makes ``stop_reason()`` return
``"pruned:<reason>"`` and the trainer stops cleanly after the current step.

The worker never ``tell``s Optuna: it writes ``outcome.json`` (an :class:`~sweeper.contract.Outcome`:
COMPLETE / PRUNED / FAIL, objective value(s), prune reason, message) and returns it. The *driver* tells
Optuna the final state, because only the driver sees every ending -- including a process killed by the
OS or the scheduler, which writes nothing. One writer of final states keeps them consistent.

On Slurm the job runs :class:`CheckpointableTrial` instead, which calls :func:`run_trial` on rank 0
(in a worker thread, so the main thread can take submitit's checkpoint signal: the trainer then saves a
checkpoint, nothing final is written, and the requeued job resumes the same trial) and runs the
trainer without reporters on the other ranks of a data-parallel trial.

This is the one module of ``sweeper/`` that imports trainer modules beyond ``trainers.config`` (the
entry point, ``trainers.reporting``), and only inside functions: importing it costs no torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import sys
import threading
import time
import traceback
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from trainers.reporting import METRICS_FILE, PREEMPTED, ConsoleReporter, read_metrics

from .contract import ATTR_MLFLOW_RUN_ID, CONFIG_FILE, STOP_PREFIX, TRACKING_SPILL_FILE, Outcome, TrialTicket
from .pruning import Verdict, build_pruner, first_verdict, health_rules

DISTRIBUTED_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def aggregate(values: Sequence[float], objective: Mapping[str, Any]) -> float | None:
    """The objective of a trial from its validation values: last, best, or mean of the last n."""
    if not values:
        return None
    how = objective.get("aggregation", "last")
    if how == "last":
        return float(values[-1])
    if how == "best":
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return float(values[-1])
        return max(finite) if objective.get("direction", "maximize") == "maximize" else min(finite)
    tail = values[-int(objective.get("last_n", 3)):]
    return float(sum(tail) / len(tail))


class TrialReporter:
    """Feeds Optuna from the trainer's reports and decides when to stop (duck-typed Reporter).

    Keeps every metric's history (pure input of the health rules), reports the first objective's
    value at each validation as an intermediate value, and asks the pruner."""

    def __init__(
        self,
        trial: Any,
        objectives: Sequence[Mapping[str, Any]],
        rules: Sequence[Any],
        *,
        use_pruner: bool,
        report_intermediate: bool,
        pruner_name: str = "",
    ):
        self.trial = trial
        self.objectives = list(objectives)
        self.rules = list(rules)
        self.use_pruner = use_pruner
        self.report_intermediate = report_intermediate
        self.pruner_name = pruner_name
        self.history: dict[str, list[float]] = defaultdict(list)
        self.objective_values: list[list[float]] = [[] for _ in self.objectives]
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
            self._replay(Path(run_info["output_dir"]) / METRICS_FILE, self.last_step)

    def _replay(self, metrics_file: Path, up_to_step: int) -> None:
        """A resumed run (requeued job) continues this trial: rebuild the metric histories and the
        objective's validation values from the run's metrics.jsonl (the trainer has cut it at the
        checkpoint's step), so health rules and aggregation see the whole trial. Optuna already holds
        the intermediate values of those steps: nothing is reported again."""
        if not metrics_file.exists():
            return
        for record in read_metrics(metrics_file):
            step = int(record.get("step", 0))
            if step > up_to_step:
                continue
            metrics = {k: v for k, v in record.items() if k not in ("kind", "step", "time")}
            self._record(metrics)
            if record.get("kind") == "val" and step > 0:  # step 0 is not an objective value (see on_validation)
                self.objective_steps.append(step)
                for i, objective in enumerate(self.objectives):
                    value = metrics.get(objective["metric"])
                    self.objective_values[i].append(float(value) if value is not None else math.nan)

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
        self.objective_steps.append(step)
        for i, objective in enumerate(self.objectives):
            value = metrics.get(objective["metric"])
            self.objective_values[i].append(float(value) if value is not None else math.nan)
        self._judge(step)
        if self.verdict is not None or not self.report_intermediate:
            return
        value = self.objective_values[0][-1]
        if not math.isfinite(value):
            return
        try:
            self.trial.report(value, step)
            if self.use_pruner and self.trial.should_prune():
                metric = self.objectives[0]["metric"]
                self._stop(Verdict("pass@k", f"the {self.pruner_name} pruner stopped it at step {step} ({metric} = {value:.4g})"), step)
        except Exception as error:  # noqa: BLE001 - a storage hiccup must not kill the training
            if not self._storage_warned:
                warnings.warn(f"could not report to the Optuna storage ({type(error).__name__}: {error}); training goes on without pruning")
                self._storage_warned = True

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

    def _judge(self, step: int) -> None:
        if self.verdict is None:
            verdict = first_verdict(self.rules, self.history)
            if verdict is not None:
                self._stop(verdict, step)

    def _stop(self, verdict: Verdict, step: int) -> None:
        self.verdict = verdict
        self.verdict_step = step
        print(f"[sweeper] trial {getattr(self.trial, 'number', '?')} pruned at step {step}: {verdict.reason}: {verdict.message}", flush=True)

    def outcome(self, summary: Mapping[str, Any] | None) -> Outcome:
        """COMPLETE with the aggregated objective(s), PRUNED with the reason, or FAIL."""
        base = {
            "step": (summary or {}).get("step", self.last_step),
            "objective_history": {o["metric"]: list(zip(self.objective_steps, v)) for o, v in zip(self.objectives, self.objective_values)},
            "summary": _jsonable(summary or {}),
            "num_processes": self.num_processes,
            "resumed_from_step": self.resumed_from_step,
        }
        if self.verdict is not None:
            partial = [aggregate(v, o) for o, v in zip(self.objectives, self.objective_values)]
            return Outcome("PRUNED", prune_reason=self.verdict.reason, message=self.verdict.message,
                           partial_values=partial, pruned_at_step=self.verdict_step, **base)
        status = (summary or {}).get("status", "completed")
        if status != "completed":
            reason = (summary or {}).get("stop_reason")
            return Outcome("FAIL", fail_reason=f"the trainer ended with status {status!r} (stop_reason {reason!r})", **base)
        values = []
        for objective, series in zip(self.objectives, self.objective_values):
            value = aggregate(series, objective)
            if value is None:
                seen = sorted(k for k in self.history if k.startswith("val/"))
                return Outcome("FAIL", fail_reason=f"objective metric {objective['metric']!r} was never reported; "
                                                   f"validation metrics seen: {seen or 'none (no validation ran)'}", **base)
            if not math.isfinite(value):
                return Outcome("FAIL", fail_reason=f"objective {objective['metric']} is {value}", **base)
            values.append(value)
        return Outcome("COMPLETE", values=values, **base)


def _jsonable(data: Any) -> Any:
    try:
        return json.loads(json.dumps(data, default=str))
    except (TypeError, ValueError):
        return str(data)


def load_entrypoint(entrypoint: str):
    """'package.module:function' or '/path/to/file.py:function' -> the function."""
    target, _, name = entrypoint.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        module_name = f"_sweeper_entrypoint_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or not path.exists():
            raise FileNotFoundError(f"executor.entrypoint: {path} does not exist")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"executor.entrypoint: {target} has no function {name!r}") from None


def _job_environment() -> tuple[str | None, dict[str, str]]:
    try:
        import submitit

        env = submitit.JobEnvironment()
        return str(env.job_id), {"stdout": str(env.paths.stdout), "stderr": str(env.paths.stderr)}
    except Exception:  # noqa: BLE001 - not inside a submitit job (debug executor, by hand)
        return None, {}


def run_trial(trial_dir: str | Path, preemption: threading.Event | None = None) -> Outcome:
    """Run one trial from its folder; write and return its outcome. Exceptions are recorded in
    ``outcome.json`` (state FAIL with the traceback) and re-raised.

    ``preemption`` (set by :class:`CheckpointableTrial` on Slurm's checkpoint signal) makes the
    trainer save a checkpoint and stop; the trial is then *not* over: nothing is written and an
    outcome with state PREEMPTED is returned, the requeued job resumes it."""
    trial_dir = Path(trial_dir)
    started = time.time()
    try:
        outcome = _run(trial_dir, preemption)
        if outcome.state == "PREEMPTED":
            return outcome
    except BaseException as error:
        Outcome("FAIL", fail_reason=f"{type(error).__name__}: {error}", traceback=traceback.format_exc()[-8000:],
                seconds=time.time() - started).write(trial_dir)
        raise
    outcome.seconds = time.time() - started
    outcome.write(trial_dir)
    return outcome


def _run(trial_dir: Path, preemption: threading.Event | None = None) -> Outcome:
    import optuna
    from pydantic import TypeAdapter

    from trainers.config import load_config

    from .pruning import PrunerSpec
    from .storage import make_storage

    ticket = TrialTicket.read(trial_dir)
    config = load_config(trial_dir / CONFIG_FILE)
    train = load_entrypoint(ticket.entrypoint)
    pruner_spec = TypeAdapter(PrunerSpec).validate_python(ticket.pruner)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(ticket.storage, worker=True)
    study = optuna.load_study(study_name=ticket.study_name, storage=storage,
                              pruner=build_pruner(pruner_spec, ticket.trial_steps))
    trial = optuna.trial.Trial(study, ticket.trial_id)
    frozen = storage.get_trial(ticket.trial_id)
    if frozen.state != optuna.trial.TrialState.RUNNING:
        raise RuntimeError(f"trial {ticket.trial_number} is {frozen.state.name} in storage, not RUNNING: nothing to run")

    multi = len(ticket.objectives) > 1
    reporter = TrialReporter(
        trial,
        ticket.objectives,
        health_rules(pruner_spec.health),
        use_pruner=pruner_spec.type != "none" and not multi,
        report_intermediate=not multi,
        pruner_name=pruner_spec.type,
    )
    job_id, log_paths = _job_environment()
    log_paths["trial_dir"] = str(trial_dir)
    log_paths["output_dir"] = config.train.output_dir
    reporters: list[Any] = [reporter]
    if ticket.tracking.get("enabled"):
        tracker = _trial_tracker(ticket, trial, config, job_id, log_paths, frozen.user_attrs.get(ATTR_MLFLOW_RUN_ID))
        if tracker is not None:
            reporters.insert(0, _OpenAcrossPreemption(tracker))
    if preemption is not None:
        reporters.append(PreemptionReporter(preemption))  # after the TrialReporter: a prune verdict wins
    reporters.append(ConsoleReporter(every=max(1, config.train.steps // 20)))

    print(f"[sweeper] trial {ticket.trial_number} of study {ticket.study_name}: {json.dumps(ticket.sampled, default=str)}", flush=True)
    summary = train(config, reporters)
    if summary.get("stop_reason") == PREEMPTED:
        print(f"[sweeper] trial {ticket.trial_number} preempted at step {summary.get('step')}: checkpoint saved, the job is requeued", flush=True)
        return Outcome("PREEMPTED", step=summary.get("step"))
    outcome = reporter.outcome(summary)
    print(f"[sweeper] trial {ticket.trial_number} {outcome.state} at step {outcome.step}", flush=True)
    return outcome


def _trial_tracker(ticket: TrialTicket, trial: Any, config: Any, job_id: str | None, log_paths: dict[str, str], run_id: str | None):
    """The MLflow reporter of this trial (None if tracking cannot be set up: the trial trains anyway)."""
    try:
        from .tracking import TrialTracker

        tracking = ticket.tracking
        tracker = TrialTracker(
            tracking["uri"],
            tracking["experiment"],
            tracking.get("parent_run_id"),
            ticket.trial_number,
            config.model_dump(mode="json"),
            ticket.sampled_paths,
            job_id=job_id,
            log_paths=log_paths,
            run_id=run_id,
            spill_path=Path(log_paths["trial_dir"]) / TRACKING_SPILL_FILE,
        )
        if tracker.run_id:
            trial.set_user_attr(ATTR_MLFLOW_RUN_ID, tracker.run_id)
        return tracker
    except Exception as error:  # noqa: BLE001 - tracking never loses a trial
        warnings.warn(f"MLflow tracking is off for this trial: {type(error).__name__}: {error}")
        return None



# --------------------------------------------------------------------------- preemption (Slurm)


class PreemptionReporter:
    """Asks the trainer to checkpoint and stop once ``event`` is set (duck-typed Reporter)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def on_start(self, run_info: Mapping[str, Any]) -> None:
        pass

    def on_train_step(self, step: int, metrics: Mapping[str, float]) -> None:
        pass

    def on_validation(self, step: int, metrics: Mapping[str, float], per_prompt: Mapping[str, Any] | None = None) -> None:
        pass

    def stop_reason(self) -> str | None:
        return PREEMPTED if self.event.is_set() else None

    def on_end(self, summary: Mapping[str, Any]) -> None:
        pass


class _OpenAcrossPreemption:
    """The MLflow reporter, except that a preemption stop does not end the run: its metrics are
    flushed and the run stays RUNNING for the requeued job, which re-opens it by run id."""

    def __init__(self, tracker: Any):
        self.tracker = tracker
        self.run_id = tracker.run_id

    def on_start(self, run_info: Mapping[str, Any]) -> None:
        self.tracker.on_start(run_info)

    def on_train_step(self, step: int, metrics: Mapping[str, float]) -> None:
        self.tracker.on_train_step(step, metrics)

    def on_validation(self, step: int, metrics: Mapping[str, float], per_prompt: Mapping[str, Any] | None = None) -> None:
        self.tracker.on_validation(step, metrics, per_prompt)

    def stop_reason(self) -> str | None:
        return self.tracker.stop_reason()

    def on_end(self, summary: Mapping[str, Any]) -> None:
        if summary.get("stop_reason") == PREEMPTED:
            summary = {"status": "preempted", "step": summary.get("step"), "stop_reason": None}  # flush, keep RUNNING
        self.tracker.on_end(summary)


def export_distributed_environment() -> tuple[int, int]:
    """In a Slurm job with several tasks: export RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
    MASTER_ADDR and a per-job MASTER_PORT (submitit's TorchDistributedEnvironment; values inherited
    from the submitting shell are dropped first, or two jobs on one node would share a port).
    Returns (rank, world size); (0, 1) for a single-task job, which exports nothing."""
    import submitit

    job_env = submitit.JobEnvironment()
    if job_env.num_tasks <= 1:
        return 0, 1
    for name in DISTRIBUTED_VARIABLES:
        os.environ.pop(name, None)
    dist_env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return dist_env.rank, dist_env.world_size


def run_secondary_rank(trial_dir: str | Path) -> dict[str, Any]:
    """Rank > 0 of a data-parallel trial: the same trainer on the same config, no reporters (the trainer
    reports from rank 0 only and broadcasts rank 0's stop reason, so every rank stops together)."""
    from trainers.config import load_config

    trial_dir = Path(trial_dir)
    ticket = TrialTicket.read(trial_dir)
    config = load_config(trial_dir / CONFIG_FILE)
    summary = load_entrypoint(ticket.entrypoint)(config, [])
    return {"rank": int(os.environ.get("RANK", "0")), "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "state": "PREEMPTED" if summary.get("stop_reason") == PREEMPTED else "DONE", "step": summary.get("step")}


class CheckpointableTrial:
    """The function a trial's Slurm job runs: ``CheckpointableTrial()(trial_dir)``.

    A submitit *checkpointable* callable (it has ``checkpoint``, which is what submitit looks for;
    see ``submitit.helpers.Checkpointable``). Rank 0 runs :func:`run_trial` in a worker thread, so that
    the main thread is free for signals. On the checkpoint signal (USR2: preemption, or
    ``signal_delay_s`` before the time limit) submitit calls :meth:`checkpoint` in the main thread: it
    sets the preemption flag, the trainer saves ``output_dir/checkpoint`` at the end of its current
    step and stops (all ranks together), and the method returns this callable for submitit to pickle
    and requeue. The requeued job calls it again on the same folder: the trainer resumes from the
    checkpoint, ``run_trial`` re-opens the same Optuna trial (still RUNNING: nobody told it) and the
    same MLflow run (its id is a user attr of the trial). If the trial ended meanwhile (completed,
    pruned, failed), ``checkpoint`` returns None and the job is not requeued.

    With several tasks (``nodes * tasks_per_node > 1``) every task exports the torch.distributed
    variables first; ranks > 0 run :func:`run_secondary_rank`.
    """

    def __init__(self, checkpoint_wait_s: float = 75.0):
        self.checkpoint_wait_s = float(checkpoint_wait_s)
        self.preemptions = 0
        self._runtime: dict[str, Any] | None = None  # this process only: worker thread, flag, result

    def __getstate__(self) -> dict[str, Any]:
        return {"checkpoint_wait_s": self.checkpoint_wait_s, "preemptions": self.preemptions}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._runtime = None

    def __call__(self, trial_dir: str) -> dict[str, Any]:
        rank, world = export_distributed_environment()
        if rank != 0:
            return run_secondary_rank(trial_dir)
        runtime: dict[str, Any] = {"flag": threading.Event()}

        def work() -> None:
            try:
                runtime["result"] = run_trial(trial_dir, preemption=runtime["flag"])
            except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
                runtime["error"] = error

        runtime["thread"] = threading.Thread(target=work, name="trial", daemon=True)
        self._runtime = runtime
        runtime["thread"].start()
        while runtime["thread"].is_alive():
            runtime["thread"].join(0.5)  # the main thread wakes up for signals (submitit's checkpoint)
        if "error" in runtime:
            raise runtime["error"]
        return runtime["result"]

    def checkpoint(self, trial_dir: str) -> Any:
        """Called by submitit in the signal handler: stop the trainer with a checkpoint; then requeue
        (return a DelayedSubmission of this callable) unless the trial has ended by itself."""
        import submitit

        runtime = self._runtime
        if runtime is not None:
            runtime["flag"].set()
            print(f"[sweeper] checkpoint signal: saving a checkpoint of {trial_dir} (waiting up to {self.checkpoint_wait_s:.0f} s)", flush=True)
            runtime["thread"].join(self.checkpoint_wait_s)
            result = runtime.get("result")
            if not runtime["thread"].is_alive() and (result is None or result.state != "PREEMPTED"):
                return None  # it completed, was pruned or failed meanwhile: its outcome is written, no requeue
            if runtime["thread"].is_alive():
                print("[sweeper] the trainer did not stop in time: the requeued job resumes from its last checkpoint", flush=True)
        self.preemptions += 1
        return submitit.helpers.DelayedSubmission(self, trial_dir)  # pickled without its runtime
