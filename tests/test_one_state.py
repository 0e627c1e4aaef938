"""One state everywhere: a trial's final state comes from its typed ``Outcome`` (or its absence), and Optuna,
the MLflow run (status and ``sweeper.state`` tag), ``sweeper status`` and the report (the parent run's
``study/n_<state>`` metrics and ``summary.md``) all say the same, for a trial that completes, one that crashes,
one killed without an outcome, one whose ``outcome.json`` is corrupt and one whose outcome names an unknown
state; a lost trial (driver and trials killed) is covered by tests/test_faults.py, whose consistency check
compares MLflow with the same classification.

Real driver (in this process), real trial processes (submitit's local executor, the stand-in trainer), real
Optuna and MLflow stores. The faults on ``outcome.json`` are made by a registered executor kind that writes
the bad file over the real one once the trial process has ended, as a disk or a foreign writer would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from mlflow.tracking import MlflowClient

from sweeper.contract import OUTCOME_FILE, Outcome, count_states, trial_state
from sweeper.registry import EXECUTORS
from sweeper.results.status import study_status, trial_rows
from sweeper.run.driver import NO_OUTCOME, run_study
from sweeper.run.executors.local import LocalExecutor, LocalExecutorSpec
from sweeper.run.storage import open_study
from sweeper.study.spec import load_spec
from sweeper.tracking.names import STATE_TO_RUN_STATUS, TAG_STATE, find_study_run, find_trial_runs
from test_sweeper_driver import STANDIN

pytestmark = pytest.mark.slow

FAULTS = {3: "not json {", 4: json.dumps({"state": "EXPLODED", "step": 10})}  # trial number -> what outcome.json becomes


class FaultyJob:
    """A real local job; once it is done, ``outcome.json`` is overwritten for the trials in FAULTS."""

    def __init__(self, job: Any, trial_dir: Path):
        self.job, self.trial_dir = job, Path(trial_dir)

    def done(self) -> bool:
        if not self.job.done():
            return False
        fault = FAULTS.get(int(self.trial_dir.name))
        if fault is not None and (self.trial_dir / OUTCOME_FILE).exists():
            (self.trial_dir / OUTCOME_FILE).write_text(fault)
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.job, name)


class FaultyExecutor(LocalExecutor):
    def submit(self, trial_dir: Path, job_name: str) -> FaultyJob:
        return FaultyJob(super().submit(trial_dir, job_name), trial_dir)


class FaultyExecutorSpec(LocalExecutorSpec):
    type: Literal["faulty_local"]  # type: ignore[assignment]

    def build(self) -> FaultyExecutor:
        return FaultyExecutor(self)


@pytest.fixture
def faulty_executor():
    EXECUTORS.register("faulty_local", FaultyExecutorSpec)
    yield
    EXECUTORS.unregister("faulty_local")


def test_complete_crash_kill_corrupt_and_unknown_outcomes_agree_in_optuna_mlflow_status_and_report(tmp_path, faulty_executor):
    ok = "builtin:tiny-arith"
    configs = [ok, "standin:crash", "standin:die", ok, ok]
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump({
        "study": {"name": "states"},
        "objective": {"metric": "val/pass@8"},
        "base": {"train": {"steps": 6, "eval_every": 2}},
        # optim.lr (ignored by the stand-in) keeps trials 3 and 4 from being the same config as trial 0, whose
        # result they would reuse (sweeper.run.reuse) without running
        "space": {"params": {"model.path": [ok, "standin:crash", "standin:die"], "optim.lr": [1.0e-5, 2.0e-5, 3.0e-5]}},
        "enqueue": [{"model.path": path, "optim.lr": lr} for path, lr in zip(configs, [1.0e-5, 1.0e-5, 1.0e-5, 2.0e-5, 3.0e-5])],
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "budget": {"n_trials": len(configs), "max_parallel": 2},
        "executor": {"type": "faulty_local", "entrypoint": STANDIN},
        "tracking": {"enabled": True},
    }, sort_keys=False))
    run_study(spec_file, progress=False, log=lambda _: None)
    spec = load_spec(spec_file)
    study, _ = open_study(spec, create=False)
    trials = sorted(study.get_trials(), key=lambda t: t.number)

    # Optuna, through the one classification
    states = {t.number: trial_state(t) for t in trials}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "FAIL", 3: "FAIL", 4: "FAIL"}
    reasons = {t.number: t.user_attrs.get("fail_reason", "") for t in trials}
    assert "simulated crash" in reasons[1] and NO_OUTCOME in reasons[2]
    assert reasons[3].startswith(f"{OUTCOME_FILE} cannot be read")
    assert reasons[4] == f"{OUTCOME_FILE} is invalid: state 'EXPLODED' is not one of COMPLETE, PRUNED, FAIL, PREEMPTED, AWAITING_ROUND"

    # MLflow: each trial's run has the status and the state tag of that state
    client = MlflowClient(tracking_uri=spec.tracking.uri)
    experiment = client.get_experiment_by_name(spec.tracking.experiment)
    parent = find_study_run(client, experiment.experiment_id, spec.study.name)
    runs = find_trial_runs(client, parent.info.run_id, experiment.experiment_id)
    assert sorted(runs) == sorted(states)
    for number, state in states.items():
        run = client.get_run(runs[number].info.run_id)
        assert (run.data.tags[TAG_STATE], run.info.status) == (state, STATE_TO_RUN_STATUS[state]), number

    # status: the rows and the counts
    rows, counts = trial_rows(spec, study)
    assert {row["number"]: row["state"] for row in rows} == states
    assert counts == {"COMPLETE": 1, "FAIL": 4}
    assert "EXPLODED" in study_status(spec)

    # the report: the parent run's counts and its summary
    parent = client.get_run(parent.info.run_id)
    expected = count_states(trials)
    assert expected["COMPLETE"] == 1 and expected["FAIL"] == 4
    for state, count in expected.items():
        assert parent.data.metrics[f"study/n_{state.lower()}"] == count, state
    summary_path = Path(client.download_artifacts(parent.info.run_id, "summary.md", str(tmp_path)))
    assert "COMPLETE 1, FAIL 4" in summary_path.read_text()


def test_an_outcome_file_is_validated_on_read(tmp_path):
    assert Outcome.read(tmp_path) is None                                   # none yet
    for text, reason in [
        ("[1, 2]", "a JSON object was expected, got list"),
        (json.dumps({"state": "COMPLETE"}), "a COMPLETE outcome needs values"),
        (json.dumps({"state": "COMPLETE", "values": ["0.5"]}), "a COMPLETE outcome needs values"),
        (json.dumps({"state": "PRUNED", "step": "ten"}), "step must be an integer"),
        (json.dumps({"state": "FAIL", "fail_reason": 3}), "fail_reason must be a string"),
        (json.dumps({"state": "lost"}), "state 'lost' is not one of"),
    ]:
        (tmp_path / OUTCOME_FILE).write_text(text)
        outcome = Outcome.read(tmp_path)
        assert outcome.state == "FAIL" and reason in outcome.fail_reason, (text, outcome.fail_reason)
    written = Outcome("PRUNED", step=4, prune_reason="nan", message="train/loss is nan", pruned_at_step=4, values_se=[0.1])
    written.write(tmp_path)
    assert Outcome.read(tmp_path) == written


def test_a_ticket_is_read_through_its_schema(tmp_path):
    from sweeper.contract import TICKET_FILE, TrialTicket

    ticket = TrialTicket("sqlite:///x.db", "s", 0, 1, str(tmp_path), "m:f", [{"metric": "val/pass@8"}], {"type": "none"}, 10)
    ticket.write(tmp_path)
    assert TrialTicket.read(tmp_path) == ticket
    (tmp_path / TICKET_FILE).write_text(json.dumps({"storage": "sqlite:///x.db", "stray": 1}))
    with pytest.raises(ValueError, match=r"trial.json: missing \[.*'study_name'.*\]; unknown keys \['stray'\]"):
        TrialTicket.read(tmp_path)
