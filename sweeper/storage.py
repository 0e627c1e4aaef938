"""Optuna storages from a spec's ``study.storage`` URL, shared by the driver and trial processes.

* ``sqlite:////abs/path/optuna.db`` (the default, ``<study dir>/optuna.db``): an RDB storage with a
  60 s SQLite busy timeout, so the driver and a few trial processes can write at once, in WAL mode
  with ``synchronous=NORMAL`` (measured: 0.22 s -> 0.036 s per ask + 5 user attrs + tell). WAL
  needs a local filesystem; on a shared filesystem use the journal storage or a database server.
* ``journal:///abs/path.log``: Optuna's journal storage on a file (JournalFileBackend, with its
  open-lock) -- for shared filesystems where SQLite locking is unreliable.
* any other SQLAlchemy URL (``postgresql://user@host/db``): an RDB storage.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

JOURNAL_PREFIX = "journal://"


def make_storage(url: str, *, worker: bool = False) -> Any:
    """``worker=True`` (trial processes) skips the RDB schema check and table creation the driver
    already did: 0.6 s less per trial start on SQLite."""
    import optuna

    if url.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = Path(url[len(JOURNAL_PREFIX):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        db = url[len("sqlite:///"):]
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    if worker:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_compatibility_check=True, skip_table_creation=True)
    else:
        storage = _create_rdb_storage(url, engine_kwargs)
    if url.startswith("sqlite:///"):
        _use_wal(storage)
    return storage


def _create_rdb_storage(url: str, engine_kwargs: dict[str, Any], attempts: int = 5) -> Any:
    """RDBStorage creates its tables on first use; two processes opening a new database at once race
    ("table ... already exists"): the loser retries and finds the tables."""
    import optuna
    from sqlalchemy.exc import OperationalError

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except OperationalError as error:
            if "already exists" not in str(error) or attempt == attempts - 1:
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


def load_existing_study(storage_url: str, study_name: str, *, pruner: Any = None, sampler: Any = None):
    """The study if it exists in the storage, else None (never creates one)."""
    import optuna

    storage = make_storage(storage_url)
    names = optuna.get_all_study_names(storage)
    if study_name not in names:
        return None
    return optuna.load_study(study_name=study_name, storage=storage, pruner=pruner, sampler=sampler)
