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
  connections give up after :data:`~sweeper.run.storage_kinds.CONNECT_TIMEOUT_S` unless the URL sets ``connect_timeout``.

Each kind opens its URL in :mod:`sweeper.run.storage_kinds`; :data:`sweeper.registry.STORAGES` maps a
URL scheme to its kind (:func:`make_storage` dispatches), and :mod:`sweeper.urls` holds the URL facts.

Preflight for studies whose trials run on other machines (Slurm): :func:`check_cluster_storage`
refuses a SQLite file on a network filesystem (NFS, CIFS/SMB, Lustre, GPFS, BeeGFS, CephFS, ...;
found from the path's longest mount point in ``/proc/mounts``): SQLite's locking is unreliable there
and concurrent writers from several nodes corrupt the database. The message names the alternatives.
"""

from __future__ import annotations

from typing import Any, Callable

from sweeper.redaction import redact_url  # noqa: F401 (re-exported: the one redaction of a URL)
from sweeper.run.mounts import filesystem_type, is_network_filesystem, parse_mounts  # noqa: F401 (re-exported)
from sweeper.study.drivers import check_database_driver  # noqa: F401 (re-exported)
from sweeper.study.schema import SpecError
from sweeper.urls import (DRIVER_PACKAGES, JOURNAL_PREFIX, MLFLOW_DATABASE_SCHEMES, POSTGRES_EXTRA, SQLITE_PREFIX,  # noqa: F401
                          default_storage_url, default_tracking_uri, sqlite_file, url_scheme)


def make_storage(url: str, *, worker: bool = False) -> Any:
    """The Optuna storage of a ``study.storage`` URL, opened by the kind its scheme names
    (:data:`sweeper.registry.STORAGES`, kinds in :mod:`sweeper.run.storage_kinds`). ``worker=True`` (trial
    processes) skips set-up the driver already did (0.6 s less per trial start on SQLite)."""
    from sweeper.registry import STORAGES

    try:
        kind = STORAGES.get(url_scheme(url))
    except KeyError as error:
        raise SpecError(str(error.args[0])) from None
    return kind.make(url, worker=worker)


def open_study(spec: Any, *, create: bool, sampler: Callable[[int], Any] | None = None, pruner: Any = None):
    """Create or load the Optuna study named by a spec's ``study`` section, in its storage, with its objectives'
    directions. ``sampler``: a function of the number of trials already stored (a seeded sampler of a resumed
    study is offset by it) returning the sampler; ``pruner``: the pruner (both None: Optuna's defaults, for
    readers). Returns (study, storage). ``create=False`` refuses a study that is not in the storage yet."""
    import optuna

    from sweeper.study.schema import SpecError

    storage = make_storage(spec.study.storage)
    first_sampler = sampler(0) if sampler is not None else None
    if create:
        study = optuna.create_study(
            study_name=spec.study.name, storage=storage, sampler=first_sampler, pruner=pruner,
            directions=spec.directions, load_if_exists=True,
        )
    else:
        if spec.study.name not in optuna.get_all_study_names(storage):
            raise SpecError(f"study {spec.study.name!r} is not in storage {redact_url(spec.study.storage)}: run `sweeper run` first")
        study = optuna.load_study(study_name=spec.study.name, storage=storage, sampler=first_sampler, pruner=pruner)
    existing = len(study.get_trials(deepcopy=False))
    if existing and sampler is not None:
        # a seeded sampler restarted on a resumed study would replay the first run's suggestions
        study.sampler = sampler(existing)
    stored = [d.name.lower() for d in study.directions]
    if stored != spec.directions:
        raise SpecError(
            f"objective: study {spec.study.name!r} in {redact_url(spec.study.storage)} has directions {stored}, the spec says "
            f"{spec.directions}; a study's objectives cannot change: use a new study.name"
        )
    return study, storage


# --------------------------------------------------------------------------- preflight for cluster studies


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
