"""Specs that pass the schema and can still never work, refused by ``sweeper validate`` (issue 26's bad-spec
classes). Each check is a class of mistakes, not a list of examples:

* a list that must be a set holds a value twice (categorical ``choices``, the values of a ``when``, a
  health rule's ``metrics``): a doubled choice is sampled twice as often, silently;
* a storage (``study.storage``, a SQLite ``tracking.uri``) whose file can never hold a database: a folder,
  or a path on a pseudo-filesystem (``/proc``, ``/sys``, ``/dev``: the kernel's, not a disk);
* a ``tracking.uri`` whose scheme MLflow has no store for (``htp://``, ``ftp://``);
* a parameter whose ``when`` reads the path the parameter itself sets (it is read before it is set).

    problems = sanity_problems(spec)     # ["space.params[x].choices: ...", ...]

Pure reads of the spec, the filesystem (``stat``, ``/proc/mounts``) and MLflow's store registry.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sweeper.run.mounts import filesystem_type
from sweeper.urls import JOURNAL_PREFIX, sqlite_file
from sweeper.study.space import CategoricalParam, param_path


# filesystems the kernel makes up: a file there is no disk file (reads of /proc, writes to /sys and /dev)
PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "configfs",
    "pstore", "bpf", "mqueue", "hugetlbfs", "fusectl", "binfmt_misc", "efivarfs", "autofs", "rpc_pipefs", "nsfs",
})
PSEUDO_ROOTS = ("/proc", "/sys", "/dev")       # the kernel's, whatever /proc/mounts says (a container mounts tmpfs there)
PSEUDO_EXCEPTIONS = ("/dev/shm",)              # tmpfs: a database there works (until the machine restarts)
MLFLOW_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")


def sanity_problems(spec: Any, mounts_text: str | None = None) -> list[str]:
    """One line per problem (``field: what is wrong; what would be accepted``); [] when none is found."""
    problems = duplicate_problems(spec)
    problems += self_condition_problems(spec)
    problems += storage_problems(spec.study.storage, "study.storage", mounts_text)
    if spec.tracking.enabled and spec.tracking.uri:
        problems += tracking_scheme_problems(spec.tracking.uri)
        if sqlite_file(spec.tracking.uri) is not None:
            problems += storage_problems(spec.tracking.uri, "tracking.uri", mounts_text)
    return problems


# --------------------------------------------------------------------------- lists that must be sets


def _twice(values: list[Any]) -> list[Any]:
    seen, doubled = [], []
    for value in values:
        key = (type(value), value) if not isinstance(value, (list, dict)) else (type(value), repr(value))
        if key in seen and value not in doubled:
            doubled.append(value)
        seen.append(key)
    return doubled


def duplicate_problems(spec: Any) -> list[str]:
    problems = []

    def check(field: str, values: Any, what: str) -> None:
        if isinstance(values, list) and (doubled := _twice(values)):
            shown = ", ".join(repr(v) for v in doubled)
            problems.append(f"{field}: {shown} appears more than once in {values!r}; {what} are a set: list each once")

    for name, param in spec.space.params.items():
        if isinstance(param, CategoricalParam):
            check(f"space.params[{name}].choices", param.choices, "the choices (each is sampled as often as it is listed)")
        for path, wanted in (param.when or {}).items():
            check(f"space.params[{name}].when.{path}", wanted, "the values a condition accepts")
    for index, constraint in enumerate(spec.space.constraints):
        for path, wanted in (constraint.when or {}).items():
            check(f"space.constraints[{index}].when.{path}", wanted, "the values a condition accepts")
    health = getattr(spec.pruner, "health", None)
    for rule in ("collapse", "explosion"):
        section = getattr(health, rule, None) if health is not None else None
        if section is not None:
            check(f"pruner.health.{rule}.metrics", getattr(section, "metrics", None), "the metrics a rule watches")
    return problems


# --------------------------------------------------------------------------- a `when` that reads itself


def self_condition_problems(spec: Any) -> list[str]:
    problems = []
    for name, param in spec.space.params.items():
        path = param_path(name, param)
        if path in (param.when or {}):
            problems.append(f"space.params[{name}].when.{path}: the condition reads {path}, which this parameter sets; "
                            f"it is read before the value is sampled (the base config's value decides): condition it "
                            f"on another path, or drop the when")
    return problems


# --------------------------------------------------------------------------- storages that can never hold a database


def database_file(url: str | None) -> Path | None:
    """The file of a SQLite or journal URL (None for a database server or an in-memory database)."""
    if not url:
        return None
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX):])
    return sqlite_file(url)


def storage_problems(url: str | None, field: str, mounts_text: str | None = None) -> list[str]:
    """A SQLite or journal file that can never be a database: a folder, or on a pseudo-filesystem."""
    path = database_file(url)
    if path is None:
        return []
    kind = "sqlite:///path/optuna.db" if url.startswith("sqlite") else "journal:///path/optuna.journal"
    if field == "tracking.uri":
        kind = "sqlite:///path/mlflow.db"
    try:
        real = os.path.realpath(os.path.abspath(path))
        if os.path.isdir(real):
            return [f"{field}: {path} is a folder; the URL names the database file itself: {kind}"]
        fstype = filesystem_type(real, mounts_text)
    except (OSError, ValueError):
        return []  # a path the OS refuses: the folder checks (sweeper.run.checks) name it
    under_root = any(real == root or real.startswith(root + "/") for root in PSEUDO_ROOTS) and not any(
        real == keep or real.startswith(keep + "/") for keep in PSEUDO_EXCEPTIONS)
    if (fstype or "").lower() in PSEUDO_FILESYSTEMS or under_root:
        shown = f"a {fstype} pseudo-filesystem" if fstype in PSEUDO_FILESYSTEMS else "the kernel's pseudo-filesystems"
        return [f"{field}: {path} is on {shown} ({real}), which can never hold a database; put it on a disk, e.g. {kind}"]
    return []


# --------------------------------------------------------------------------- tracking URI schemes


def mlflow_schemes() -> tuple[str, ...]:
    """The schemes MLflow has a tracking store for (its registry, plugins included)."""
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        return tuple(sorted(scheme for scheme in _tracking_store_registry._registry if scheme)) or MLFLOW_SCHEMES
    except Exception:  # noqa: BLE001 - a private registry: fall back to the schemes MLflow 3 ships
        return MLFLOW_SCHEMES


def tracking_scheme_problems(uri: str) -> list[str]:
    if "://" not in uri and not uri.startswith(("file:", "databricks")):
        return []  # a local path: MLflow's file store
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    schemes = mlflow_schemes()
    if scheme in schemes:
        return []
    return [f"tracking.uri: MLflow has no tracking store for the scheme {scheme!r} (in {uri.split('://', 1)[0]}://...); "
            f"accepted: {', '.join(schemes)} (e.g. http://host:5000, sqlite:///path/mlflow.db, postgresql://user@host/db)"]
