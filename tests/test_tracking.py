"""MLflow tracking against a real MLflow store (SQLite) and a real Optuna study (SQLite storage).

A small study is simulated the way the driver and the trial processes will run it: the driver
owns the StudyTracker and the Optuna study; three trials run as separate processes
(tests/tracking_trial_stub.py, which drives a real TrialTracker through the trainer's
MultiReporter), two in the test process. Everything is read back through MlflowClient.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from sweeper import tracking
from sweeper.run.storage import default_tracking_uri
from sweeper.tracking import StudyTracker, TrialTracker, mark_trial
from trainers.config import RunConfig, config_to_dict

REPO = Path(__file__).resolve().parents[1]
STUB = REPO / "tests" / "tracking_trial_stub.py"
EXPERIMENT = "tracking-test"
STUDY = "tracking-test"

# trial number -> how it runs and ends
PLAN = {
    0: dict(where="process", end="completed", params={"clip.eps_high": 0.28, "entropy.method": "siren", "entropy.siren.top_p": 0.9},
            steps=6, eval_every=2, pass_slope=0.10, entropy_start=1.5),
    1: dict(where="inline", end="stopped", stop_reason="entropy_collapse",
            params={"clip.eps_high": 0.22, "entropy.method": "aer"}, steps=4, eval_every=2, pass_slope=0.05, entropy_start=0.5),
    2: dict(where="process", end="failed", params={"clip.eps_high": 0.35, "entropy.method": "siren", "entropy.siren.top_p": 0.7},
            steps=5, eval_every=2, pass_slope=0.02, entropy_start=2.0),
    3: dict(where="process", end="completed", params={"clip.eps_high": 0.30, "entropy.method": "aer"},
            steps=6, eval_every=2, pass_slope=0.12, entropy_start=1.2),
    # its process "died": no on_end, no mark_trial; StudyTracker.refresh must reconcile it with Optuna
    4: dict(where="inline", end="died", params={"clip.eps_high": 0.25, "entropy.method": "siren", "entropy.siren.top_p": 0.8},
            steps=3, eval_every=2, pass_slope=0.01, entropy_start=1.0),
}
LONG_LEVELS = list(range(2500))  # a config value longer than MLflow's 6000-character param limit


def sample(trial: optuna.Trial) -> dict:
    sampled = {
        "clip.eps_high": trial.suggest_float("clip.eps_high", 0.1, 0.4),
        "entropy.method": trial.suggest_categorical("entropy.method", ["siren", "aer"]),
    }
    if sampled["entropy.method"] == "siren":
        sampled["entropy.siren.top_p"] = trial.suggest_float("entropy.siren.top_p", 0.5, 1.0)
    return sampled


def trial_config(sampled: dict) -> dict:
    config = config_to_dict(RunConfig())
    config["data"]["synthetic"]["levels"] = LONG_LEVELS
    for path, value in sampled.items():
        node = config
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    config["entropy"]["method"] = sampled["entropy.method"]
    return config


def run_inline(args: dict) -> tuple[str, list]:
    """A trial in the driver's own process (same code path as the stub, minus the process)."""
    tracker = TrialTracker(args["uri"], args["experiment"], args["parent_run_id"], args["trial_number"], args["config"],
                           args["sampled"], args["job_id"], args["log_paths"])
    tracker.on_start({"config": args["config"], "output_dir": args["output_dir"], "resumed_from_step": 0, "num_processes": 1})
    validations = []
    for step in range(1, args["steps"] + 1):
        tracker.on_train_step(step, {"train/entropy": args["entropy_start"] - 0.01 * step, "train/reward_mean": 0.1 * step})
        if step % args["eval_every"] == 0:
            value = args["pass_slope"] * step
            tracker.on_validation(step, {"val/pass@8": value, "val/pass@1": value / 2})
            validations.append([step, value])
    if args["end"] != "died":
        tracker.on_end({"status": args["end"], "step": args["steps"], "stop_reason": args.get("stop_reason")})
    return tracker.run_id, validations


def parse_stub_output(stdout: str) -> tuple[str, list]:
    run_id = next(line.split()[1] for line in stdout.splitlines() if line.startswith("RUN_ID "))
    validations = json.loads(next(line[4:] for line in stdout.splitlines() if line.startswith("VAL ")))
    return run_id, validations


@pytest.fixture(scope="module")
def tracked_study(tmp_path_factory):
    study_dir = tmp_path_factory.mktemp("study")
    uri = default_tracking_uri(study_dir)
    study_tracker = StudyTracker(uri, EXPERIMENT, STUDY, objective_metric="val/pass@8")
    parent_run_id = study_tracker.start()
    assert parent_run_id is not None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY, storage=f"sqlite:///{study_dir / 'optuna.db'}", direction="maximize")
    trials, args_by_number, processes, results = {}, {}, {}, {}
    for number, plan in PLAN.items():
        study.enqueue_trial(plan["params"])
        trial = study.ask()
        assert trial.number == number
        sampled = sample(trial)
        output_dir = study_dir / "trials" / f"{number:04d}"
        args = dict(uri=uri, experiment=EXPERIMENT, parent_run_id=parent_run_id, trial_number=number,
                    config=trial_config(sampled), sampled=sampled, job_id=f"job-{100 + number}",
                    log_paths={"stdout": str(output_dir / "stdout.log"), "stderr": str(output_dir / "stderr.log")},
                    output_dir=str(output_dir), **{k: v for k, v in plan.items() if k not in ("where", "params")})
        trials[number], args_by_number[number] = trial, args
        if plan["where"] == "process":  # all three run at once, writing the same SQLite store
            processes[number] = subprocess.Popen([sys.executable, str(STUB), json.dumps(args)], cwd=study_dir,
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for number, plan in PLAN.items():
        if plan["where"] == "inline":
            results[number] = (*run_inline(args_by_number[number]), "", 0)
    for number, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        results[number] = (*parse_stub_output(stdout), stderr, process.returncode)

    # the driver's side: report to Optuna, tell, mark the run
    for number, plan in PLAN.items():
        run_id, validations, stderr, returncode = results[number]
        trial = trials[number]
        for step, value in validations:
            trial.report(value, step)
        if plan["end"] == "completed":
            assert returncode == 0, stderr
            study.tell(trial, validations[-1][1])
            assert mark_trial(uri, run_id, "COMPLETE", value=validations[-1][1])
        elif plan["end"] == "stopped":
            trial.set_user_attr("prune_reason", plan["stop_reason"])
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            assert mark_trial(uri, run_id, "PRUNED", plan["stop_reason"])
        elif plan["end"] == "failed":
            assert returncode == 1
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            assert mark_trial(uri, run_id, "FAIL", None, stderr_tail="\n".join(stderr.splitlines()[-20:]))
        else:  # died: the driver learns it from Optuna only and never marks the run
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    study_tracker.refresh(study)
    study_tracker.end("FINISHED")
    return SimpleNamespace(uri=uri, study_dir=study_dir, study=study, parent_run_id=parent_run_id,
                           run_ids={n: r[0] for n, r in results.items()}, args=args_by_number,
                           validations={n: r[1] for n, r in results.items()}, stderr={n: r[2] for n, r in results.items()},
                           client=MlflowClient(tracking_uri=uri))


def test_experiment_and_parent_run(tracked_study):
    client = tracked_study.client
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.artifact_location == (tracked_study.study_dir / "mlartifacts" / EXPERIMENT).resolve().as_uri()
    assert experiment.tags[tracking.TAG_STUDY] == STUDY
    parent = client.get_run(tracked_study.parent_run_id)
    assert parent.info.run_name == f"study-{STUDY}"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[tracking.TAG_ROLE] == "study"
    assert parent.data.tags[tracking.TAG_STUDY] == STUDY
    assert tracking.TAG_PARENT not in parent.data.tags


def test_children_nested_under_parent_across_processes(tracked_study):
    client = tracked_study.client
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if r.info.run_id != tracked_study.parent_run_id]
    assert len(runs) == 1 + len(PLAN)
    assert {r.data.tags[tracking.TAG_PARENT] for r in children} == {tracked_study.parent_run_id}
    assert sorted(r.info.run_name for r in children) == [f"trial-{n:04d}" for n in PLAN]
    by_number = tracking.find_trial_runs(client, tracked_study.parent_run_id)
    assert {n: r.info.run_id for n, r in by_number.items()} == tracked_study.run_ids
    assert tracking.find_trial_run_id(tracked_study.uri, tracked_study.parent_run_id, 2) == tracked_study.run_ids[2]


def test_trial_processes_never_lost_the_store(tracked_study):
    for number, stderr in tracked_study.stderr.items():  # three processes wrote one SQLite store at once
        assert "TrackingUnavailableWarning" not in stderr, stderr


def test_states_statuses_and_tags(tracked_study):
    client = tracked_study.client
    expected = {0: ("COMPLETE", "FINISHED"), 1: ("PRUNED", "FINISHED"), 2: ("FAIL", "FAILED"),
                3: ("COMPLETE", "FINISHED"), 4: ("FAIL", "FAILED")}  # 4: reconciled by refresh()
    for number, (state, status) in expected.items():
        run = client.get_run(tracked_study.run_ids[number])
        tags = run.data.tags
        args = tracked_study.args[number]
        assert (tags[tracking.TAG_STATE], run.info.status) == (state, status), number
        assert tags[tracking.TAG_TRIAL_NUMBER] == str(number)
        assert tags[tracking.TAG_ROLE] == "trial"
        assert tags[tracking.TAG_JOB_ID] == f"job-{100 + number}"
        assert tags["sweeper.log.stdout"] == args["log_paths"]["stdout"]
        assert tags["sweeper.log.stderr"] == args["log_paths"]["stderr"]
        assert tags["sweeper.output_dir"] == args["output_dir"]
        assert json.loads(tags["sweeper.metric_names"]) == {"val/pass@8": "val/pass_at_8", "val/pass@1": "val/pass_at_1"}
    assert client.get_run(tracked_study.run_ids[1]).data.tags[tracking.TAG_PRUNE_REASON] == "entropy_collapse"
    assert client.get_run(tracked_study.run_ids[1]).data.tags["mlflow.note.content"] == "PRUNED: entropy_collapse"
    assert client.get_run(tracked_study.run_ids[3]).data.tags["mlflow.note.content"] == "COMPLETE (objective 0.72)"
    assert tracking.TAG_PRUNE_REASON not in client.get_run(tracked_study.run_ids[0]).data.tags
    assert client.get_run(tracked_study.run_ids[2]).data.tags["mlflow.note.content"] == (
        "FAIL: RuntimeError: CUDA error: an illegal memory access was encountered (stand-in crash)")
    assert client.get_run(tracked_study.run_ids[3]).data.metrics["objective"] == pytest.approx(0.72)


def test_params_flattened_with_sampled_marked(tracked_study):
    client = tracked_study.client
    flat_default = tracking.flatten_config(config_to_dict(RunConfig()))
    assert len(flat_default) > 50
    for number, args in tracked_study.args.items():
        run = client.get_run(tracked_study.run_ids[number])
        params, tags = run.data.params, run.data.tags
        assert set(flat_default) <= set(params)  # every field of the resolved config, by dotted path
        assert params["clip.eps_high"] == str(args["sampled"]["clip.eps_high"])
        assert params["entropy.method"] == args["sampled"]["entropy.method"]
        assert params["eval.k"] == "[1, 8]"
        assert params["model.chat_template"] == "false"
        assert params["data.dataset"] == "null"
        assert params["rollout.group_size"] == "8"
        long_value = params["data.synthetic.levels"]  # truncated to MLflow's limit, marked as such
        assert len(long_value) <= tracking.MAX_PARAM_VALUE and long_value.endswith("...[truncated]")
        assert long_value.startswith("[0, 1, 2, 3")
        assert json.loads(tags[tracking.TAG_SAMPLED]) == sorted(args["sampled"])
        for path, value in args["sampled"].items():
            assert params[f"sampled/{path}"] == str(value)
        assert not any(k.startswith("sampled/") and k[len("sampled/"):] not in args["sampled"] for k in params)
    assert "entropy.siren.top_p" in json.loads(client.get_run(tracked_study.run_ids[0]).data.tags[tracking.TAG_SAMPLED])
    assert "sampled/entropy.siren.top_p" not in client.get_run(tracked_study.run_ids[1]).data.params


def test_metric_histories_with_steps(tracked_study):
    client = tracked_study.client
    for number, args in tracked_study.args.items():
        run_id = tracked_study.run_ids[number]
        last_step = args["steps"] - 1 if args["end"] == "failed" else args["steps"]
        entropy = [(m.step, m.value) for m in client.get_metric_history(run_id, "train/entropy")]
        assert sorted(entropy) == [(s, pytest.approx(args["entropy_start"] - 0.01 * s)) for s in range(1, last_step + 1)]
        reward = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/reward_mean"))
        assert [s for s, _ in reward] == list(range(1, last_step + 1))
        pass8 = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val/pass_at_8"))
        expected = [(s, pytest.approx(args["pass_slope"] * s)) for s in range(args["eval_every"], last_step + 1, args["eval_every"])]
        assert pass8 == expected and len(expected) >= 1
        pass1 = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val/pass_at_1"))
        assert pass1 == [(s, pytest.approx(v / 2)) for s, v in tracked_study.validations[number]]


def test_artifacts(tracked_study):
    client = tracked_study.client
    for number, args in tracked_study.args.items():
        run_id = tracked_study.run_ids[number]
        names = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "config")}
        assert tracking.CONFIG_ARTIFACT in names
        config = yaml.safe_load(Path(client.download_artifacts(run_id, tracking.CONFIG_ARTIFACT, str(tracked_study.study_dir / f"dl{number}"))).read_text())
        assert config == args["config"]
        assert (tracking.STDERR_ARTIFACT in names) == (number == 2)
    tail = Path(client.download_artifacts(tracked_study.run_ids[2], tracking.STDERR_ARTIFACT, str(tracked_study.study_dir / "dl-err"))).read_text()
    assert "CUDA error: an illegal memory access was encountered (stand-in crash)" in tail
    assert "Traceback" in tail

    parent = tracked_study.parent_run_id
    plots = {Path(a.path).name for a in client.list_artifacts(parent, "plots")}
    assert plots == {"optimization_history.png", "param_importances.png", "parallel_coordinates.png",
                     "intermediate_values.png", "entropy_overlay.png", "pass_at_k_overlay.png"}
    for name in plots:
        assert Path(client.download_artifacts(parent, f"plots/{name}", str(tracked_study.study_dir / "dl-plots"))).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = Path(client.download_artifacts(parent, "summary.md", str(tracked_study.study_dir / "dl-summary"))).read_text()
    assert "## Best: trial 3 (`trial-0003`), value 0.72" in summary
    assert "| 1 | trial-0001 | PRUNED | 0.2 (last reported) | entropy_collapse |" in summary
    best = json.loads(Path(client.download_artifacts(parent, "best_params.json", str(tracked_study.study_dir / "dl-best"))).read_text())
    assert best["trial"] == 3 and best["params"] == PLAN[3]["params"]


def test_parent_summary_metrics_and_best_tags(tracked_study):
    run = tracked_study.client.get_run(tracked_study.parent_run_id)
    metrics, tags = run.data.metrics, run.data.tags
    assert metrics["study/best_value"] == pytest.approx(0.72)
    assert (metrics["study/n_trials"], metrics["study/n_complete"], metrics["study/n_pruned"], metrics["study/n_fail"],
            metrics["study/n_running"]) == (5, 2, 1, 2, 0)
    assert tags["sweeper.best_trial"] == "3"
    assert tags["mlflow.note.content"].startswith(
        "Study tracking-test: 5 trials (COMPLETE 2, PRUNED 1, FAIL 2). Best: trial 3 (trial-0003), value 0.72.")
    assert tags["sweeper.best.entropy.method"] == "aer"
    assert tags["sweeper.best.clip.eps_high"] == "0.3"
    assert "sweeper.best.entropy.siren.top_p" not in tags


def test_restart_resumes_the_same_parent_run(tracked_study):
    again = StudyTracker(tracked_study.uri, EXPERIMENT, STUDY)
    assert again.start() == tracked_study.parent_run_id
    client = tracked_study.client
    assert client.get_run(tracked_study.parent_run_id).info.status == "RUNNING"
    again.refresh(tracked_study.study)
    again.end("completed")
    assert client.get_run(tracked_study.parent_run_id).info.status == "FINISHED"
    experiment = client.get_experiment_by_name(EXPERIMENT)
    parents = client.search_runs([experiment.experiment_id], "tags.`sweeper.role` = 'study'")
    assert [r.info.run_id for r in parents] == [tracked_study.parent_run_id]


def test_log_export_lands_on_parent(tracked_study, tmp_path):
    exported = tmp_path / "best.yaml"
    exported.write_text("seed: 3\n")
    client = tracked_study.client
    status_before = client.get_run(tracked_study.parent_run_id).info.status
    StudyTracker(tracked_study.uri, EXPERIMENT, STUDY).log_export(exported)  # as `sweeper export` does, later
    assert client.get_run(tracked_study.parent_run_id).info.status == status_before
    assert [a.path for a in client.list_artifacts(tracked_study.parent_run_id, "exports")] == ["exports/best.yaml"]
    assert client.get_run(tracked_study.parent_run_id).data.tags["sweeper.last_export"] == "best.yaml"


def test_requeued_trial_reopens_its_run(tracked_study):
    """A trial process restarted for the same trial (Slurm requeue, resume) logs into the same run."""
    args = tracked_study.args[4]
    run_id = tracked_study.run_ids[4]
    client = tracked_study.client
    n_params = len(client.get_run(run_id).data.params)
    resumed = TrialTracker(tracked_study.uri, EXPERIMENT, tracked_study.parent_run_id, 4, args["config"], args["sampled"],
                           "job-999", args["log_paths"])
    assert resumed.run_id == run_id
    assert client.get_run(run_id).info.status == "RUNNING"
    resumed.on_start({"config": args["config"], "output_dir": args["output_dir"], "resumed_from_step": 3, "num_processes": 1})
    resumed.on_train_step(4, {"train/entropy": 0.5})
    resumed.on_end({"status": "completed", "step": 4, "stop_reason": None})
    by_run_id = TrialTracker(tracked_study.uri, EXPERIMENT, tracked_study.parent_run_id, 4, args["config"], args["sampled"],
                             "job-999", args["log_paths"], run_id=run_id)
    by_run_id.on_end({"status": "completed", "step": 4, "stop_reason": None})
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.TAG_JOB_ID] == "job-999"
    assert run.data.tags["sweeper.resumed_from_step"] == "3"
    assert len(run.data.params) == n_params
    assert [m.step for m in client.get_metric_history(run_id, "train/entropy")][-1] == 4
    assert len(tracking.find_trial_runs(client, tracked_study.parent_run_id)) == len(PLAN)


def test_report_command_writes_plots_and_summary(tracked_study, tmp_path):
    summary = tracking.write_study_report(tracked_study.study, tmp_path / "report", tracked_study.uri, EXPERIMENT,
                                          objective_metric="val/pass@8")
    text = summary.read_text()
    assert "# Study `tracking-test`" in text
    assert "- Trials: 5 — COMPLETE 2, PRUNED 1, FAIL 2" in text
    assert "![entropy per trial (train/entropy)](plots/entropy_overlay.png)" in text
    assert "![pass@k per trial (val/pass@8)](plots/pass_at_k_overlay.png)" in text
    assert {p.name for p in (tmp_path / "report" / "plots").iterdir()} >= {"entropy_overlay.png", "pass_at_k_overlay.png",
                                                                          "optimization_history.png"}


def test_metric_names_mlflow_rejects_are_mapped(tmp_path):
    assert tracking.mlflow_key("val/pass@8") == "val/pass_at_8"
    assert tracking.mlflow_key("val/maj@16") == "val/maj_at_16"
    assert tracking.mlflow_key("train/entropy") == "train/entropy"
    assert tracking.mlflow_key("siren/H target (nats)") == "siren/H target _nats_"
    assert tracking.mlflow_key("a//b/") == "a/b"
    assert tracking.display_key("val/pass_at_8") == "val/pass@8"
    names = ["val/pass@8", "val/mean@8", "weird%key", "x/../y", "../up"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = TrialTracker(uri, "names", None, 0, {"a": {"b@c": 1}}, {})
    tracker.on_train_step(1, {name: 1.0 for name in names})
    tracker.on_end({"status": "completed", "step": 1})
    run = MlflowClient(tracking_uri=uri).get_run(tracker.run_id)
    assert set(run.data.metrics) == {tracking.mlflow_key(n) for n in names}
    assert run.data.params["a.b_at_c"] == "1"
    assert tracking.TAG_PARENT not in run.data.tags  # no study run in that experiment: a top-level run
