"""The step-0 validation, computed once and reused (``eval.step0_cache``).

The validation at step 0 scores the untrained model. Its samples depend on the model, the validation
prompts and the evaluation settings only (validation is seeded by ``eval.seed``, not by the run's seed:
``GRPOTrainer.evaluate``), so every run that starts from the same model and validates the same way gets
the same result: every trial of a study, every seed of a replicated trial. At real scale that is minutes
of GPU per trial. With ``eval.step0_cache`` set to a folder (the sweeper sets ``<study dir>/step0_cache``),
the first run that validates at step 0 stores ``<key>.json`` there ({"metrics", "per_prompt"}), and later
runs with the same key report that result instead of validating again.

The key (:func:`step0_key`) is a hash of what the result depends on: the model section and, for a local
model folder, the size and modification time of each of its files (a retrained model in the same folder
gets a new key), the data section, the evaluation section (but the cache folder) and the rollout engine
and length. It does not hold the run's seed, the training settings or the number of processes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

FORMAT = 1  # bump when what a cached record holds changes


def _model_files(model_folder: str) -> list[tuple[str, int, int]]:
    folder = Path(model_folder)
    if not folder.is_dir():
        return []  # a hub id: its name and revision are in the model section
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file())


def step0_key(config: Any, model_folder: str) -> str:
    """The cache key of a run's step-0 validation (see the module docstring)."""
    data = config.model_dump(mode="json")
    evaluation = {k: v for k, v in data["eval"].items() if k != "step0_cache"}
    evaluation["max_new_tokens"] = evaluation["max_new_tokens"] or data["rollout"]["max_new_tokens"]
    content = {"format": FORMAT, "model": data["model"], "model_files": _model_files(model_folder), "data": data["data"],
               "eval": evaluation, "engine": data["rollout"]["engine"]}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:24]


def read_step0(folder: str | Path, key: str) -> dict[str, Any] | None:
    """The cached {"metrics", "per_prompt"} of ``key`` in ``folder``, or None (absent or unreadable)."""
    path = Path(folder) / f"{key}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"metrics", "per_prompt"} <= set(record) else None


def write_step0(folder: str | Path, key: str, metrics: dict[str, float], per_prompt: dict[str, Any]) -> Path:
    """Store a step-0 validation (atomically: a concurrent reader sees the whole file or none)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.json"
    tmp = folder / f".{key}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"metrics": metrics, "per_prompt": per_prompt}))
    os.replace(tmp, path)
    return path
