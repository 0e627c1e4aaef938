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
gets a new key), the data section and the contents of its local dataset files (:func:`dataset_files`), the
evaluation section (but the cache folder), the rollout engine and its ``vllm_engine_args``, and the code
that computes it (:func:`code_versions`: this package's version and git commit, with a digest of the
uncommitted changes when there are some, and the torch, transformers and vLLM versions). It does not hold
the run's seed, the training settings or the number of processes.

A record holds its key and the digest of the validation prompts it scored (``per_prompt.prompt_digest``);
:func:`read_step0` returns it only when both match what the reading run computes (a file renamed by hand,
or a key that misses some input, then costs a validation instead of giving a wrong one).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

FORMAT = 2  # bump when what a cached record holds changes
PROJECT_ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "transformers", "vllm")


def _model_files(model_folder: str) -> list[tuple[str, int, int]]:
    folder = Path(model_folder)
    if not folder.is_dir():
        return []  # a hub id: its name and revision are in the model section
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file())


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_files(data: dict[str, Any]) -> list[tuple[str, str]]:
    """``[(path, sha256 of its contents)]`` of the local files a ``data`` section (as a JSON dict) reads: the
    ``data.dataset.data_files`` that exist on disk and, when ``data.dataset.path`` is a local file or folder,
    its files. A hub dataset (no local file) gives ``[]``: its name, config and splits are in the data section."""
    dataset = data.get("dataset") if data.get("source") == "dataset" else None
    if not dataset:
        return []
    named: list[str] = []
    files = dataset.get("data_files")
    if isinstance(files, str):
        named.append(files)
    elif isinstance(files, list):
        named += [f for f in files if isinstance(f, str)]
    elif isinstance(files, dict):
        for value in files.values():
            named += [value] if isinstance(value, str) else [f for f in value or [] if isinstance(f, str)]
    named.append(dataset.get("path") or "")
    found: dict[str, str] = {}
    for name in named:
        path = Path(name) if name else None
        if path is None or not path.exists():
            continue
        inside = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in inside:
            found[str(file.resolve())] = _file_digest(file)
    return sorted(found.items())


@functools.lru_cache(maxsize=1)
def code_versions() -> dict[str, str | None]:
    """The code a validation result depends on: this package's version, its git commit (None outside a git
    checkout of this project; with a digest of ``git diff HEAD`` when there are uncommitted changes) and the versions of
    torch, transformers and vLLM (None: not installed). Computed once per process."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for name in ("entropy-sweeper", *LIBRARIES):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    versions["git_commit"] = _git_commit()
    return versions


def _git_commit() -> str | None:
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0 or Path(top.stdout.decode().strip()).resolve() != PROJECT_ROOT.resolve():
            return None  # not a checkout of this project (e.g. installed inside some other repository)
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        commit = head.stdout.decode().strip()
        diff = git("diff", "HEAD", "--", ".")
        if diff.returncode == 0 and diff.stdout:
            commit += "+" + hashlib.sha256(diff.stdout).hexdigest()[:12]
        return commit
    except (OSError, subprocess.SubprocessError):
        return None


def step0_key(config: Any, model_folder: str) -> str:
    """The cache key of a run's step-0 validation (see the module docstring)."""
    data = config.model_dump(mode="json")
    evaluation = {k: v for k, v in data["eval"].items() if k != "step0_cache"}
    evaluation["max_new_tokens"] = evaluation["max_new_tokens"] or data["rollout"]["max_new_tokens"]
    content = {"format": FORMAT, "model": data["model"], "model_files": _model_files(model_folder), "data": data["data"],
               "data_files": dataset_files(data["data"]), "eval": evaluation, "engine": data["rollout"]["engine"],
               "engine_args": data["rollout"]["vllm_engine_args"], "code": code_versions()}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:24]


def read_step0(folder: str | Path, key: str, prompt_digest: str | None = None) -> dict[str, Any] | None:
    """The cached {"metrics", "per_prompt"} of ``key`` in ``folder``, or None: absent, unreadable, written
    under another key, or (``prompt_digest`` given) of other validation prompts than ``prompt_digest``."""
    path = Path(folder) / f"{key}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not {"metrics", "per_prompt"} <= set(record) or record.get("key") != key:
        return None
    if prompt_digest is not None and (record["per_prompt"] or {}).get("prompt_digest") != prompt_digest:
        return None
    return record


def write_step0(folder: str | Path, key: str, metrics: dict[str, float], per_prompt: dict[str, Any]) -> Path:
    """Store a step-0 validation (atomically: a concurrent reader sees the whole file or none)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.json"
    tmp = folder / f".{key}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"key": key, "metrics": metrics, "per_prompt": per_prompt}))
    os.replace(tmp, path)
    return path
