"""Helpers the study tests share: a study file's trials, read back from its storage, and a quiet driver log."""

from __future__ import annotations

from pathlib import Path

import optuna

from sweeper.run.storage import make_storage
from sweeper.study.spec import load_spec


def trials_of(path: Path):
    """The trials of the study that the study file ``path`` names, from its storage."""
    spec = load_spec(path)
    return optuna.load_study(study_name=spec.study.name, storage=make_storage(spec.study.storage)).get_trials()


def quiet(_message: str) -> None:
    """A driver log that prints nothing."""
