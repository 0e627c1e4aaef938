"""Running one trial: :func:`run_trial` (its folder in, its outcome out), with its replicates.

A trial runs its config once per training seed of its ticket (``budget.seeds`` R; one seed by default):
the first seed in ``run/``, reporting intermediate values to Optuna and asking the pruner (the paired
pruner compares it with the incumbent's first seed), and, once it completes, every other seed s in
``run-seed<s>/`` (health rules only). A seed that is pruned or fails ends the trial. The trial's value is
the mean of its seeds' values and its standard error is over the seeds (R > 1) or over the validation
prompts (R = 1). The seeds already finished are kept in ``replicates.json``: a requeued (preempted) job
goes on with the seed it was running, from that seed's checkpoint.

Why one trial runs R seeds (and not R trials of one config): a trial stays Optuna's unit of one config,
so the sampler sees one observation per config, ``budget.n_trials`` counts configs, the status table and
export rank configs, and a config pruned on its first seed never costs R runs. The price: a surviving
config's seeds run one after another inside its trial.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Mapping

from trainers.reporting import PREEMPTED, ConsoleReporter

from sweeper.contract import ATTR_MLFLOW_RUN_ID, CONFIG_FILE, REPLICATES_FILE, TRACKING_SPILL_FILE, Outcome, TrialTicket, atomic_write
from sweeper.study.futility import ATTR_SEED_VALUES, FutilityPruner
from sweeper.study.pruning import build_pruner, health_rules
from sweeper.run.trial.outcome import futility_stop, validation_steps, with_uncertainty
from sweeper.run.trial.progress import ProgressReporter
from sweeper.run.trial.reporter import TrialReporter


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


def replicate_configs(config: Any, seeds: list[int]) -> list[tuple[int, Any]]:
    """(seed, RunConfig) of each replicate: the trial's config for the first seed, and a copy with ``seed``
    and ``train.output_dir`` + ``-seed<s>`` for every other."""
    from trainers.config import parse_config

    runs = [(int(config.seed), config)]
    for seed in seeds[1:]:
        data = config.model_dump(mode="json")
        data["seed"] = int(seed)
        data["train"]["output_dir"] = f"{config.train.output_dir}-seed{seed}"
        runs.append((int(seed), parse_config(data, f"replicate seed {seed}")))
    return runs


def read_replicates(trial_dir: Path) -> list[dict[str, Any]]:
    path = Path(trial_dir) / REPLICATES_FILE
    return json.loads(path.read_text()) if path.exists() else []


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

    ``preemption`` (set by :class:`~sweeper.run.trial.slurm.CheckpointableTrial` on Slurm's checkpoint signal)
    makes the trainer save a checkpoint and stop; the trial is then *not* over: nothing is written and an
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

    from trainers.config import load_config

    from sweeper.registry import PRUNERS
    from sweeper.run.storage import make_storage

    ticket = TrialTicket.read(trial_dir)
    config = load_config(trial_dir / CONFIG_FILE)
    train = load_entrypoint(ticket.entrypoint)
    pruner_spec = PRUNERS.validate(ticket.pruner)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(ticket.storage, worker=True)
    study = optuna.load_study(study_name=ticket.study_name, storage=storage,
                              pruner=build_pruner(pruner_spec, ticket.trial_steps, validation_steps(config)))
    trial = optuna.trial.Trial(study, ticket.trial_id)
    frozen = storage.get_trial(ticket.trial_id)
    if frozen.state != optuna.trial.TrialState.RUNNING:
        raise RuntimeError(f"trial {ticket.trial_number} is {frozen.state.name} in storage, not RUNNING: nothing to run")

    job_id, log_paths = _job_environment()
    log_paths["trial_dir"] = str(trial_dir)
    log_paths["output_dir"] = config.train.output_dir
    tracker = None
    if ticket.tracking.get("enabled"):
        tracker = _trial_tracker(ticket, trial, config, job_id, log_paths, frozen.user_attrs.get(ATTR_MLFLOW_RUN_ID))

    multi = len(ticket.objectives) > 1
    runs = replicate_configs(config, ticket.seeds or [config.seed])
    futility = study.pruner if isinstance(study.pruner, FutilityPruner) and not multi else None
    if futility is not None:
        futility.set_race(ticket.seeds_min or len(runs), len(runs))
    finished = read_replicates(trial_dir)
    ending: Outcome | None = None
    waiting = False
    summary: Mapping[str, Any] = {"status": "completed", "step": config.train.steps, "stop_reason": None}
    print(f"[sweeper] trial {ticket.trial_number} of study {ticket.study_name}: {json.dumps(ticket.sampled, default=str)}"
          + (f", seeds {[seed for seed, _ in runs]}" if len(runs) > 1 else ""), flush=True)
    for index, (seed, run_config) in enumerate(runs):
        if index < len(finished):
            continue
        first = index == 0
        reporter = TrialReporter(trial, ticket.objectives, health_rules(pruner_spec.health),
                                 use_pruner=first and pruner_spec.prunes and pruner_spec.judges_validations and not multi
                                 and not ticket.baseline,
                                 report_intermediate=first and not multi, pruner_name=pruner_spec.type,
                                 seed=seed if not multi else None,
                                 look=_validation_look(futility, study, storage, ticket, seed) if futility else None)
        reporters: list[Any] = [reporter]
        if tracker is not None:
            reporters.insert(0, _ReplicateToTrialRun(tracker, "" if first else f"seed{seed}/"))
        if preemption is not None:
            reporters.append(PreemptionReporter(preemption))  # after the TrialReporter: a prune verdict wins
        reporters.append(ConsoleReporter(every=max(1, run_config.train.steps // 20)))
        reporters.append(ProgressReporter(trial_dir, seed, index + 1, len(runs), run_config.train.steps,
                                          ticket.objectives[0]["metric"]))  # the driver's live view
        try:
            summary = train(run_config, reporters)
        except BaseException:
            if tracker is not None:  # what MLflow did not get yet is kept (mlflow_unsent.json), not lost with the process
                tracker.on_end({"status": "failed"})
            raise
        if summary.get("stop_reason") == PREEMPTED:
            print(f"[sweeper] trial {ticket.trial_number} preempted at step {summary.get('step')}: checkpoint saved, "
                  f"the job is requeued", flush=True)
            if tracker is not None:  # the requeued job's tracker takes the kept file over
                tracker.keep_unsent("was preempted")
            return Outcome("PREEMPTED", step=summary.get("step"))
        ending = reporter.outcome(summary)
        if ending.state != "COMPLETE":
            if len(runs) > 1 and ending.state == "PRUNED":
                ending.message = f"seed {seed}: {ending.message}"
            elif len(runs) > 1:
                ending.fail_reason = f"seed {seed}: {ending.fail_reason}"
            break
        finished.append({"seed": seed, "values": ending.values,
                         "per_prompt": (ending.per_prompt or [None])[0]})
        if len(runs) > 1:
            atomic_write(trial_dir / REPLICATES_FILE, json.dumps(finished))
        if futility is not None:
            rounds = ticket.race == "rounds" and not ticket.baseline and futility.seeds_min <= len(finished) < len(runs)
            stop = _seed_look(futility, study, storage, ticket, trial, finished, look=not rounds)
            if stop is not None:
                ending = stop
                break
            if rounds:   # budget.race rounds: the driver judges the trial with its round (sweeper.run.race)
                waiting = True
                break
    outcome = with_uncertainty(ending, finished)
    if waiting:
        outcome.state = "AWAITING_ROUND"
        outcome.message = f"waits after seed {len(finished)} for its race round"
        print(f"[sweeper] trial {ticket.trial_number} {outcome.message}", flush=True)
        if tracker is not None:  # the run stays open: the next round's job (or the driver) ends it
            tracker.keep_unsent("waits for its race round")
        return outcome
    if tracker is not None:
        tracker.on_end(summary, state=outcome.state)  # the run's status and tags from the outcome, as Optuna's
    print(f"[sweeper] trial {ticket.trial_number} {outcome.state} at step {outcome.step}", flush=True)
    return outcome


def _seed_look(futility: FutilityPruner, study: Any, storage: Any, ticket: TrialTicket, trial: Any,
               finished: list[dict[str, Any]], look: bool = True) -> Outcome | None:
    """Store the finished seeds' values (every trial's futility looks read them), then (``look``) the seed
    look: a PRUNED outcome (prune_reason futility) when this config is out of the race."""
    trial.set_user_attr(ATTR_SEED_VALUES, {str(r["seed"]): r["values"][0] for r in finished})
    if ticket.baseline or not look:
        return None
    result = futility.after_seed(study, storage.get_trial(ticket.trial_id), len(finished))
    if result is None or not result.stop:
        return None
    message = f"stopped after seed {len(finished)}: {result.message}"
    print(f"[sweeper] trial {ticket.trial_number} {message}", flush=True)
    return futility_stop(message, finished, ticket.trial_steps)


def _validation_look(futility: FutilityPruner, study: Any, storage: Any, ticket: TrialTicket, seed: int):
    """look(step) for a seed's reporter: the futility rule at that validation (None: go on)."""
    if ticket.baseline or futility.warmup_step is None:
        return None

    def look(step: int) -> str | None:
        result = futility.at_validation(study, storage.get_trial(ticket.trial_id), step)
        return f"stopped at step {step} of seed {seed}: {result.message}" if result is not None and result.stop else None

    return look


def _trial_tracker(ticket: TrialTicket, trial: Any, config: Any, job_id: str | None, log_paths: dict[str, str], run_id: str | None):
    """The MLflow reporter of this trial (None if tracking cannot be set up: the trial trains anyway)."""
    try:
        from sweeper.tracking.trial import TrialTracker

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


class PreemptionReporter:
    """Asks the trainer to checkpoint and stop once ``event`` is set (a duck-typed Reporter)."""

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


class _ReplicateToTrialRun:
    """One replicate's reports into the trial's MLflow run: the first seed's as they are, seed s's metrics
    and per-prompt artifacts under ``seed<s>/``. The run ends once, after the last replicate (the trial
    process ends it); a preemption stop flushes and keeps it RUNNING for the requeued job, which re-opens it
    by run id."""

    def __init__(self, tracker: Any, prefix: str):
        self.tracker = tracker
        self.prefix = prefix

    def on_start(self, run_info: Mapping[str, Any]) -> None:
        if not self.prefix:
            self.tracker.on_start(run_info)

    def on_train_step(self, step: int, metrics: Mapping[str, float]) -> None:
        self.tracker.on_train_step(step, {self.prefix + k: v for k, v in metrics.items()})

    def on_validation(self, step: int, metrics: Mapping[str, float], per_prompt: Mapping[str, Any] | None = None) -> None:
        self.tracker.on_validation(step, {self.prefix + k: v for k, v in metrics.items()}, per_prompt,
                                   artifact_folder=f"{self.prefix}per_prompt")

    def stop_reason(self) -> str | None:
        return self.tracker.stop_reason()

    def on_end(self, summary: Mapping[str, Any]) -> None:
        self.tracker.flush()
