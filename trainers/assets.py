"""The models shipped with the trainer (``trainers/assets/<name>``), named ``builtin:<name>`` in a run config."""

from __future__ import annotations

from pathlib import Path

BUILTIN_PREFIX = "builtin:"
ASSETS_DIR = Path(__file__).parent / "assets"


def shipped_models() -> list[str]:
    """The ``builtin:NAME`` models: those shipped in trainers/assets and those built into the cache by their
    scripts (:mod:`trainers.built_models`, built or not yet)."""
    from .built_models import BUILD_SCRIPTS

    shipped = [p.name for p in ASSETS_DIR.iterdir() if p.is_dir()] if ASSETS_DIR.is_dir() else []
    return sorted({*shipped, *BUILD_SCRIPTS})
