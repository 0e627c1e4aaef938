"""Storage URLs: the facts about a ``study.storage`` or ``tracking.uri`` string, without opening anything.

The prefixes, the default URLs of a study folder, the redacted form for messages, the SQLite file of a
URL. The database-driver preflight that ``load_spec`` runs is :mod:`sweeper.study.drivers`; the
storages themselves (opening, WAL, journal locks, cluster preflight) are :mod:`sweeper.run.storage`;
which schemes a study may name is :data:`sweeper.registry.STORAGES`. Imports no phase of the sweeper.
"""

from __future__ import annotations

from pathlib import Path

JOURNAL_PREFIX = "journal://"
SQLITE_PREFIX = "sqlite:///"
POSTGRES_EXTRA = "entropy-sweeper[postgres]"
# the pip package of a database driver module, for the error message (psycopg: the extra)
DRIVER_PACKAGES = {
    "psycopg": f"'{POSTGRES_EXTRA}'",
    "psycopg2": "psycopg2-binary",
    "pg8000": "pg8000",
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
    "oracledb": "oracledb",
    "cx_Oracle": "cx_Oracle",
}
# MLflow treats tracking URIs with these schemes (before any +driver) as SQLAlchemy database URLs
MLFLOW_DATABASE_SCHEMES = ("postgresql", "mysql", "sqlite", "mssql")


def url_scheme(url: str) -> str:
    """The scheme of a URL before any ``+driver``: ``postgresql+psycopg://...`` -> ``postgresql``."""
    return url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""


def is_database_server(url: str | None) -> bool:
    """True for a URL MLflow and Optuna reach as a database server (postgresql://, mysql://, mssql://)."""
    return bool(url) and url_scheme(url) in MLFLOW_DATABASE_SCHEMES and url_scheme(url) != "sqlite"


def default_storage_url(study_dir: Path, trials_on_other_nodes: bool) -> str:
    """``sqlite:///<study dir>/optuna.db``; when trials run on other nodes and write to it (executor ``slurm``:
    its spec's ``trials_on_other_nodes``) the journal file ``journal://<study dir>/optuna.journal``, which
    needs no locking server."""
    if trials_on_other_nodes:
        return f"{JOURNAL_PREFIX}{study_dir / 'optuna.journal'}"
    return f"{SQLITE_PREFIX}{study_dir / 'optuna.db'}"


def default_tracking_uri(study_dir: str | Path) -> str:
    """``sqlite:///<abs study dir>/mlflow.db``: the default MLflow store, beside the study's Optuna storage."""
    return f"{SQLITE_PREFIX}{Path(study_dir).resolve() / 'mlflow.db'}"


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None for other URLs and in-memory databases)."""
    if not url.startswith(SQLITE_PREFIX):
        return None
    db = url[len(SQLITE_PREFIX) :].split("?", 1)[0]
    return Path(db) if db and db != ":memory:" else None
