"""Optuna storages from a spec's ``study.storage`` URL, shared by the driver and trial processes.

* ``sqlite:////abs/path/optuna.db`` (the default, ``<study dir>/optuna.db``): an RDB storage with a
  60 s SQLite busy timeout, so the driver and a few trial processes can write at once, in WAL mode
  with ``synchronous=NORMAL`` (measured: 0.22 s -> 0.036 s per ask + 5 user attrs + tell). WAL
  needs a local filesystem; on a shared filesystem use the journal storage or a database server.
* ``journal:///abs/path.log``: Optuna's journal storage on a file (JournalFileBackend, with its
  open-lock) -- for shared filesystems where SQLite locking is unreliable.
* any other SQLAlchemy URL (``postgresql://user@host/db``): an RDB storage. Its database driver
  must be installed (``pip install 'entropy-sweeper[postgres]'`` brings psycopg 3, which SQLAlchemy
  >= 2.1 uses for a bare ``postgresql://``): :func:`check_database_driver` says so at ``load_spec``
  (so ``sweeper validate`` and ``run`` refuse it with the fix). A server that cannot be reached is a
  ``SpecError`` (exit 2, no traceback) from :func:`make_storage` naming the server, what the driver
  said and the likely fix; the driver opens the storage before it launches anything. psycopg
  connections give up after :data:`CONNECT_TIMEOUT_S` unless the URL sets ``connect_timeout``.

Preflight for studies whose trials run on other machines (Slurm): :func:`check_cluster_storage`
refuses a SQLite file on a network filesystem (NFS, CIFS/SMB, Lustre, GPFS, BeeGFS, CephFS, ...;
found from the path's longest mount point in ``/proc/mounts``): SQLite's locking is unreliable there
and concurrent writers from several nodes corrupt the database. The message names the alternatives.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sweeper.redaction import redact_url  # noqa: F401 - re-exported: the one redaction of a URL

JOURNAL_PREFIX = "journal://"
SQLITE_PREFIX = "sqlite:///"
PROC_MOUNTS = "/proc/mounts"
POSTGRES_EXTRA = "entropy-sweeper[postgres]"
CONNECT_TIMEOUT_S = 10
# the pip package of a database driver module, for the error message (psycopg: the extra)
DRIVER_PACKAGES = {"psycopg": f"'{POSTGRES_EXTRA}'", "psycopg2": "psycopg2-binary", "pg8000": "pg8000",
                   "MySQLdb": "mysqlclient", "pymysql": "PyMySQL", "mysql": "mysql-connector-python",
                   "pyodbc": "pyodbc", "pymssql": "pymssql", "oracledb": "oracledb", "cx_Oracle": "cx_Oracle"}
# MLflow treats tracking URIs with these schemes (before any +driver) as SQLAlchemy database URLs
MLFLOW_DATABASE_SCHEMES = ("postgresql", "mysql", "sqlite", "mssql")
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smb3", "smbfs", "ncpfs", "afs", "coda", "9p", "lustre", "gpfs", "mmfs",
    "beegfs", "fhgfs", "ceph", "cephfs", "glusterfs", "panfs", "pvfs2", "orangefs", "ocfs2", "gfs2", "wekafs",
    "quobyte", "sshfs", "s3fs", "gcsfuse", "juicefs", "davfs", "virtiofs", "vboxsf", "vmhgfs", "cvmfs",
})


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
    db = sqlite_file(url)
    if url.startswith(SQLITE_PREFIX):
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif _uses_psycopg(url) and "connect_timeout=" not in url:
        engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    try:
        if worker:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_compatibility_check=True, skip_table_creation=True)
        else:
            storage = _create_rdb_storage(url, engine_kwargs)
    except Exception as error:  # noqa: BLE001 - only connection failures of a server are translated
        if url.startswith(SQLITE_PREFIX) or not _is_connection_error(error):
            raise
        from sweeper.study.schema import SpecError

        raise SpecError(unreachable_message(url, error)) from None
    if url.startswith(SQLITE_PREFIX):
        _use_wal(storage)
    return storage


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


def default_storage_url(study_dir: Path, executor_type: str) -> str:
    """``sqlite:///<study dir>/optuna.db``; for executor ``slurm`` (trials on other nodes write to it) the
    journal file ``journal://<study dir>/optuna.journal``, which needs no locking server."""
    if executor_type == "slurm":
        return f"{JOURNAL_PREFIX}{study_dir / 'optuna.journal'}"
    return f"{SQLITE_PREFIX}{study_dir / 'optuna.db'}"


def default_tracking_uri(study_dir: str | Path) -> str:
    """``sqlite:///<abs study dir>/mlflow.db``: the default MLflow store, beside the study's Optuna storage."""
    return f"{SQLITE_PREFIX}{Path(study_dir).resolve() / 'mlflow.db'}"


def open_study(spec: Any, *, create: bool, max_parallel: int | None = None):
    """Create or load the Optuna study of a :class:`~sweeper.study.spec.StudySpec` with its sampler and pruner.
    Returns (study, storage). ``create=False`` refuses a study that is not in the storage yet."""
    import optuna

    from sweeper.study.pruning import build_pruner
    from sweeper.study.samplers import build_sampler
    from sweeper.study.schema import SpecError

    storage = make_storage(spec.study.storage)
    sampler = build_sampler(spec, max_parallel)
    pruner = build_pruner(spec.pruner, spec.trial_steps())
    if create:
        study = optuna.create_study(
            study_name=spec.study.name, storage=storage, sampler=sampler, pruner=pruner,
            directions=spec.directions, load_if_exists=True,
        )
    else:
        if spec.study.name not in optuna.get_all_study_names(storage):
            raise SpecError(f"study {spec.study.name!r} is not in storage {redact_url(spec.study.storage)}: run `sweeper run` first")
        study = optuna.load_study(study_name=spec.study.name, storage=storage, sampler=sampler, pruner=pruner)
    existing = len(study.get_trials(deepcopy=False))
    if existing and spec.sampler.seed is not None:
        # a seeded sampler restarted on a resumed study would replay the first run's suggestions
        study.sampler = build_sampler(spec, max_parallel, seed_offset=existing)
    stored = [d.name.lower() for d in study.directions]
    if stored != spec.directions:
        raise SpecError(
            f"objective: study {spec.study.name!r} in {redact_url(spec.study.storage)} has directions {stored}, the spec says "
            f"{spec.directions}; a study's objectives cannot change: use a new study.name"
        )
    return study, storage


# --------------------------------------------------------------------------- database servers


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
        fix = ("check the user and password (a password can also come from ~/.pgpass or PGPASSWORD on every "
               "machine that runs the driver or trials)")
    else:
        fix = (f"check that the database server runs and listens on {where}, and that this machine (and every "
               f"node that runs trials) can reach it")
    end = "" if detail_text.endswith((".", "?", "!")) else "."
    return f"{field}: cannot connect to {redact_url(url)}: {detail_text}{end} {fix[0].upper()}{fix[1:]}"


def check_database_driver(url: str | None, field: str = "study.storage") -> None:
    """Raise ``SpecError`` if ``url`` is a SQLAlchemy database URL (not SQLite) whose driver module
    cannot be imported, naming the package to install. SQLAlchemy decides which driver a bare
    ``postgresql://`` uses (psycopg 3 from SQLAlchemy 2.1 on, psycopg2 before); ``+psycopg`` /
    ``+psycopg2`` name one. No-op for sqlite, journal, http(s), file and other non-database URLs."""
    if not url or "://" not in url:
        return
    scheme = url.split("://", 1)[0]
    base = scheme.split("+", 1)[0]
    if base == "sqlite" or url.startswith(JOURNAL_PREFIX):
        return
    if field.startswith("tracking") and base not in MLFLOW_DATABASE_SCHEMES:
        return  # http(s)://, file:, databricks, ...: MLflow's own stores
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from sweeper.study.schema import SpecError

    shown = redact_url(url)
    try:
        dialect = make_url(url).get_dialect()
    except (NoSuchModuleError, ArgumentError) as error:
        raise SpecError(f"{field}: {shown} is not a database URL SQLAlchemy can use ({error}); for PostgreSQL write "
                        f"postgresql://user@host:5432/database") from None
    if getattr(dialect, "is_async", False):
        raise SpecError(f"{field}: {scheme} is an asyncio driver; Optuna and MLflow need a synchronous one: write "
                        f"postgresql:// (psycopg, pip install '{POSTGRES_EXTRA}')")
    try:
        dialect.import_dbapi()
    except ImportError as error:
        module = (error.name or "").split(".")[0] or dialect.driver
        package = DRIVER_PACKAGES.get(module, module)
        how = "" if "+" in scheme else f" (SQLAlchemy's default driver for {scheme}://)"
        fix = f"pip install {package}"
        if module == "psycopg2":
            fix += f", or use psycopg 3: {base}+psycopg:// or {base}:// with pip install '{POSTGRES_EXTRA}'"
        raise SpecError(f"{field}: {shown} needs the database driver {module}{how}, which is not installed in "
                        f"{sys.executable}: {fix}") from None


# --------------------------------------------------------------------------- preflight for cluster studies


def _unescape_mount_field(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash in paths as octal escapes (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(mounts_text: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) of each line of a /proc/mounts-format text."""
    mounts = []
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            mounts.append((_unescape_mount_field(fields[1]), fields[2]))
    return mounts


def filesystem_type(path: str | Path, mounts_text: str | None = None) -> str | None:
    """The filesystem type holding ``path`` (which need not exist yet): the type of its longest mount
    point in ``mounts_text`` (default: this machine's /proc/mounts; the last mount of a point wins)."""
    if mounts_text is None:
        try:
            mounts_text = Path(PROC_MOUNTS).read_text()
        except OSError:
            return None
    target = os.path.realpath(os.path.abspath(os.fspath(path)))
    best: tuple[int, str] | None = None
    for mount_point, fstype in parse_mounts(mounts_text):
        point = mount_point.rstrip("/") or "/"
        inside = target == point or target.startswith(point + "/") or point == "/"
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), fstype)
    return best[1] if best else None


def is_network_filesystem(fstype: str | None) -> bool:
    """True for network and cluster filesystems (``fuse.sshfs``, ``nfs4``, ``lustre``, ...)."""
    if not fstype:
        return False
    name = fstype.lower().removeprefix("fuse.").removeprefix("fuseblk.")
    return name in NETWORK_FILESYSTEMS or name.startswith(("nfs", "ceph", "gluster", "smb"))


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None for other URLs and in-memory databases)."""
    if not url.startswith(SQLITE_PREFIX):
        return None
    db = url[len(SQLITE_PREFIX):].split("?", 1)[0]
    return Path(db) if db and db != ":memory:" else None


def check_cluster_storage(storage_url: str, *, field: str = "study.storage", mounts_text: str | None = None) -> None:
    """Refuse a SQLite storage on a network filesystem for a study whose trials run on other nodes.

    Raises ``SpecError`` naming ``field``, the file, its filesystem type and the alternatives."""
    db = sqlite_file(storage_url)
    if db is None:
        return
    fstype = filesystem_type(db, mounts_text)
    if not is_network_filesystem(fstype):
        return
    from sweeper.study.schema import SpecError

    journal = db.with_suffix(".journal")
    raise SpecError(
        f"{field}: {storage_url} is a SQLite file on a network filesystem ({fstype}); trials on other nodes "
        f"write to it at once and SQLite locking is not reliable there (the database can be corrupted). Use "
        f"Optuna's journal file storage on the shared path (storage: journal://{journal}; the default for "
        f"executor type slurm when storage is not set), or a database server (storage: postgresql://user@host/db, the password in ~/.pgpass or PGPASSWORD)"
    )
