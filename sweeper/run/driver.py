"""The driver: an ask/tell loop that keeps ``max_parallel`` trials in flight.

    report = run_study(spec)                 # or: sweeper run study.yaml

Each round of the loop (every ``poll_interval`` seconds, 0.05 s by default):

1. *refill*: while fewer than ``max_parallel`` trials are in flight and the budget allows, ask Optuna
   for a trial, sample its config (:mod:`sweeper.study.space`), write ``trial.json`` and ``config.yaml`` in
   ``<study dir>/trials/NNNNN/`` and submit :func:`sweeper.run.trial.run_trial` to the executor. The
   trial's user attrs get ``job_id``, ``trial_dir``, ``config`` (the resolved config) and
   ``log_paths``. A sampled config that breaks a constraint or the run-config schema is told FAIL
   with user attr ``rejected`` and never launched; one identical to a COMPLETE trial's is told that
   trial's result (user attr ``same_config_as``, :mod:`sweeper.run.reuse`) and never launched.
2. *reap*: every job that is done is turned into a final state from its ``outcome.json``: COMPLETE
   (value), PRUNED (user attr ``prune_reason``: pass@k | entropy_collapse | entropy_explosion | nan),
   or FAIL (``fail_reason``, ``stderr_tail``; also a job that died without writing an outcome). The
   driver is the only place that ``tell``s Optuna. A freed slot is refilled in the same round: there
   is no batch barrier.

Resume: re-running the same study (same storage and name) keeps everything in storage. Trials left
RUNNING by a dead driver are re-attached by their ``job_id`` when the job still runs (the local
executor checks the pid), finished from their ``outcome.json`` when the job ended meanwhile, and
otherwise told FAIL with user attrs ``lost`` and re-queued (``enqueue_trial`` with the same params,
user attr ``requeued_from``). The budget (``n_trials``) counts every trial in storage that ran or
runs, except rejected and lost ones (a lost trial's re-queued copy takes its place). A Slurm job
outlives its driver: it is re-attached whatever its state, and one that ended meanwhile is finished
from its outcome or its sacct state (never "lost"). Enqueued
configs (``enqueue:`` in the spec) go first, once per study (study user attr ``sweeper_enqueued``).

A seeded sampler is re-seeded on resume with ``seed + trials in storage`` (otherwise it would
suggest the first run's configs again).

One driver per study, across hosts: the driver holds a lease kept in the study's own storage
(:mod:`sweeper.run.lock`; owner host/pid and a heartbeat). A second driver is refused while the lease is
live, and takes over the lease of a dead one (same machine: at once; another host: once its
heartbeat is older than the lease ttl).

Racing in rounds (``budget.race: rounds``, :mod:`sweeper.run.race`): a trial waiting for its round frees its slot.

Live view (:mod:`sweeper.run.live`): while trials run, a line every ``live_interval`` seconds (when it
changed) gives each running trial's seed r/R, step s/S and last validation, and a trial that stops is
logged with why (the pruner's ``stop_reason`` when it records one); the same text goes into the MLflow
parent run's description.

Ctrl-C (and, under :func:`run_study`, SIGTERM and SIGHUP: :mod:`sweeper.run.interrupts`) cancels the jobs in
flight and records them as lost (re-queued on the next run); with ``on_interrupt="detach"`` (default: the
spec's ``executor.on_interrupt``) they keep running and the next run re-attaches to them.

For a Slurm study, :func:`preflight` first refuses a SQLite storage on a network filesystem.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import yaml

from sweeper.run.checks import check_launch
from sweeper.contract import (ATTR_BASELINE, ATTR_CONFIG, ATTR_ENQUEUED, ATTR_FAIL_REASON, ATTR_JOB_ID, ATTR_LOG_PATHS, ATTR_LOST,
                       ATTR_MLFLOW_RUN_ID, ATTR_RACE_PAIRING, ATTR_RACE_WAITING, ATTR_REJECTED, ATTR_REQUEUED_FROM, ATTR_STDERR_TAIL, ATTR_STOP_REASON, ATTR_TRIAL_DIR, CONFIG_FILE,
                       OUTCOME_FILE, RUN_DIR, STEP0_CACHE_DIR, Outcome, TrialTicket, count_states, counts_as_budget, trial_folder)
from sweeper.redaction import secret_environment
from sweeper.run.executors.base import TrialJob, find_local_job_id, patched_environ
from sweeper.run.interrupts import stop_signals_interrupt
from sweeper.run.live import LiveView
from sweeper.run.report import InFlight, StudyReport
from sweeper.run.race import RoundRace, close_waiting, complete_contenders, pairing_config, seed_look
from sweeper.run.reuse import find_identical, reuse_result
from sweeper.study.samplers import grid_size
from sweeper.study.space import Rejected, SampledConfig, grid_search_space
from sweeper.study.spec import SpecError, StudySpec, build_pruner_of, build_sampler_of, load_spec, resolve, sample
from sweeper.run.storage import open_study

MAX_CONSECUTIVE_REJECTIONS = 200
STDERR_ATTR_CHARS = 4000
NO_OUTCOME = "the trial process ended without an outcome (killed, out of memory, or past its time limit?)"


class Driver:
    """Runs one study to its budget. See the module docstring."""

    def __init__(
        self,
        spec: StudySpec,
        *,
        n_trials: int | None = None,
        max_parallel: int | None = None,
        timeout: float | None = None,
        progress: bool | None = None,
        poll_interval: float = 0.05,
        on_interrupt: str | None = None,
        refresh_interval: float = 5.0,
        log: Callable[[str], None] | None = None,
        live_interval: float = 10.0,
    ):
        self.spec = spec
        self.n_trials = n_trials if n_trials is not None else spec.budget.n_trials
        if spec.sampler.needs_grid:
            size = grid_size(grid_search_space(spec.space))
            self.n_trials = size if self.n_trials is None else min(self.n_trials, size)
        self.max_parallel = max_parallel or spec.budget.max_parallel
        if spec.executor.one_at_a_time:
            self.max_parallel = 1
        self.timeout = timeout if timeout is not None else spec.budget.timeout
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.poll_interval = poll_interval
        on_interrupt = on_interrupt or spec.executor.on_interrupt
        if on_interrupt not in ("cancel", "detach"):
            raise ValueError(f"on_interrupt must be 'cancel' or 'detach', got {on_interrupt!r}")
        self.on_interrupt = on_interrupt
        self.refresh_interval = refresh_interval
        self._log = log
        self.study_dir = spec.study_dir
        self.in_flight: list[InFlight] = []
        self.counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        self.best: tuple[float, int] | None = None
        self.tracker = None
        self.executor = None
        self.parent_run_id: str | None = None
        self._bar = None
        self._needs_refresh = False
        self._last_refresh = 0.0
        self._rejections_in_a_row = 0
        self._lease = None  # the study's driver lease (sweeper.run.lock), held while the driver runs
        self.live = LiveView(live_interval)  # running trials and stops, on stderr and in MLflow (sweeper.run.live)
        self.race = RoundRace(lambda _number, trial_id, seeds: seed_look(self.study, self.storage, trial_id, seeds, spec.pruner.build))
        self._race_changed = True   # budget.race rounds: a trial ended or began waiting since the last round

    # ------------------------------------------------------------------ logging / progress

    def log(self, message: str) -> None:
        if self._log is not None:
            self._log(message)
        elif self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def _update_bar(self, advance: int = 0) -> None:
        if self._bar is None:
            return
        best = f"{self.best[0]:.4g} (#{self.best[1]})" if self.best else "-"
        self._bar.set_postfix_str(
            f"running {len(self.in_flight)} complete {self.counts['COMPLETE']} pruned {self.counts['PRUNED']} "
            f"failed {self.counts['FAIL']} best {best}", refresh=False,
        )
        self._bar.update(advance)

    # ------------------------------------------------------------------ the loop

    def run(self) -> StudyReport:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        started = time.time()
        self.study_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            preflight(self.spec)
            self.study, self.storage = open_study(
                self.spec, create=True, pruner=build_pruner_of(self.spec),
                sampler=lambda stored: build_sampler_of(self.spec, self.max_parallel, seed_offset=stored))
            self.study_id = self.storage.get_study_id_from_name(self.spec.study.name)
            self.executor = self.spec.executor.build()
            self.report = StudyReport(self.spec.study.name, str(self.study_dir), self.spec.study.storage, {}, max_parallel=self.max_parallel)
            self._start_tracking()
            self._enqueue_fixed_configs()
            self._recover()
            already = self._count_stored()
            self._init_bar(already)
            try:
                self._loop(started, already)
            except KeyboardInterrupt:
                self._interrupted()
                raise
            finally:
                if self._bar is not None:
                    self._bar.close()
            self.report.wall_seconds = time.time() - started
            self._final_report()
            self._end_tracking("FINISHED")
            return self.report
        finally:
            if self.executor is not None:
                self.executor.close()
            self._release_lock()

    def _loop(self, started: float, already: int) -> None:
        launched_here = 0
        loop_start = None
        deadline = started + self.timeout if self.timeout else math.inf
        while True:
            self._lease.check()  # LeaseLost if another driver took the study over (sweeper.run.lock)
            t0 = time.perf_counter()
            # refill
            while len(self.in_flight) < self.max_parallel and self._may_start(already + launched_here, deadline):
                flight = self._launch()
                launched_here += 1
                if flight is None:
                    continue  # a known config: its result was reused (sweeper.run.reuse), nothing runs
                self.in_flight.append(flight)
                self._update_bar()
                if self.spec.executor.one_at_a_time:
                    break  # it already ran: reap it before the next one
            if self.race.waiting and (self._race_changed or not self.in_flight):
                self._rounds(self._may_start(already + launched_here, deadline))
            self.report.driver_seconds += time.perf_counter() - t0
            if loop_start is None and self.in_flight:
                loop_start = min(f.submitted for f in self.in_flight)
            if not self.in_flight and not self.race.waiting:
                break
            done = [f for f in self.in_flight if f.job.done()]
            if not done:
                if self.live.tick(self._flights(), self.log):
                    self._needs_refresh = True
                if self._needs_refresh:
                    self._refresh_tracking()
                time.sleep(self.poll_interval)
                continue
            t1 = time.perf_counter()
            for flight in done:
                self.in_flight.remove(flight)
                self._finish(flight)
            self.report.driver_seconds += time.perf_counter() - t1
            self.report.loop_seconds = time.time() - loop_start

    def _may_start(self, started: int, deadline: float) -> bool:
        """Whether the budget lets a new trial start (``started``: trials counted so far)."""
        if time.time() >= deadline or self.n_trials is not None and started >= self.n_trials:
            return False
        return self.spec.budget.trial_steps is None or self._steps_spent() < self.spec.budget.trial_steps

    def _rounds(self, new_trials: bool) -> None:
        """budget.race rounds: give the waiting trials the verdicts due now (:mod:`sweeper.run.race`)."""
        self._race_changed = False
        spent = self.spec.budget.trial_steps is not None and self._steps_spent() >= self.spec.budget.trial_steps
        flights = [(self.storage.get_trial(f.trial_id).user_attrs, f.number) for f in self.in_flight]
        complete = complete_contenders(self.study.get_trials(deepcopy=False))
        for waiting, verdict in self.race.decide(self.race.in_flight(flights, self.spec.budget.seeds_min), new_trials, spent, complete):
            if verdict.action != "go":
                self.race.done(waiting.number)
                outcome = close_waiting(self.storage, waiting, verdict)
                self._record(waiting.number, waiting.trial_id, outcome, time.time(), None)
            elif len(self.in_flight) < self.max_parallel:   # its next seed: a job for the same trial
                self.storage.set_trial_user_attr(waiting.trial_id, ATTR_RACE_WAITING, "")
                (waiting.trial_dir / OUTCOME_FILE).unlink(missing_ok=True)
                with patched_environ(secret_environment(self.spec.study.storage, self.spec.tracking.uri)):
                    job = self.executor.submit(waiting.trial_dir, f"{self.spec.study.name}-{waiting.number}")
                self.storage.set_trial_user_attr(waiting.trial_id, ATTR_JOB_ID, job.job_id)
                self.race.launched(waiting.number, waiting.seeds + 1)
                self.in_flight.append(InFlight(waiting.number, waiting.trial_id, job, waiting.trial_dir, time.time()))
                self.log(f"trial {waiting.number}: its race goes on with seed {waiting.seeds + 1}")

    # ------------------------------------------------------------------ launch

    def _launch(self) -> InFlight | None:
        import optuna

        if self._lease is not None:
            self._lease.check()  # fencing: a driver paused past its lease asks for nothing (LeaseLost)
        while True:
            trial = self.study.ask()
            trial_dir = trial_folder(self.study_dir, trial.number)
            try:
                sampled, config = self._trial_config(trial, trial_dir)
            except Rejected as rejection:
                trial.set_user_attr(ATTR_REJECTED, str(rejection))
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                self.report.rejected += 1
                self._rejections_in_a_row += 1
                if self._rejections_in_a_row >= MAX_CONSECUTIVE_REJECTIONS:
                    raise SpecError(
                        f"space: {self._rejections_in_a_row} sampled configs in a row were rejected (last: {rejection}); "
                        f"the constraints leave almost no room: widen the ranges or loosen space.constraints"
                    ) from None
                continue
            self._rejections_in_a_row = 0
            break

        seeds = [int(config["seed"]) + r for r in range(self.spec.budget.seeds)]
        if (source := find_identical(self.study, config, seeds)) is not None:
            reuse_result(self.study, trial, source, config, self.spec.is_multi_objective)
            self.counts["COMPLETE"] += 1
            self.log(f"trial {trial.number} COMPLETE: same config as #{source.number}, its result is reused (nothing trained)")
            self._update_bar(1)
            return None
        trial_dir.mkdir(parents=True, exist_ok=True)
        baseline = bool(trial.user_attrs.get(ATTR_BASELINE))
        (trial_dir / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        trial_id = self._trial_id(trial.number)
        if pairing := pairing_config(self.spec.budget.race, self.study.get_trials(deepcopy=False), trial.number, baseline):
            trial.set_user_attr(ATTR_RACE_PAIRING, True)   # runs its seeds straight (sweeper.run.race)
        ticket = TrialTicket(
            storage=self.spec.study.storage,
            study_name=self.spec.study.name,
            trial_number=trial.number,
            trial_id=trial_id,
            study_dir=str(self.study_dir),
            entrypoint=self.spec.executor.entrypoint,
            objectives=[o.model_dump() for o in self.spec.objective],
            pruner=self.spec.pruner.model_dump(),
            trial_steps=config["train"]["steps"],
            sampled=sampled.sampled,
            sampled_paths=sampled.sampled_paths,
            tracking={**self.spec.tracking.model_dump(), "parent_run_id": self.parent_run_id},
            seeds=seeds,
            baseline=baseline,
            seeds_min=self.spec.budget.seeds_min or 0,
            race="in_trial" if pairing else self.spec.budget.race,
        )
        ticket.write(trial_dir)
        trial.set_user_attr(ATTR_TRIAL_DIR, str(trial_dir))
        trial.set_user_attr(ATTR_CONFIG, config)
        try:
            # the URLs' passwords reach the trial through its environment, never trial.json or argv
            with patched_environ(secret_environment(self.spec.study.storage, self.spec.tracking.uri)):
                job = self.executor.submit(trial_dir, f"{self.spec.study.name}-{trial.number}")
        except Exception as error:
            trial.set_user_attr(ATTR_FAIL_REASON, f"submission failed: {type(error).__name__}: {error}")
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        trial.set_user_attr(ATTR_JOB_ID, job.job_id)
        logs = job.log_paths()
        if logs:
            trial.set_user_attr(ATTR_LOG_PATHS, logs)
        self.report.launched += 1
        return InFlight(trial.number, trial_id, job, trial_dir, time.time())

    def _trial_config(self, trial: Any, trial_dir: Path) -> tuple[SampledConfig, dict[str, Any]]:
        """The trial's sampled values and its resolved run config (raises :class:`Rejected`)."""
        sampled = sample(self.spec, trial)
        return sampled, resolve(self.spec, sampled, output_dir=str(trial_dir / RUN_DIR),
                                step0_cache=str(self.study_dir / STEP0_CACHE_DIR))

    def _steps_spent(self) -> int:
        """Training steps spent by every trial so far (budget.trial_steps), from the trials' seed curves."""
        from sweeper.study.futility import steps_used

        return sum(steps_used(t.user_attrs) for t in self.study.get_trials(deepcopy=False))

    def _trial_id(self, number: int) -> int:
        """The storage's id of trial ``number`` of this study (what a trial process opens its trial by)."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    # ------------------------------------------------------------------ finish

    def _finish(self, flight: InFlight) -> None:
        if self._lease is not None:
            self._lease.check()  # fencing: a driver paused past its lease tells nothing (LeaseLost)
        now = time.time()
        self.report.slot_busy_seconds += now - flight.submitted
        self.report.intervals.append((flight.number, flight.submitted, now))
        outcome = Outcome.read(flight.trial_dir) or Outcome("FAIL", fail_reason=flight.job.end_reason() or NO_OUTCOME)
        self._race_changed = True
        if outcome.state == "AWAITING_ROUND":   # budget.race rounds: still RUNNING, decided with its round
            self.race.wait(flight.number, flight.trial_id, flight.trial_dir, outcome)
            self.storage.set_trial_user_attr(flight.trial_id, ATTR_RACE_WAITING, f"after seed {len(outcome.replicates or [])}")
            self.log(f"trial {flight.number}: {outcome.message} ({now - flight.submitted:.1f} s)")
            return
        self._record(flight.number, flight.trial_id, outcome, flight.submitted, flight.job)

    def _record(self, number: int, trial_id: int, outcome: Outcome, submitted: float, job: TrialJob | None) -> None:
        """Tell Optuna (and MLflow) a trial's final ``outcome``."""
        import optuna

        now = time.time()
        state = outcome.state
        attrs = outcome.user_attrs()
        stderr_tail = None
        if state == "FAIL":
            stderr_tail = ((job.failure_text() if job else "") or outcome.traceback or "")[-STDERR_ATTR_CHARS:]
            attrs[ATTR_STDERR_TAIL] = stderr_tail
        if outcome.seconds is not None:
            self.report.trial_seconds.append(float(outcome.seconds))
        frozen = self.storage.get_trial(trial_id)
        if frozen.state != optuna.trial.TrialState.RUNNING:
            self.log(f"trial {number} was already {frozen.state.name} in storage; outcome {state} not recorded")
            return
        for key, value in attrs.items():
            self.storage.set_trial_user_attr(trial_id, key, value)
        values = outcome.values if state == "COMPLETE" else None
        if state == "COMPLETE":
            self.study.tell(number, values if self.spec.is_multi_objective else values[0], skip_if_finished=True)
        elif state == "PRUNED" and outcome.seed_mean() is not None:   # its finished seeds' mean, not Optuna's last report
            self.study.sampler.after_trial(self.study, frozen, optuna.trial.TrialState.PRUNED, None)
            self.storage.set_trial_state_values(trial_id, optuna.trial.TrialState.PRUNED, outcome.seed_mean())
        else:
            self.study.tell(number, state=getattr(optuna.trial.TrialState, state), skip_if_finished=True)
        self.counts[state] = self.counts.get(state, 0) + 1
        self.report.finished += 1
        if state == "COMPLETE" and not self.spec.is_multi_objective:
            value = values[0]
            better = self.best is None or (value > self.best[0] if self.spec.directions[0] == "maximize" else value < self.best[0])
            if better:
                self.best = (value, number)
        detail = {
            "COMPLETE": lambda: "value " + ", ".join(f"{v:.4g}" for v in values),
            "PRUNED": lambda: (frozen.user_attrs.get(ATTR_STOP_REASON) or (attrs.get("prune_reason") == "futility" and attrs.get("prune_message"))
                               or f"{attrs.get('prune_reason')} at step {attrs.get('pruned_at_step')}"),
            "FAIL": lambda: attrs.get("fail_reason", ""),
        }[state]()
        self.log(f"trial {number} {state}: {detail} ({now - submitted:.1f} s)")
        if state != "COMPLETE":
            self.live.stopped(f"trial {number} {state}: {detail}")
        self._mark_tracking(trial_id, number, state, attrs.get("prune_reason"), stderr_tail, values[0] if values else None)
        self._update_bar(1)

    # ------------------------------------------------------------------ resume

    def _enqueue_fixed_configs(self) -> None:
        """Enqueue the spec's fixed configs once per study: the study user attr ``sweeper_enqueued``
        counts those already enqueued, so a re-run adds only entries appended to the spec since."""
        done = int(self.study.user_attrs.get("sweeper_enqueued", 0))
        baseline = self.spec.baseline_params
        if done == 0 and baseline is not None and baseline not in self.spec.enqueue:
            self.study.enqueue_trial(dict(baseline), user_attrs={ATTR_BASELINE: True})  # run first, as the reference
        for index, params in enumerate(self.spec.enqueue[done:], start=done):
            marks = {ATTR_BASELINE: True} if params == baseline else {}
            self.study.enqueue_trial(dict(params), user_attrs={ATTR_ENQUEUED: index, **marks})
        if len(self.spec.enqueue) > done:
            self.study.set_user_attr("sweeper_enqueued", len(self.spec.enqueue))

    def _recover(self) -> None:
        """Re-attach, finish or re-queue the trials a previous driver left RUNNING."""
        import optuna

        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for trial in running:
            trial_id = self._trial_id(trial.number)
            trial_dir = Path(trial.user_attrs[ATTR_TRIAL_DIR]) if trial.user_attrs.get(ATTR_TRIAL_DIR) else None
            job_id = trial.user_attrs.get(ATTR_JOB_ID)
            job = None
            if trial_dir is not None:
                if job_id is None:
                    job_id = find_local_job_id(trial_dir)
                if job_id is not None:
                    job = self.executor.reattach(str(job_id), trial_dir)
            if job is not None and (job.outlives_driver or not job.done() or Outcome.read(trial_dir) is not None):
                self.in_flight.append(InFlight(trial.number, trial_id, job, trial_dir, time.time(), reattached=True))
                self.report.reattached += 1
                self.log(f"trial {trial.number}: re-attached to job {job.job_id}")
                continue
            self._lose(trial_id, trial, "the driver stopped and the trial's job is gone (no outcome)", job)

    def _lose(self, trial_id: int, trial: Any, reason: str, job: TrialJob | None) -> None:
        import optuna

        tail = job.failure_text()[-STDERR_ATTR_CHARS:] if job is not None else ""
        self.storage.set_trial_user_attr(trial_id, ATTR_LOST, True)
        self.storage.set_trial_user_attr(trial_id, ATTR_FAIL_REASON, f"lost: {reason}")
        if tail:
            self.storage.set_trial_user_attr(trial_id, ATTR_STDERR_TAIL, tail)
        self.study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        if trial.params:
            marks = {ATTR_BASELINE: True} if trial.user_attrs.get(ATTR_BASELINE) else {}
            self.study.enqueue_trial(dict(trial.params), user_attrs={ATTR_REQUEUED_FROM: trial.number, **marks})
        self.report.requeued += 1
        self.log(f"trial {trial.number}: lost ({reason}); its params are re-queued")
        self._mark_tracking(trial_id, trial.number, "LOST", None, f"lost: {reason}\n{tail}", None)

    def _interrupted(self) -> None:
        if self.on_interrupt == "detach":
            self.log(f"interrupted: {len(self.in_flight)} trial(s) keep running; re-run the study to re-attach to them")
            self._end_tracking("RUNNING")
            return
        self.log(f"interrupted: cancelling {len(self.in_flight)} trial(s); they are re-queued for the next run")
        failed = {flight.number: flight.job.cancel() for flight in self.in_flight}
        deadline = time.time() + 15
        while time.time() < deadline and not all(f.job.done() for f in self.in_flight):
            time.sleep(0.1)
        for flight in self.in_flight:
            if not flight.job.outlives_driver and not flight.job.done():  # re-queued, it would run twice: re-attached instead
                why = failed.get(flight.number) or "it did not stop within 15 s"
                self.log(f"trial {flight.number}: job {flight.job.job_id} may still be running ({why}); it stays RUNNING "
                         f"and the next run re-attaches to it (stop it by hand to cancel it)")
                continue
            self._lose(flight.trial_id, self.storage.get_trial(flight.trial_id), "cancelled: the driver was interrupted", None)
        self.in_flight = []
        self._end_tracking("KILLED")

    def _count_stored(self) -> int:
        trials = self.study.get_trials(deepcopy=False)
        stored = count_states(trials)
        for state in self.counts:
            self.counts[state] += stored[state]
        if not self.spec.is_multi_objective:
            complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
            if complete:
                pick = max if self.spec.directions[0] == "maximize" else min
                best = pick(complete, key=lambda t: t.value)
                self.best = (best.value, best.number)
        return sum(1 for t in trials if counts_as_budget(t))

    # ------------------------------------------------------------------ lock

    def _acquire_lock(self) -> None:
        from sweeper.run.lock import acquire_driver_lease

        self._lease = acquire_driver_lease(self.spec, log=self.log)  # LeaseHeld (a SpecError) if another driver runs

    def _release_lock(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    # ------------------------------------------------------------------ progress bar / summary

    def _init_bar(self, already: int) -> None:
        if not self.progress:
            return
        from tqdm import tqdm

        finished = sum(self.counts.values())
        self._bar = tqdm(total=self.n_trials, initial=finished, desc=self.spec.study.name, unit="trial", file=sys.stderr, dynamic_ncols=True)
        self._update_bar()

    def _final_report(self) -> None:
        counts = {state: n for state, n in count_states(self.study.get_trials(deepcopy=False)).items() if n}
        self.report.counts = counts
        if not self.spec.is_multi_objective:
            try:
                best = self.study.best_trial
                self.report.best_value, self.report.best_params, self.report.best_trial = best.value, best.params, best.number
            except ValueError:
                pass
        if counts.get("COMPLETE") is None and counts.get("FAIL"):
            warnings.warn("no trial completed; see `sweeper status` for the failures", stacklevel=2)

    # ------------------------------------------------------------------ tracking (sweeper.tracking; never raises)

    def _start_tracking(self) -> None:
        if not self.spec.tracking.enabled:
            return
        from sweeper.tracking.study import StudyTracker

        t = self.spec.tracking
        self.tracker = StudyTracker(t.uri, t.experiment, self.spec.study.name, objective_metric=self.spec.objective[0].metric,
                                    artifact_location=t.artifact_location)
        self.parent_run_id = self.tracker.start()

    def _mark_tracking(self, trial_id: int, number: int, state: str, prune_reason: str | None, stderr_tail: str | None,
                       value: float | None) -> None:
        """Record a trial's final state on its MLflow run (found by number when the trial could not record its id)."""
        if self.tracker is None:
            return
        from sweeper.tracking.trial import mark_trial

        run_id = self.storage.get_trial(trial_id).user_attrs.get(ATTR_MLFLOW_RUN_ID) or self.tracker.trial_run_id(number)
        if run_id:
            mark_trial(self.spec.tracking.uri, run_id, state, prune_reason, stderr_tail, value=value)
        self._needs_refresh = True

    def _refresh_tracking(self, force: bool = False) -> None:
        if self.tracker is None:
            return
        if not force and time.time() - self._last_refresh < self.refresh_interval:
            return
        self._needs_refresh = False
        self._last_refresh = time.time()
        self.tracker.refresh(self.study, note=self.live.note(self._flights()))

    def _flights(self) -> list[tuple[int, Path]]:
        return [(f.number, f.trial_dir) for f in self.in_flight]

    def _end_tracking(self, status: str) -> None:
        if self.tracker is None:
            return
        self._refresh_tracking(force=True)
        self.tracker.end(status)


def preflight(spec: StudySpec, mounts_text: str | None = None) -> None:
    """Checks before a study whose trials run on other machines (executor slurm): the Optuna storage
    must not be a SQLite file on a network filesystem (SpecError naming the alternatives); a SQLite
    MLflow store there only warns (tracking never stops a study)."""
    if not spec.executor.trials_on_other_nodes:
        return
    from sweeper.run.storage import check_cluster_storage, filesystem_type, is_network_filesystem, sqlite_file

    check_cluster_storage(spec.study.storage, field="study.storage", mounts_text=mounts_text)
    db = sqlite_file(spec.tracking.uri or "") if spec.tracking.enabled else None
    if db is not None and is_network_filesystem(fstype := filesystem_type(db, mounts_text)):
        warnings.warn(
            f"tracking.uri: {spec.tracking.uri} is a SQLite file on a network filesystem ({fstype}); trials on "
            f"several nodes writing to it may corrupt it: prefer an MLflow server (tracking.uri: http://host:5000)",
            stacklevel=2,
        )


# --------------------------------------------------------------------------- public API


def run_study(
    spec: StudySpec | str | Path,
    *,
    n_trials: int | None = None,
    max_parallel: int | None = None,
    timeout: float | None = None,
    progress: bool | None = None,
    on_interrupt: str | None = None,
    poll_interval: float = 0.05,
    log: Callable[[str], None] | None = None,
    live_interval: float = 10.0,
) -> StudyReport:
    """Run (or resume) a study to its budget; see :class:`Driver`. Returns a :class:`StudyReport`."""
    if not isinstance(spec, StudySpec):
        spec = load_spec(spec)
    check_launch(spec)
    driver = Driver(
        spec, n_trials=n_trials, max_parallel=max_parallel, timeout=timeout, progress=progress,
        on_interrupt=on_interrupt, poll_interval=poll_interval, log=log, live_interval=live_interval,
    )
    with stop_signals_interrupt():  # SIGTERM and SIGHUP stop it like Ctrl-C (sweeper.run.interrupts)
        return driver.run()
