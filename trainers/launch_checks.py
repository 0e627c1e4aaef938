"""What a run config gets wrong that its schema cannot see, found before the run starts (no torch).

:func:`launch_problems` looks at the filesystem and the registries: a ``builtin:`` model that is not
shipped, a local model (or reference model) folder that does not exist, a local dataset path that does not
exist, a reward that is not registered. ``sweeper train`` (``python -m trainers``) refuses such a config
before it loads anything; the sweeper checks every config a study's trials can get at ``sweeper validate``
(``sweeper.run.checks``). Re-exported by :mod:`trainers.config`, the contract the sweeper imports.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, Sequence

from .assets import ASSETS_DIR, BUILTIN_PREFIX
from .built_models import BUILD_SCRIPTS, build_command, built_model_folder, builtin_models, is_built
from .rewards import registered_rewards

BUILTIN_REWARDS = tuple(registered_rewards())
"""The rewards ``trainers/rewards.py`` registers, read from its registry (torch-free); a custom trainer may add more."""

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


def model_path_problem(path: str) -> str | None:
    """None when ``path`` can name a model: a shipped ``builtin:NAME``, a local folder, or a hub id
    (``org/name``, resolved when the run loads it); else what is wrong and what would be accepted."""
    accepted = f"give a local model folder, a hub id (org/name) or one of: {', '.join(BUILTIN_PREFIX + m for m in builtin_models())}"
    if path.startswith(BUILTIN_PREFIX):
        name = path[len(BUILTIN_PREFIX):]
        if name in BUILD_SCRIPTS:
            if is_built(name):
                return None
            return f"{path!r} is not built yet at {built_model_folder(name)}: build it with `{build_command(name)}`"
        if re.fullmatch(r"[A-Za-z0-9][\w.-]*", name) and (ASSETS_DIR / name).is_dir():
            return None
        return f"{path!r}: no built-in model {name!r}; {accepted}"
    try:
        folder = Path(path).expanduser()
        if folder.is_dir():
            return None
        if folder.exists():
            return f"{path!r} is a file, not a model folder (one with config.json); {accepted}"
    except (OSError, ValueError) as error:
        return f"{path!r} is not a usable path ({error}); {accepted}"
    if path.startswith(("/", "./", "../", "~")) or not _HUB_ID.fullmatch(path):
        return f"{path!r}: no such folder; {accepted}"
    return None


def launch_problems(config: Any, rewards: Sequence[str] = BUILTIN_REWARDS) -> list[tuple[str, str]]:
    """``(field, problem)`` for what the schema cannot see but the filesystem and the registries can, before
    a run starts: a ``builtin:`` model that is not shipped, a local model (or reference model) folder that
    does not exist, a local dataset path that does not exist, a reward that is not registered."""
    problems = []
    if (problem := model_path_problem(config.model.path)) is not None:
        problems.append(("model.path", problem))
    if config.kl.beta > 0 and config.kl.ref_path and (problem := model_path_problem(config.kl.ref_path)) is not None:
        problems.append(("kl.ref_path", problem))
    if getattr(config, "engine", "native") == "trl" and importlib.util.find_spec("trl") is None:
        problems.append(("engine", "'trl' needs TRL, which is not installed in this environment: pip install -e '.[trl]' "
                                   "(scripts/setup.sh installs it), or set engine: native"))
    if config.data.reward not in rewards:
        problems.append(("data.reward", f"{config.data.reward!r} is not a registered reward; registered: {', '.join(sorted(rewards))}"))
    dataset = config.data.dataset if config.data.source == "dataset" else None
    if dataset is not None and (problem := builtin_data_files_problem(dataset.data_files)) is not None:
        problems.append(("data.dataset.data_files", problem))
    if dataset is not None and dataset.path.startswith(("/", "./", "../", "~")):
        try:
            missing = not Path(dataset.path).expanduser().exists()
        except (OSError, ValueError):
            missing = True
        if missing:
            problems.append(("data.dataset.path", f"{dataset.path!r}: no such file or folder; give a local dataset "
                                                  f"folder or file, or a datasets hub id"))
    return problems


def builtin_data_files_problem(data_files: object) -> str | None:
    """None unless a ``builtin:NAME/path`` entry of ``data.dataset.data_files`` names no file (or a model not built)."""
    from .built_models import resolve_builtin_file

    values = data_files.values() if isinstance(data_files, dict) else data_files if isinstance(data_files, list) else [data_files]
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            try:
                resolve_builtin_file(item)
            except ValueError as error:
                return str(error)
    return None
