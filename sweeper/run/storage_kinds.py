"""The storage kinds a ``study.storage`` URL can name, each opening an Optuna storage from its URL
(:data:`sweeper.registry.STORAGES` maps a URL scheme to its kind; :func:`sweeper.run.storage.make_storage`
dispatches). A kind is a class with ``make(url, *, worker=False) -> optuna storage``; ``worker=True`` (trial
processes) may skip set-up the driver already did.

* :class:`SQLiteStorage` (``sqlite:///``): an RDB storage with a 60 s busy timeout, in WAL mode.
* :class:`JournalStorage` (``journal:///path.log``): Optuna's journal file with its open-lock.
* :class:`DatabaseStorage` (``postgresql://``, ``mysql://``, ...): an RDB storage on a server; a server that
  cannot be reached is a ``SpecError`` naming it, what the driver said and the likely fix.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sweeper.redaction import redact_url
from sweeper.study.drivers import check_database_driver
from sweeper.study.schema import SpecError
from sweeper.urls import JOURNAL_PREFIX, SQLITE_PREFIX, sqlite_file

CONNECT_TIMEOUT_S = 10


class JournalStorage:
    """``journal:///abs/path.log``: for shared filesystems where SQLite locking is unreliable."""

    @staticmethod
    def make(url: str, *, worker: bool = False) -> Any:
        import optuna
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = Path(url[len(JOURNAL_PREFIX) :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


class DatabaseStorage:
    """Any SQLAlchemy URL: an RDB storage (a server's connection failure becomes a ``SpecError``)."""

    check_url = staticmethod(check_database_driver)  # at load_spec: the URL's database driver is installed

    @staticmethod
    def make(url: str, *, worker: bool = False) -> Any:
        """``worker=True`` skips the RDB schema check and table creation the driver already did: 0.6 s less
        per trial start on SQLite."""
        import optuna

        engine_kwargs: dict[str, Any] = {}
        db = sqlite_file(url)
        if url.startswith(SQLITE_PREFIX):
            if db is not None:
                db.parent.mkdir(parents=True, exist_ok=True)
            engine_kwargs = {"connect_args": {"timeout": 60}}
        elif _uses_psycopg(url) and "connect_timeout=" not in url:
            engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
        try:
            if worker:
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, skip_compatibility_check=True, skip_table_creation=True
                )
            else:
                storage = _create_rdb_storage(url, engine_kwargs)
        except Exception as error:  # noqa: BLE001 - only connection failures of a server are translated
            if url.startswith(SQLITE_PREFIX) or not _is_connection_error(error):
                raise
            raise SpecError(unreachable_message(url, error)) from None
        if url.startswith(SQLITE_PREFIX):
            _use_wal(storage)
        return storage


class SQLiteStorage(DatabaseStorage):
    """``sqlite:////abs/path/optuna.db``: the default; WAL mode, so the driver and a few trials write at once."""


def _create_rdb_storage(url: str, engine_kwargs: dict[str, Any], attempts: int = 5) -> Any:
    """RDBStorage creates its tables on first use; two processes opening a new database at once race
    ("table ... already exists", or "UNIQUE constraint failed: alembic_version" when both stamp the schema
    version; on PostgreSQL 'relation "studies" already exists' (DuplicateTable, a ProgrammingError) or a
    duplicate key in pg_type): the loser retries and finds the tables."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (OperationalError, IntegrityError, ProgrammingError) as error:
            lost_race = any(sign in str(error) for sign in ("already exists", "alembic_version", "duplicate key"))
            if not lost_race or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _use_wal(storage: Any) -> None:
    from sqlalchemy import event

    def on_connect(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # connections opened before the listener reconnect with it


def _uses_psycopg(url: str) -> bool:
    scheme = url.split("://", 1)[0]
    return scheme in ("postgresql", "postgresql+psycopg", "postgresql+psycopg2")


def _is_connection_error(error: BaseException) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(error, (OperationalError, InterfaceError))


def unreachable_message(url: str, error: BaseException, field: str = "study.storage") -> str:
    """One paragraph: which server, what the driver said, and the likely fix."""
    detail = str(getattr(error, "orig", None) or error).strip().splitlines()
    detail_text = " ".join(line.strip() for line in detail[:2]) if detail else type(error).__name__
    detail_text = redact_url(detail_text)  # a driver may echo its connection string
    try:
        parts = urlsplit(url)
        where = f"{parts.hostname or 'localhost'}:{parts.port or 'default port'}"
    except ValueError:  # a URL urllib cannot parse (SQLAlchemy may): no host to name
        parts, where = urlsplit(""), "the server in the URL"
    database = parts.path.lstrip("/") or "(default database)"
    lowered = detail_text.lower()
    if "does not exist" in lowered and "database" in lowered:
        fix = f"create the database first (as its owner: createdb -h {parts.hostname} {database})"
    elif "password" in lowered or "authentication" in lowered:
        fix = (
            "check the user and password (a password can also come from ~/.pgpass or PGPASSWORD on every "
            "machine that runs the driver or trials)"
        )
    else:
        fix = (
            f"check that the database server runs and listens on {where}, and that this machine (and every "
            f"node that runs trials) can reach it"
        )
    end = "" if detail_text.endswith((".", "?", "!")) else "."
    return f"{field}: cannot connect to {redact_url(url)}: {detail_text}{end} {fix[0].upper()}{fix[1:]}"
