"""The database-driver preflight of ``study.storage`` and ``tracking.uri`` (run by ``load_spec``, so
``sweeper validate`` and ``run`` refuse a URL whose driver is missing, with the package to install)."""

from __future__ import annotations

import sys

from sweeper.redaction import redact_url
from sweeper.study.schema import SpecError
from sweeper.urls import DRIVER_PACKAGES, JOURNAL_PREFIX, MLFLOW_DATABASE_SCHEMES, POSTGRES_EXTRA

__all__ = ["check_database_driver"]


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

    shown = redact_url(url)
    try:
        dialect = make_url(url).get_dialect()
    except (NoSuchModuleError, ArgumentError) as error:
        raise SpecError(
            f"{field}: {shown} is not a database URL SQLAlchemy can use ({error}); for PostgreSQL write "
            f"postgresql://user@host:5432/database"
        ) from None
    if getattr(dialect, "is_async", False):
        raise SpecError(
            f"{field}: {scheme} is an asyncio driver; Optuna and MLflow need a synchronous one: write "
            f"postgresql:// (psycopg, pip install '{POSTGRES_EXTRA}')"
        )
    try:
        dialect.import_dbapi()
    except ImportError as error:
        module = (error.name or "").split(".")[0] or dialect.driver
        package = DRIVER_PACKAGES.get(module, module)
        how = "" if "+" in scheme else f" (SQLAlchemy's default driver for {scheme}://)"
        fix = f"pip install {package}"
        if module == "psycopg2":
            fix += f", or use psycopg 3: {base}+psycopg:// or {base}:// with pip install '{POSTGRES_EXTRA}'"
        raise SpecError(
            f"{field}: {shown} needs the database driver {module}{how}, which is not installed in "
            f"{sys.executable}: {fix}"
        ) from None
