"""Pytest fixtures for tests against the real local PostgreSQL test server (scripts/postgres.sh).

``postgres_server`` (session scope) makes sure the server answers: if it already runs (CI's
scripts/test.sh brings it up before pytest), it is used as it is; otherwise the fixture runs
``scripts/postgres.sh up`` itself (root only; it installs Debian's ``postgresql`` when missing) and,
at the end of the session, ``scripts/postgres.sh down`` (set SWEEPER_PG_KEEP=1 to leave it running).
Tests are skipped, with the reason, only when no server answers and none can be brought up.

``postgres_database`` gives a test fresh databases on that server: ``postgres_database("optuna")``
returns the URL ``postgresql://sweeper:PASSWORD@127.0.0.1:PORT/<test>_<name>`` of a new, empty
database, dropped when the test ends. Mark the tests ``@pytest.mark.postgres``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_SCRIPT = REPO_ROOT / "scripts" / "postgres.sh"
UP_TIMEOUT_S = 900  # includes apt-get install on a fresh machine


@dataclasses.dataclass(frozen=True)
class PostgresServer:
    url: str            # postgresql://sweeper:PASSWORD@127.0.0.1:PORT (no database)
    started_here: bool

    def database_url(self, name: str) -> str:
        return f"{self.url}/{name}"


def _script(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(POSTGRES_SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def _server_env() -> dict[str, str]:
    exports = {}
    for line in _script("env").stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export "):].split("=", 1)
            exports[key] = value
    return exports


@pytest.fixture(scope="session")
def postgres_server():
    started_here = False
    if _script("status").returncode != 0:
        if os.geteuid() != 0:
            pytest.skip("the PostgreSQL test server is not up and bringing it up needs root: run "
                        "`sudo scripts/postgres.sh up` first")
        try:
            up = _script("up", timeout=UP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.skip(f"`scripts/postgres.sh up` did not finish in {UP_TIMEOUT_S} s")
        if up.returncode != 0:
            tail = "\n".join((up.stdout + up.stderr).splitlines()[-15:])
            pytest.skip(f"the PostgreSQL test server is not up and `scripts/postgres.sh up` failed (exit "
                        f"{up.returncode}):\n{tail}")
        started_here = True
    try:
        yield PostgresServer(url=_server_env()["SWEEPER_PG_URL"], started_here=started_here)
    finally:
        if started_here and os.environ.get("SWEEPER_PG_KEEP") != "1":
            _script("down", timeout=120)


def _admin(server: PostgresServer, statement: str) -> None:
    import psycopg

    with psycopg.connect(server.database_url("sweeper"), autocommit=True, connect_timeout=10) as connection:
        connection.execute(statement)


@pytest.fixture
def postgres_database(postgres_server, request):
    """``make(name)`` -> the URL of a new empty database (dropped at the end of the test)."""
    created: list[str] = []
    prefix = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:30]

    def make(name: str) -> str:
        database = f"t_{prefix}_{name}_{uuid.uuid4().hex[:6]}"
        _admin(postgres_server, f'CREATE DATABASE "{database}"')
        created.append(database)
        return postgres_server.database_url(database)

    yield make
    for database in created:
        try:
            _admin(postgres_server, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        except Exception:  # noqa: BLE001 - a leftover database only costs disk until `postgres.sh down --purge`
            pass
