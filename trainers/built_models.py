"""Built-in models that are built, not committed: where ``builtin:NAME`` finds them (no torch).

``trainers/assets`` ships the small models in git (``builtin:tiny-arith``). A model too large for git (a
151,936-row embedding is ~40 MB) is built once by its script (scripts/test.sh runs it before the tests) into a cache folder keyed by
the script's content hash, so that a changed recipe never reuses an old build and an unchanged one is
built once per machine (CI caches the folder between runs):

    ``$ENTROPY_SWEEPER_CACHE`` (default ``$XDG_CACHE_HOME/entropy-sweeper``, i.e. ``~/.cache/entropy-sweeper``)
    ``/NAME-<first 12 hex digits of the sha256 of the build script>``

Built here: ``builtin:tiny-qwen-arith`` (``scripts/build_tiny_qwen_model.py``): a tiny Qwen2 model with
Qwen's tokenizer and chat template, and its task as GSM8K-format JSONL under ``data/``. A run config names
those files as ``builtin:tiny-qwen-arith/data/train.jsonl`` in ``data.dataset.data_files``
(:func:`resolve_builtin_file`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_QWEN = "tiny-qwen-arith"

BUILD_SCRIPTS: dict[str, Path] = {TINY_QWEN: REPO_ROOT / "scripts" / "build_tiny_qwen_model.py"}
"""Built model name -> the script that builds it (``python SCRIPT`` writes :func:`built_model_folder`)."""


def cache_root() -> Path:
    """``$ENTROPY_SWEEPER_CACHE``, else ``$XDG_CACHE_HOME/entropy-sweeper``, else ``~/.cache/entropy-sweeper``."""
    if os.environ.get("ENTROPY_SWEEPER_CACHE"):
        return Path(os.environ["ENTROPY_SWEEPER_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base) / "entropy-sweeper"


def build_script_hash(name: str = TINY_QWEN) -> str:
    """sha256 (hex) of the build script of ``name``."""
    return hashlib.sha256(BUILD_SCRIPTS[name].read_bytes()).hexdigest()


def built_model_folder(name: str) -> Path:
    """The cache folder of built model ``name`` (it may not exist yet)."""
    if name not in BUILD_SCRIPTS:
        raise KeyError(f"{name!r} is not a built model; built models: {sorted(BUILD_SCRIPTS)}")
    return cache_root() / f"{name}-{build_script_hash(name)[:12]}"


def is_built(name: str) -> bool:
    """Whether ``name``'s folder is complete (the build writes build_info.json last and moves the folder in whole)."""
    return (built_model_folder(name) / "build_info.json").is_file()


def builtin_models() -> list[str]:
    """Every ``builtin:NAME`` model: those shipped in trainers/assets and those built into the cache (built or
    not yet)."""
    from .assets import shipped_models

    return sorted({*shipped_models(), *BUILD_SCRIPTS})


def build_command(name: str) -> str:
    """The command that builds ``name`` (for error messages)."""
    return f"python {BUILD_SCRIPTS[name].relative_to(REPO_ROOT)}"


def resolve_builtin_file(value: str) -> str:
    """``builtin:NAME/relative/path`` -> that file of the built (or shipped) model NAME; other values unchanged.

    Raises ValueError naming the build command when NAME is a built model not built yet, or the file is missing.
    """
    from .assets import ASSETS_DIR, BUILTIN_PREFIX

    if not isinstance(value, str) or not value.startswith(BUILTIN_PREFIX) or "/" not in value:
        return value
    name, _, relative = value[len(BUILTIN_PREFIX):].partition("/")
    if name in BUILD_SCRIPTS:
        if not is_built(name):
            raise ValueError(f"{value!r}: the model {name!r} is not built yet at {built_model_folder(name)}; "
                             f"build it with `{build_command(name)}`")
        folder = built_model_folder(name)
    elif _is_dir(ASSETS_DIR / name):
        folder = ASSETS_DIR / name
    else:
        raise ValueError(f"{value!r}: no built-in model {name!r}; built-in: {sorted(BUILD_SCRIPTS)} and trainers/assets")
    try:
        path = (folder / relative).resolve()
        found = folder.resolve() in path.parents and path.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        found = False
    if not found:
        raise ValueError(f"{value!r}: no such file in {folder} (files of {name!r}: data/train.jsonl, data/test.jsonl)")
    return str(path)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False
