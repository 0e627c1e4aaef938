"""The driver-trial contract: what the driver and a trial process hand each other, and the one
classification of a trial's state that every report uses.

A trial's folder is ``<study dir>/trials/NNNNN/`` (:func:`trial_folder`). The driver writes, before
it submits the trial process:

* ``config.yaml`` (:data:`CONFIG_FILE`): the trial's complete RunConfig (``sweeper train config.yaml``
  reruns it by hand); the trainer's output folder is ``run/`` (:data:`RUN_DIR`);
* ``trial.json`` (:data:`TICKET_FILE`): a :class:`TrialTicket`: storage URL (without its password), study name, trial number
  and id, objective(s), pruner spec (the pruner is *not* stored in Optuna's storage: a process that
  re-opened the study with the default pruner would silently never prune), tracking, trainer entry point.

The trial process writes ``outcome.json`` (:data:`OUTCOME_FILE`): an :class:`Outcome` (COMPLETE with its
value(s) and their standard errors, PRUNED with the reason, or FAIL with the error). A trial of a study
with ``budget.seeds`` R > 1 runs its config once per seed (the first in ``run/``, seed s in ``run-seed<s>/``);
the seeds it finished are in ``replicates.json`` (:data:`REPLICATES_FILE`) until its outcome is written. The executor's files are in ``submitit/``
(:data:`SUBMITIT_DIR`). The driver alone tells Optuna a trial's final state, from the outcome, or FAIL
when the process died without one.

Every report of a study (``sweeper status``, ``sweeper report``, the driver's summary, the MLflow parent
run) counts trials by :func:`trial_state`: Optuna's state, except that a trial told FAIL because it was
rejected before launch is ``REJECTED`` and one lost with a dead driver (and re-queued) is ``LOST``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from sweeper.redaction import STORAGE_ENV, TRACKING_ENV, strip_secret, with_secret
from sweeper.statistics import Estimate, mean_and_se, replicate_summary

TRIALS_DIR = "trials"
TICKET_FILE = "trial.json"
CONFIG_FILE = "config.yaml"
OUTCOME_FILE = "outcome.json"
RUN_DIR = "run"             # the trainer's output_dir inside the trial folder
SUBMITIT_DIR = "submitit"   # the executor's files (pickles, logs) inside the trial folder
TRACKING_SPILL_FILE = "mlflow_unsent.json"  # what a trial could not send to MLflow; the driver sends it later
REPLICATES_FILE = "replicates.json"  # the seeds a trial has finished (budget.seeds > 1)
STEP0_CACHE_DIR = "step0_cache"      # in the study folder: the untrained model's validation, computed once
PROGRESS_FILE = "progress.json"      # the running trial's seed, step and last validation (sweeper.run.trial.progress)
STOP_PREFIX = "pruned:"     # the trial reporter's stop reason: "pruned:<reason>"

# Trial user attrs (Optuna storage) written by the driver and read by status, export and tracking.
ATTR_TRIAL_DIR = "trial_dir"
ATTR_CONFIG = "config"
ATTR_JOB_ID = "job_id"
ATTR_LOG_PATHS = "log_paths"
ATTR_REJECTED = "rejected"          # the reason a sampled config was refused before launch
ATTR_LOST = "lost"                  # True: the driver stopped and the trial's job was gone
ATTR_REQUEUED_FROM = "requeued_from"
ATTR_ENQUEUED = "enqueued"
ATTR_BASELINE = "baseline"          # True: the study's baseline config (objective.baseline or enqueue[0])
ATTR_FAIL_REASON = "fail_reason"
ATTR_STDERR_TAIL = "stderr_tail"
ATTR_PRUNE_REASON = "prune_reason"
ATTR_STOP_REASON = "stop_reason"      # a pruner's own account of why it stopped a trial (shown before prune_reason)
ATTR_PRUNED_AT_STEP = "pruned_at_step"
ATTR_LAST_STEP = "last_step"
ATTR_MLFLOW_RUN_ID = "mlflow_run_id"
ATTR_OBJECTIVE_SE = "objective_se"      # [SE of each objective value]: over prompts (+ over seeds when R > 1)
ATTR_PROMPTS = "n_prompts"              # validation prompts behind each value
ATTR_SEEDS = "seeds"                    # the training seeds the trial ran
ATTR_REPLICATES = "replicates"          # [{"seed", "values", "per_prompt"}]: per seed, the objective(s) and the
                                        # first objective's per-prompt values (paired comparisons between trials)
ATTR_SAME_CONFIG = "same_config_as"    # a duplicate config: the complete trial whose result it reuses (sweeper.run.reuse)
PER_PROMPT_ATTR_PREFIX = "per_prompt/"  # + step: the first objective's per-prompt values at that validation
ATTR_SEED_VALUES = "seed_values"          # {seed: the objective of that seed's run}, after each finished seed
FUTILITY_PRUNE_REASON = "futility"        # prune_reason of a futility stop (sweeper.study.futility)
ATTR_RACE_WAITING = "race_waiting"        # budget.race rounds: "after seed r" while the trial waits for its round, else ""
ATTR_RACE_PAIRING = "race_pairing"        # budget.race rounds: True on the config that runs its seeds straight (sweeper.run.race)
ATTR_RACE_END = "race_end"                # budget.race rounds: why a trial ended with fewer seeds ("race decided after seed 1 ...")
SEED_CURVE_PREFIX = "seed_curve/"         # + seed: {step: the objective's validation value at that step}


def per_prompt_attr(step: int) -> str:
    """The trial user attr holding the first objective's per-prompt values at validation ``step``."""
    return f"{PER_PROMPT_ATTR_PREFIX}{int(step)}"

STATES = ("COMPLETE", "PRUNED", "FAIL", "REJECTED", "LOST", "RUNNING", "WAITING")
BUDGET_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")  # the trials n_trials counts


def trial_folder(study_dir: str | Path, number: int) -> Path:
    return Path(study_dir) / TRIALS_DIR / f"{number:05d}"


def atomic_write(path: Path, text: str, private: bool = False) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old or the new file, never a part, and the new
    one survives a crash: a temporary file of a name no other writer uses, fsync'ed, then renamed.
    ``private``: readable by its owner only (0600 from the first byte), for files that hold anything
    sensitive; otherwise the mode the umask gives."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if not private:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: a plain file gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _umask() -> int:
    """This process's umask, read without setting it (os.umask would race with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some filesystems refuse to open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the ticket


@dataclass
class TrialTicket:
    """Everything a trial process needs besides its config (``trial.json``)."""

    storage: str
    study_name: str
    trial_number: int
    trial_id: int
    study_dir: str
    entrypoint: str
    objectives: list[dict[str, Any]]                     # ObjectiveSpec dumps
    pruner: dict[str, Any]                                # PrunerSpec dump (includes health)
    trial_steps: int
    sampled: dict[str, Any] = field(default_factory=dict)   # Optuna name -> value
    sampled_paths: dict[str, Any] = field(default_factory=dict)  # config path -> value, sampled ones only
    tracking: dict[str, Any] = field(default_factory=dict)  # enabled, uri, experiment, parent_run_id
    seeds: list[int] = field(default_factory=list)          # training seeds to run (budget.seeds); [] = the config's
    baseline: bool = False                                  # the study's baseline: no score-based pruning
    seeds_min: int = 0                                      # racing: seeds every config runs (0 = all of seeds)
    race: str = "in_trial"                                  # budget.race: rounds = wait after each seed (sweeper.run.race)

    def write(self, trial_dir: Path) -> None:
        """``trial.json`` holds no password: the URLs are written without one (the trial process gets them
        with it through its environment, :mod:`sweeper.redaction`)."""
        data = asdict(self)
        data["storage"] = strip_secret(self.storage)
        if data["tracking"].get("uri"):
            data["tracking"]["uri"] = strip_secret(data["tracking"]["uri"])
        atomic_write(Path(trial_dir) / TICKET_FILE, json.dumps(data, indent=2, default=str))

    @classmethod
    def read(cls, trial_dir: Path) -> "TrialTicket":
        """The ticket in ``trial_dir``; ``ValueError`` naming the file and what is wrong (the dataclass's fields
        are the file's schema, as :class:`Outcome`'s are ``outcome.json``'s)."""
        path = Path(trial_dir) / TICKET_FILE
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a JSON object was expected, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing, unknown = sorted(required - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise ValueError(f"{path}: " + "; ".join(([f"missing {missing}"] if missing else [])
                                                    + ([f"unknown keys {unknown}"] if unknown else [])))
        ticket = cls(**data)  # the URLs' passwords come from this process's environment where it has them
        ticket.storage = with_secret(ticket.storage, STORAGE_ENV)
        if ticket.tracking.get("uri"):
            ticket.tracking["uri"] = with_secret(ticket.tracking["uri"], TRACKING_ENV)
        return ticket


# --------------------------------------------------------------------------- the outcome


@dataclass
class Outcome:
    """How a trial process ended (``outcome.json``). ``PREEMPTED`` is never written: the requeued job
    goes on with the same trial. ``AWAITING_ROUND`` (``budget.race: rounds``): the trial finished a seed and waits
    for its race round, still RUNNING; its values are those of a COMPLETE outcome over the seeds it finished
    (:mod:`sweeper.run.race` decides what happens next)."""

    state: Literal["COMPLETE", "PRUNED", "FAIL", "PREEMPTED", "AWAITING_ROUND"]
    step: int | None = None                               # the last training step
    values: list[float] | None = None                     # COMPLETE: the objective value(s)
    partial_values: list[float | None] | None = None      # PRUNED: the objective(s) aggregated so far
    prune_reason: str | None = None                       # PRUNED: pass@k | entropy_collapse | entropy_explosion | nan
    message: str | None = None                            # PRUNED: what the pruner or rule saw
    pruned_at_step: int | None = None
    fail_reason: str | None = None                        # FAIL: one line
    traceback: str | None = None                          # FAIL: an exception in the trial process
    values_se: list[float | None] | None = None           # SE of each value (or partial value): seeds, else prompts
    prompts: int | None = None                            # validation prompts behind the values
    per_prompt: list[list[float] | None] | None = None    # one run: each objective's per-prompt values, aggregated
    replicates: list[dict[str, Any]] | None = None        # per seed: {"seed", "values", "per_prompt"}
    objective_history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)  # the trainer's summary
    num_processes: int = 1                                # data-parallel ranks of the training run
    resumed_from_step: int = 0                            # > 0: this run continued a preempted job
    seconds: float | None = None                          # inside the trial process

    def write(self, trial_dir: Path) -> None:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        atomic_write(Path(trial_dir) / OUTCOME_FILE, json.dumps(data, indent=2, default=str))

    @classmethod
    def read(cls, trial_dir: Path) -> "Outcome | None":
        """The outcome in ``trial_dir``, validated: None when there is none (yet); a FAIL naming what is wrong
        when the file cannot be read, is not JSON, or holds an unknown state or values of the wrong kind."""
        path = Path(trial_dir) / OUTCOME_FILE
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            return cls("FAIL", fail_reason=f"{OUTCOME_FILE} cannot be read: {type(error).__name__}: {error}")
        problem = outcome_problem(data)
        if problem is not None:
            return cls("FAIL", fail_reason=f"{OUTCOME_FILE} is invalid: {problem}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def seed_mean(self) -> list[float] | None:
        """A PRUNED trial that finished seeds: its value(s), the mean over those seeds (the trial process puts it in
        ``partial_values``); None otherwise. The driver stores it as Optuna's value, which ``tell(PRUNED)`` would
        take from the first seed's last validation."""
        values = self.partial_values or []
        if self.state != "PRUNED" or not self.replicates or not values:
            return None
        return [float(v) for v in values] if all(v is not None and math.isfinite(float(v)) for v in values) else None

    def user_attrs(self) -> dict[str, Any]:
        """The trial user attrs the driver records for this outcome (the stderr tail is the driver's)."""
        attrs: dict[str, Any] = {}
        if self.state == "FAIL":
            attrs[ATTR_FAIL_REASON] = self.fail_reason or "unknown"
        elif self.state == "PRUNED":
            attrs[ATTR_PRUNE_REASON] = self.prune_reason
            attrs["prune_message"] = self.message
            if self.pruned_at_step is not None:
                attrs[ATTR_PRUNED_AT_STEP] = self.pruned_at_step
        if self.values_se is not None:
            attrs[ATTR_OBJECTIVE_SE] = self.values_se
        if self.prompts is not None:
            attrs[ATTR_PROMPTS] = self.prompts
        if self.replicates:
            attrs[ATTR_SEEDS] = [r["seed"] for r in self.replicates]
            attrs[ATTR_REPLICATES] = self.replicates
        if self.step is not None:
            attrs[ATTR_LAST_STEP] = self.step
        if self.seconds is not None:
            attrs["trial_seconds"] = round(float(self.seconds), 3)
        return attrs


OUTCOME_STATES = ("COMPLETE", "PRUNED", "FAIL", "PREEMPTED", "AWAITING_ROUND")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def outcome_problem(data: Any) -> str | None:
    """What makes ``data`` (a parsed ``outcome.json``) not an :class:`Outcome`, or None: the schema of the file,
    checked on read so that a corrupt or foreign file is a FAIL with a reason, never a crash or a guess."""
    if not isinstance(data, dict):
        return f"a JSON object was expected, got {type(data).__name__}"
    state = data.get("state")
    if state not in OUTCOME_STATES:
        return f"state {state!r} is not one of {', '.join(OUTCOME_STATES)}"
    values = data.get("values")
    if state in ("COMPLETE", "AWAITING_ROUND") and (not isinstance(values, list) or not values or not all(_is_number(v) for v in values)):
        return f"a {state} outcome needs values, a non-empty list of numbers; got {values!r}"
    for name in ("step", "pruned_at_step", "prompts", "num_processes", "resumed_from_step"):
        if data.get(name) is not None and not (isinstance(data[name], int) and not isinstance(data[name], bool)):
            return f"{name} must be an integer, got {data[name]!r}"
    for name in ("prune_reason", "message", "fail_reason", "traceback"):
        if data.get(name) is not None and not isinstance(data[name], str):
            return f"{name} must be a string, got {type(data[name]).__name__}"
    for name in ("partial_values", "values_se"):
        if data.get(name) is not None and not (isinstance(data[name], list) and all(v is None or _is_number(v) for v in data[name])):
            return f"{name} must be a list of numbers, got {data[name]!r}"
    for name in ("objective_history", "summary"):
        if data.get(name) is not None and not isinstance(data[name], dict):
            return f"{name} must be a mapping, got {type(data[name]).__name__}"
    return None


# --------------------------------------------------------------------------- states


def trial_state(trial: Any) -> str:
    """One of :data:`STATES` for an Optuna ``FrozenTrial``: its state, except REJECTED and LOST."""
    attrs = trial.user_attrs
    if attrs.get(ATTR_REJECTED):
        return "REJECTED"
    if attrs.get(ATTR_LOST):
        return "LOST"
    return trial.state.name


def counts_as_budget(trial: Any) -> bool:
    """Whether ``budget.n_trials`` counts the trial: everything that ran or runs, not the rejected or lost
    (a lost trial's re-queued copy takes its place)."""
    return trial_state(trial) in BUDGET_STATES


def objective_estimate(trial: Any, index: int = 0) -> Estimate | None:
    """A trial's value of objective ``index`` with its standard error (a :class:`sweeper.statistics.Estimate`),
    or None when it has no value. Replicated (2 or more seeds, or a PRUNED trial that finished seeds): the mean
    over its seeds with :func:`~sweeper.statistics.replicate_summary`'s SE; else COMPLETE: the objective and its
    recorded SE; PRUNED in its first seed: the last value it reported (Optuna's value of a pruned trial) with
    the SE over that validation's prompts."""
    attrs = trial.user_attrs
    if trial.values is None or index >= len(trial.values):
        return None
    value = float(trial.values[index])
    replicates = attrs.get(ATTR_REPLICATES) or []
    usable = replicates and all(index < len(r.get("values") or []) for r in replicates)
    if usable and (len(replicates) > 1 or trial.state.name == "PRUNED"):   # over seeds (a study run before issue 23 too)
        estimate = replicate_summary([float(r["values"][index]) for r in replicates],
                                     [r.get("per_prompt") if index == 0 else None for r in replicates])
        return Estimate(estimate.value, estimate.se, int(attrs.get(ATTR_PROMPTS) or estimate.prompts), estimate.seeds)
    if trial.state.name == "COMPLETE":
        errors = attrs.get(ATTR_OBJECTIVE_SE) or []
        se = errors[index] if index < len(errors) and errors[index] is not None else math.nan
        return Estimate(value, float(se), int(attrs.get(ATTR_PROMPTS) or 0), len(attrs.get(ATTR_SEEDS) or [0]))
    vector = attrs.get(per_prompt_attr(max(trial.intermediate_values))) if trial.intermediate_values and index == 0 else None
    se = mean_and_se(vector)[1] if vector else math.nan
    return Estimate(value, se, len(vector or []), 1)


def count_states(trials: Iterable[Any]) -> dict[str, int]:
    """{state: number of trials} for every state of :data:`STATES` (zeros included)."""
    counts = {state: 0 for state in STATES}
    for trial in trials:
        state = trial_state(trial)
        counts[state] = counts.get(state, 0) + 1
    return counts


def seed_curve_attr(seed: int) -> str:
    return f"{SEED_CURVE_PREFIX}{int(seed)}"


def trial_seed_values(attrs: Mapping[str, Any]) -> dict[int, float]:
    """{seed: objective} a trial has finished: its ``seed_values`` attr, else its ``replicates``."""
    from sweeper.decisions import seed_values

    return seed_values(attrs.get(ATTR_SEED_VALUES)) or seed_values(attrs.get(ATTR_REPLICATES))
