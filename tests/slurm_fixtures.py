"""Pytest fixtures for tests that run against the real local Slurm test cluster (slurm/cluster.sh).

``slurm_cluster`` (session scope) makes sure a cluster answers: if ``sinfo`` and ``sacct`` already
answer (for example because CI ran ``slurm/cluster.sh up`` first), it is used as it is; otherwise the
fixture runs ``slurm/cluster.sh up`` itself and, at the end of the session, ``slurm/cluster.sh down``
for what it started (set SWEEPER_SLURM_KEEP=1 to leave it running). Tests are skipped, with the reason
and the tail of the script's output, only when no cluster answers and none can be brought up (not root,
no Debian packages reachable, ...).

``submitit_folder`` gives each test a fresh submitit log folder: job ids restart at 1 after the state
dir is purged, and a reused folder would mix old job files with new ones.

Use them from a test module with ``from slurm_fixtures import slurm_cluster, submitit_folder``
(tests/ is on sys.path under pytest), and mark the tests ``@pytest.mark.slurm``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO_ROOT / "slurm" / "cluster.sh"
UP_TIMEOUT_S = 900  # includes apt-get install on a fresh machine


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    """What a test needs to know about the running cluster."""

    slurm_conf: str  # path exported as SLURM_CONF
    partition: str  # the default partition of the test cluster
    started_here: bool  # True if this test session brought the cluster up

    def job_python_path(self) -> str:
        """A PYTHONPATH under which a job can unpickle functions defined in tests/ and the repo."""
        return os.pathsep.join([str(REPO_ROOT / "tests"), str(REPO_ROOT)])


def _cluster_env() -> dict[str, str]:
    """The exports `slurm/cluster.sh env` prints, as a dict."""
    output = subprocess.run(["bash", str(CLUSTER_SCRIPT), "env"], check=True, capture_output=True,
                            text=True, timeout=30).stdout
    exports = {}
    for line in output.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export "):].split("=", 1)
            exports[key] = value
    return exports


def _cluster_answers(env: dict[str, str]) -> bool:
    """True if slurmctld shows a usable node and slurmdbd answers sacct."""
    if shutil.which("sinfo") is None or shutil.which("sacct") is None:
        return False
    try:
        node_states = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=env, capture_output=True,
                                     text=True, timeout=20)
        accounting = subprocess.run(["sacct", "-n", "-X", "-S", "now"], env=env, capture_output=True,
                                    text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    usable = {"idle", "mix", "alloc", "comp"}
    return (node_states.returncode == 0 and accounting.returncode == 0
            and any(state.strip().rstrip("*") in usable for state in node_states.stdout.split()))


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running local Slurm cluster with accounting; SLURM_CONF is exported for the whole session."""
    exports = _cluster_env()
    if os.environ.get("SLURM_CONF"):
        exports.pop("SLURM_CONF")  # a cluster chosen by the caller wins
    saved_environ = {key: os.environ.get(key) for key in exports}
    os.environ.update(exports)
    started_here = False
    try:
        if not _cluster_answers(dict(os.environ)):
            if os.geteuid() != 0:
                pytest.skip("the Slurm test cluster is not up and bringing it up needs root: "
                            "run `sudo slurm/cluster.sh up` first")
            try:
                up = subprocess.run(["bash", str(CLUSTER_SCRIPT), "up"], capture_output=True, text=True,
                                    timeout=UP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.skip(f"`slurm/cluster.sh up` did not finish in {UP_TIMEOUT_S} s")
            if up.returncode != 0:
                tail = "\n".join((up.stdout + up.stderr).splitlines()[-15:])
                pytest.skip(f"the Slurm test cluster is not up and `slurm/cluster.sh up` failed "
                            f"(exit {up.returncode}):\n{tail}")
            started_here = True
            sys.stderr.write(up.stderr)
        yield SlurmCluster(slurm_conf=os.environ["SLURM_CONF"], partition="debug",
                           started_here=started_here)
    finally:
        if started_here and os.environ.get("SWEEPER_SLURM_KEEP") != "1":
            subprocess.run(["bash", str(CLUSTER_SCRIPT), "down"], capture_output=True, timeout=120)
        for key, value in saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def submitit_folder(tmp_path) -> Path:
    """A fresh submitit folder for one test (job ids can repeat across cluster reinstalls)."""
    folder = tmp_path / "submitit"
    folder.mkdir()
    return folder
