"""The MLflow UI as a user sees it: a real ``mlflow server`` and Debian's headless Chromium (Playwright).

A small study is tracked into a SQLite store (parent run + four trial runs); the server is started
the way ``sweeper ui`` starts it (:class:`sweeper.results.ui.MlflowServer`, own process group, stopped as a
whole); the study's runs page is opened, the parent row expanded, and every trial run must be listed
by name. Screenshots go to ``test-artifacts/`` (gitignored).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import optuna
import pytest

from sweeper import tracking
from sweeper.run.storage import default_tracking_uri
from sweeper.tracking import StudyTracker, TrialTracker, mark_trial
from sweeper.results.ui import MlflowServer


def run_url(base_url: str, experiment_id: str, run_id: str, tab: str = "") -> str:
    """A run's page in the MLflow 3 UI (``tab``: "" for the overview, "artifacts", "model-metrics")."""
    suffix = f"/{tab}" if tab else ""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}{suffix}?workflowType=machine_learning"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
STUDY = "ui-check"
ENDS = {0: "COMPLETE", 1: "PRUNED", 2: "FAIL", 3: "COMPLETE"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]


def track_small_study(study_dir: Path) -> tuple[str, str]:
    uri = default_tracking_uri(study_dir)
    study_tracker = StudyTracker(uri, STUDY, STUDY, objective_metric="val/pass@8")
    parent_run_id = study_tracker.start()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY, direction="maximize")
    for number, end in ENDS.items():
        trial = study.ask()
        sampled = {"clip.eps_high": trial.suggest_float("clip.eps_high", 0.2, 0.4),
                   "entropy.method": trial.suggest_categorical("entropy.method", ["siren", "steer"])}
        config = {"clip": {"eps_high": sampled["clip.eps_high"], "eps_low": 0.2}, "entropy": {"method": sampled["entropy.method"]}}
        tracker = TrialTracker(uri, STUDY, parent_run_id, number, config, sampled, f"job-{number}", {})
        for step in range(1, 9):
            tracker.on_train_step(step, {"train/entropy": 1.2 - 0.025 * step * (1 + number)})
            if step % 4 == 0:
                value = 0.1 * step * sampled["clip.eps_high"]
                tracker.on_validation(step, {"val/pass@8": value})
                trial.report(value, step)
        if end == "COMPLETE":
            tracker.on_end({"status": "completed", "step": 8})
            study.tell(trial, value)
            mark_trial(uri, tracker.run_id, "COMPLETE", value=value)
        elif end == "PRUNED":
            tracker.on_end({"status": "stopped", "step": 8, "stop_reason": "entropy_collapse"})
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            mark_trial(uri, tracker.run_id, "PRUNED", "entropy_collapse")
        else:
            tracker.on_end({"status": "failed", "step": 8})
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            mark_trial(uri, tracker.run_id, "FAIL", None, "Traceback (most recent call last):\nRuntimeError: boom")
    study_tracker.refresh(study)
    study_tracker.end("FINISHED")
    return uri, study_tracker.experiment_id, parent_run_id, tracking.find_trial_run_id(uri, parent_run_id, 3)


def test_trial_runs_listed_under_the_study_run(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    uri, experiment_id, parent_run_id, trial3_run_id = track_small_study(tmp_path / "study")
    ARTIFACTS.mkdir(exist_ok=True)
    server = MlflowServer(uri, tracking.default_artifact_root(uri), log_path=tmp_path / "server.log")
    user_data_dir = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    try:
        server.start()
        server.wait_healthy()
        url = tracking.experiment_runs_url(server.url, experiment_id)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                user_data_dir, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1500, "height": 900},
            )
            try:
                page = browser.new_page()
                page.goto(url)
                parent_name = page.get_by_text(f"study-{STUDY}", exact=True)
                expect(parent_name.first).to_be_visible(timeout=60_000)
                for name in (f"trial-{n:04d}" for n in ENDS):  # collapsed under the parent until expanded
                    expect(page.get_by_text(name, exact=True)).to_have_count(0)
                close_assistant = page.get_by_role("button", name="Close")
                if close_assistant.count():
                    close_assistant.first.click()
                parent_row = page.locator(".ag-row").filter(has=page.get_by_text(f"study-{STUDY}", exact=True))
                parent_row.locator("button[data-component-id*='runnamecellrenderer']").first.click()
                for name in (f"trial-{n:04d}" for n in ENDS):
                    expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=30_000)
                page.screenshot(path=str(ARTIFACTS / "mlflow_ui_study_runs.png"))

                # a trial's run page: its params, tags and the link to its parent
                page.goto(run_url(server.url, experiment_id, trial3_run_id))
                expect(page.get_by_text("clip.eps_high", exact=True).first).to_be_visible(timeout=60_000)
                expect(page.get_by_text("sampled/clip.eps_high", exact=True).first).to_be_visible()
                expect(page.get_by_text("sweeper.state", exact=True).first).to_be_visible()
                expect(page.get_by_role("link", name=f"study-{STUDY}").first).to_be_visible(timeout=30_000)
                page.screenshot(path=str(ARTIFACTS / "mlflow_ui_trial_run.png"))

                # the study's plots on the parent run, served from the study folder's artifact store
                page.goto(run_url(server.url, experiment_id, parent_run_id, "artifacts"))
                page.get_by_text("plots", exact=True).first.click()
                page.get_by_text("entropy_overlay.png", exact=True).first.click()
                image = page.get_by_role("img", name="plots/entropy_overlay.png")
                expect(image).to_be_visible(timeout=30_000)
                page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle())
                page.screenshot(path=str(ARTIFACTS / "mlflow_ui_study_plot.png"))
            finally:
                browser.close()
    finally:
        server.stop()
        shutil.rmtree(user_data_dir, ignore_errors=True)
    assert (ARTIFACTS / "mlflow_ui_study_runs.png").stat().st_size > 10_000
