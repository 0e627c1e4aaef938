"""Secrets in URLs: the one place that decides how a storage or tracking URL is shown, written and handed on.

A database URL may carry a password (``postgresql://user:pw@host/db`` or ``...?password=pw``). It is:

* shown through :func:`redact_url` only (``postgresql://user:***@host/db``, ``?password=***``): every message,
  ``sweeper status``, the export header, the ``sweeper ui`` banner;
* written to files (``trial.json``, ``mlflow_unsent.json``) as :func:`strip_secret` gives it: without the
  password at all, so that PostgreSQL's own ``~/.pgpass`` or ``PGPASSWORD`` still works with it;
* handed to a child process (a trial, ``mlflow server``) through its environment (:func:`secret_environment`,
  variables :data:`STORAGE_ENV` and :data:`TRACKING_ENV`); the child takes the URL with the password back
  with :func:`with_secret`, only when the variable's URL is the one on disk with its password stripped.

Neither function ever raises: a URL that no parser accepts (a password with ``/`` or ``[``, a bad port) is
redacted by the same rule, on the text: everything between the ``:`` after the user name and the last ``@``
is the password.
"""

from __future__ import annotations

import os
import re

MASK = "***"
STORAGE_ENV = "SWEEPER_STORAGE_URL"     # the study storage's URL with its password, for a trial process
TRACKING_ENV = "SWEEPER_TRACKING_URI"   # the MLflow tracking URI with its password, for a trial process

# key=value pairs whose value is a secret, in a query string or a libpq keyword/value string
_SECRET_KEYS = r"password|passwd|pwd|pass|secret|token|access_token|api_key|apikey|sslpassword|sslkey_password"
_SECRET_PARAM = re.compile(rf"(^|[?&;\s])({_SECRET_KEYS})=([^&;#\s]*)", re.IGNORECASE)
# scheme://user:password@rest; the password is anything up to the last '@' (a raw '/' or '[' in it breaks
# urllib's parser, SQLAlchemy allows them; a raw '@' should be %40, and is hidden all the same): a '@' later
# in the URL hides more than the password, never less
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/]*):(?P<password>.*)@(?P<rest>[^@]*)$", re.DOTALL)


def has_secret(url: str | None) -> bool:
    """True if ``url`` carries a password (in its user info or its query string)."""
    return bool(url) and strip_secret(url) != url


def redact_url(url: str | None) -> str:
    """``url`` for display: the password replaced by ``***`` (user info and query string). Never raises."""
    if not url:
        return url or ""
    text = str(url)
    match = _USERINFO.match(text)
    if match:
        text = f"{match['scheme']}{match['user']}:{MASK}@{match['rest']}"
    return _SECRET_PARAM.sub(lambda m: f"{m[1]}{m[2]}={MASK}", text)


def strip_secret(url: str | None) -> str:
    """``url`` as written to files: the password removed (``user@host``, no ``password=`` parameter), so the
    client falls back to ``~/.pgpass`` or ``PGPASSWORD``. Never raises."""
    if not url:
        return url or ""
    text = str(url)
    match = _USERINFO.match(text)
    if match:
        text = f"{match['scheme']}{match['user']}@{match['rest']}"
    text = _SECRET_PARAM.sub(lambda m: m[1] if m[1] in "?" else "", text)
    return re.sub(r"\?&+", "?", text).rstrip("?&")


def secret_environment(storage: str | None, tracking_uri: str | None) -> dict[str, str]:
    """The environment variables that carry the URLs with a password to a child process (none for a URL
    without one)."""
    env = {}
    if storage and has_secret(storage):
        env[STORAGE_ENV] = storage
    if tracking_uri and has_secret(tracking_uri):
        env[TRACKING_ENV] = tracking_uri
    return env


def with_secret(url_on_disk: str, variable: str, environ: dict[str, str] | None = None) -> str:
    """The URL to connect with: the environment variable's URL when it is ``url_on_disk`` plus a password,
    else ``url_on_disk`` itself (the password then comes from ``~/.pgpass`` or ``PGPASSWORD``)."""
    candidate = (os.environ if environ is None else environ).get(variable)
    if candidate and strip_secret(candidate) == strip_secret(url_on_disk):
        return candidate
    return url_on_disk
