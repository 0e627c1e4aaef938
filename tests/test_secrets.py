"""Secrets in URLs (issue 26, M1): a database password is never written to a file, put in an argv, or shown.

The attack: another user of a shared login node reads the trial folders (``trial.json`` was 0644 on the
shared filesystem), ``mlflow_unsent.json``, the export header, and ``ps`` (the ``mlflow server`` command line
of ``sweeper ui``). Each test reproduces one of those reads on real files and processes.

A SQLite URL with ``?password=`` stands in for a PostgreSQL password where no server is needed: SQLAlchemy
ignores the parameter for SQLite (with a warning), so a whole study really runs on it; the same study on a
real PostgreSQL server with a password login is ``test_a_postgres_study_keeps_its_password_out_of_files``
(marked ``postgres``).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from sweeper.contract import TICKET_FILE, TRACKING_SPILL_FILE, TrialTicket, atomic_write
from sweeper.redaction import STORAGE_ENV, TRACKING_ENV, has_secret, redact_url, secret_environment, strip_secret, with_secret
from sweeper.results.ui import MlflowServer
from sweeper.run.storage import check_cluster_storage
from sweeper.run.storage_kinds import unreachable_message

REPO = Path(__file__).resolve().parents[1]
STANDIN = f"{REPO / 'tests' / 'standin_trainer.py'}:train"
SECRET = "Zq7-s3cret"

# ------------------------------------------------------------------ the one redaction


@pytest.mark.parametrize("url, shown, on_disk", [
    ("postgresql://alice:pw@db:5432/optuna", "postgresql://alice:***@db:5432/optuna", "postgresql://alice@db:5432/optuna"),
    ("postgresql://alice@db/optuna?password=pw&sslmode=require", "postgresql://alice@db/optuna?password=***&sslmode=require",
     "postgresql://alice@db/optuna?sslmode=require"),
    ("postgresql://alice@db/optuna?sslmode=require&password=pw", "postgresql://alice@db/optuna?sslmode=require&password=***",
     "postgresql://alice@db/optuna?sslmode=require"),
    # urllib cannot parse these (a '/' or '[' in the password, a port out of range); SQLAlchemy can
    ("postgresql://alice:p/w@db/optuna", "postgresql://alice:***@db/optuna", "postgresql://alice@db/optuna"),
    ("postgresql://alice:p[w@db:99999/optuna", "postgresql://alice:***@db:99999/optuna", "postgresql://alice@db:99999/optuna"),
    ("mysql+pymysql://a@corp:pw@db/x", "mysql+pymysql://a@corp:***@db/x", "mysql+pymysql://a@corp@db/x"),
    ("postgresql://alice:p@ss@db/optuna", "postgresql://alice:***@db/optuna", "postgresql://alice@db/optuna"),  # a raw '@' 
    ("sqlite:////data/optuna.db", "sqlite:////data/optuna.db", "sqlite:////data/optuna.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000", "http://127.0.0.1:5000"),
])
def test_redact_and_strip_by_hand(url, shown, on_disk):
    assert redact_url(url) == shown
    assert strip_secret(url) == on_disk
    assert has_secret(url) == (url != on_disk)


passwords = st.text(alphabet=st.characters(blacklist_characters="&;#?\n\r\t\x00 ", blacklist_categories=("Cs",)),
                    min_size=1, max_size=20).map(lambda text: "S3CR" + text)


@settings(max_examples=300, deadline=None)
@given(password=passwords, user=st.from_regex(r"[a-z][a-z0-9_.]{0,8}", fullmatch=True),
       host=st.sampled_from(["db", "127.0.0.1", "[::1]", "db.example.org:5432", "[bad", "db:99999"]),
       where=st.sampled_from(["userinfo", "query", "both"]))
def test_no_password_survives_redaction_or_stripping(password, user, host, where):
    """As a class: any password (also ones that make urllib's parser fail) in the user info or the query."""
    userinfo = f"{user}:{password}@" if where in ("userinfo", "both") else f"{user}@"
    query = f"?sslmode=require&password={password}" if where in ("query", "both") else ""
    url = f"postgresql+psycopg://{userinfo}{host}/optuna{query}"
    assert password not in redact_url(url)
    assert password not in strip_secret(url)
    assert has_secret(url)
    assert with_secret(strip_secret(url), STORAGE_ENV, {STORAGE_ENV: url}) == url


def test_a_url_with_another_password_in_the_environment_is_not_taken():
    on_disk = "postgresql://alice@db/optuna"
    assert with_secret(on_disk, STORAGE_ENV, {STORAGE_ENV: "postgresql://mallory:pw@evil/optuna"}) == on_disk
    assert with_secret(on_disk, STORAGE_ENV, {}) == on_disk


def test_messages_do_not_leak_or_suggest_a_password_in_the_url(tmp_path):
    url = f"postgresql://alice:{SECRET}@db[/optuna"  # unparsable for urllib
    message = unreachable_message(url, RuntimeError(f"connection failed: password={SECRET} host=db"))
    assert SECRET not in message and "alice:***@" in message
    nfs = "\n".join(["rootfs / rootfs rw 0 0", f"server:/export {tmp_path} nfs4 rw 0 0"])
    with pytest.raises(Exception) as refused:
        check_cluster_storage(f"sqlite:///{tmp_path}/optuna.db", mounts_text=nfs)
    assert "user:password@" not in str(refused.value) and "~/.pgpass" in str(refused.value)


# ------------------------------------------------------------------ files


def ticket(storage: str, tracking_uri: str) -> TrialTicket:
    return TrialTicket(storage=storage, study_name="s", trial_number=0, trial_id=1, study_dir="/tmp", entrypoint="m:f",
                       objectives=[], pruner={}, trial_steps=1, tracking={"enabled": True, "uri": tracking_uri})


def test_trial_json_holds_no_password_and_the_trial_process_gets_it_from_its_environment(tmp_path):
    storage, uri = f"postgresql://alice:{SECRET}@db/optuna", f"postgresql://alice@db/mlflow?password={SECRET}"
    ticket(storage, uri).write(tmp_path)
    assert SECRET not in (tmp_path / TICKET_FILE).read_text()
    read = ("from sweeper.contract import TrialTicket; t = TrialTicket.read({!r}); print(t.storage); print(t.tracking['uri'])"
            .format(str(tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(REPO), **secret_environment(storage, uri)}
    child = subprocess.run([sys.executable, "-c", read], capture_output=True, text=True, env=env, check=True)
    assert child.stdout.split() == [storage, uri]                       # a real child process, env only
    env = {k: v for k, v in env.items() if k not in (STORAGE_ENV, TRACKING_ENV)}
    child = subprocess.run([sys.executable, "-c", read], capture_output=True, text=True, env=env, check=True)
    assert child.stdout.split() == [strip_secret(storage), strip_secret(uri)]  # ~/.pgpass or PGPASSWORD then


def test_a_trial_that_spills_unsent_metrics_writes_them_0600_without_the_password(tmp_path):
    from sweeper.tracking import TrialTracker

    uri = f"http://127.0.0.1:9/?token={SECRET}"                         # nothing listens on port 9
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        tracker = TrialTracker(uri, "exp", None, 0, {"a": 1}, {}, "job", {}, retry_interval=3600,
                               spill_path=tmp_path / TRACKING_SPILL_FILE)
        tracker.on_train_step(1, {"train/loss": 1.0})
        tracker.on_end({"status": "completed", "step": 1})
    assert shown and not [w for w in shown if SECRET in str(w.message)]
    spill = tmp_path / TRACKING_SPILL_FILE
    assert spill.exists() and SECRET not in spill.read_text()
    assert stat.S_IMODE(spill.stat().st_mode) == 0o600


def test_atomic_write_uses_a_fresh_temporary_name_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "outcome.json"
    (tmp_path / "outcome.json.tmp").mkdir()   # the fixed name the old code used: a folder there broke it
    atomic_write(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outcome.json", "outcome.json.tmp"]
    atomic_write(target, "private", private=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_mlflow_server_argv_holds_no_store_uri_and_serves_no_artifact_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db?password={SECRET}"
    server = MlflowServer(uri, tmp_path / "artifacts")
    assert SECRET not in " ".join(server.command()) and "--no-serve-artifacts" in server.command()
    assert server.environment()["MLFLOW_BACKEND_STORE_URI"] == uri


# ------------------------------------------------------------------ a whole study


def study_file(tmp_path: Path, storage: str, tracking: dict) -> Path:
    spec = {
        "study": {"name": "secret", "storage": storage},
        "objective": {"metric": "val/pass@8"},
        "base": {"train": {"steps": 4, "eval_every": 2}},
        "space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.4}}},
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "budget": {"n_trials": 1, "max_parallel": 1},
        "executor": {"type": "local", "entrypoint": STANDIN},
        "tracking": tracking,
    }
    path = tmp_path / "secret.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sweeper(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "sweeper", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)


def assert_no_secret_in(folder: Path, secret: str) -> None:
    leaks = [str(p) for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()
             and p.name != "secret.yaml"]   # the user's own spec holds it: they wrote it there
    assert not leaks, leaks


@pytest.mark.slow
def test_a_study_with_a_password_in_its_urls_runs_and_writes_it_nowhere(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db?password={SECRET}"
    path = study_file(tmp_path, storage, {"enabled": True, "uri": f"sqlite:///{tmp_path}/mlflow.db?password={SECRET}"})
    run = sweeper("run", str(path))
    assert run.returncode == 0, run.stderr[-3000:]
    status = sweeper("status", str(path))
    assert status.returncode == 0 and "password=***" in status.stdout and SECRET not in status.stdout + run.stdout + run.stderr
    export = sweeper("export", str(path), "-o", str(tmp_path / "best.yaml"))
    assert export.returncode == 0, export.stderr[-2000:]
    assert "password=***" in (tmp_path / "best.yaml").read_text()
    trial_json = json.loads(next(tmp_path.rglob(TICKET_FILE)).read_text())
    assert trial_json["storage"] == f"sqlite:///{tmp_path}/optuna.db"
    assert_no_secret_in(tmp_path, SECRET)


@pytest.mark.postgres
def test_a_postgres_study_keeps_its_password_out_of_files(postgres_database, tmp_path):
    storage = postgres_database("optuna")                              # postgresql://sweeper:PASSWORD@127.0.0.1:PORT/db
    password = storage.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    path = study_file(tmp_path, storage, {"enabled": False})
    run = sweeper("run", str(path))
    assert run.returncode == 0, run.stderr[-3000:]                     # the trial connected: the password reached it
    assert password not in run.stdout + run.stderr + sweeper("status", str(path)).stdout
    assert_no_secret_in(tmp_path, password)


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(), reason="needs root and setpriv to act as a second user")
def test_another_user_can_read_neither_the_spill_nor_a_password_in_the_trial_folder(tmp_path):
    """The attack as it was reproduced: a second uid (nobody) reads the trial folder on a shared filesystem."""
    import shutil
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="sweeper-shared-"))      # pytest's tmp_path is 0700: a shared folder is not
    folder = shared / "trial"
    folder.mkdir()
    os.chmod(shared, 0o755)
    os.chmod(folder, 0o755)
    ticket(f"postgresql://alice:{SECRET}@db/optuna", "sqlite:////tmp/mlflow.db").write(folder)
    atomic_write(folder / TRACKING_SPILL_FILE, json.dumps({"metrics": [["train/loss", 1.0, 0, 1]]}), private=True)

    def read_as_nobody(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat", str(path)],
                              capture_output=True, text=True)

    ticket_read = read_as_nobody(folder / TICKET_FILE)   # readable (0644, as before) and without the password
    assert ticket_read.returncode == 0 and "alice@db/optuna" in ticket_read.stdout and SECRET not in ticket_read.stdout
    try:
        spill_read = read_as_nobody(folder / TRACKING_SPILL_FILE)
    finally:
        shutil.rmtree(shared)
    assert spill_read.returncode != 0 and "Permission denied" in spill_read.stderr


@pytest.mark.postgres
@pytest.mark.slurm
def test_a_slurm_study_gets_its_password_through_sbatch_not_the_batch_script(slurm_cluster, postgres_database, tmp_path):
    """On Slurm the password travels in sbatch's environment: the batch script and trial.json hold none."""
    storage = postgres_database("optuna")
    password = storage.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    path = study_file(tmp_path, storage, {"enabled": False})
    spec = yaml.safe_load(path.read_text())
    spec["executor"] = {"type": "slurm", "profile": "local-test", "state_poll_s": 1, "entrypoint": STANDIN}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run = sweeper("run", str(path))
    assert run.returncode == 0, run.stderr[-3000:]                     # the trial on the node connected
    assert list(tmp_path.rglob("*.sh")) or list(tmp_path.rglob("submitit"))
    assert_no_secret_in(tmp_path, password)
