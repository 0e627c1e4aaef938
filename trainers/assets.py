"""The models shipped with the trainer (``trainers/assets/<name>``), named ``builtin:<name>`` in a run config."""

from __future__ import annotations

from pathlib import Path

BUILTIN_PREFIX = "builtin:"
ASSETS_DIR = Path(__file__).parent / "assets"


def shipped_models() -> list[str]:
    """The models shipped in trainers/assets (``builtin:NAME``); :func:`trainers.built_models.builtin_models`
    adds those built into a cache by their scripts."""
    return sorted(p.name for p in ASSETS_DIR.iterdir() if p.is_dir()) if ASSETS_DIR.is_dir() else []
