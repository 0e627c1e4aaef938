"""The space section's ``include``: :func:`expand_space` merges the included space files (ready ones,
``builtin:NAME`` = search_spaces/NAME.yaml, or paths) before validation.

Space files read by ``include``: each file read and expanded once per spec, however many files include it.

Includes form a graph; only cycles were refused before, so a few small files that each include the next
ones twice (a diamond chain) made thousands of reads: the expansion of a file depends on the file alone
(a cycle through it is found on its first expansion), so it is kept in ``memo`` and reused. A spec reads at
most :data:`MAX_INCLUDE_FILES` files, nested at most :data:`MAX_INCLUDE_DEPTH` deep (Python's recursion
limit would end a deeper chain with a traceback).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from sweeper.study.schema import SpecError, read_yaml

SEARCH_SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
BUILTIN_PREFIX = "builtin:"
SPACE_FILE_KEYS = ("params", "constraints", "include", "description")
MAX_INCLUDE_FILES = 200
MAX_INCLUDE_DEPTH = 32


def expand_include(path: Path, include: str, stack: list[str], memo: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The space file ``path`` (named ``include`` in the spec) with its own includes merged
    (:func:`expand_space`), and the file that defined each of its parameters."""
    key = str(path)
    if key not in memo:
        if len(stack) > MAX_INCLUDE_DEPTH:
            raise SpecError(f"space.include: {include} is nested more than {MAX_INCLUDE_DEPTH} files deep "
                            f"({' -> '.join(stack[:3])} -> ... -> {key}); flatten the chain")
        if len(memo) >= MAX_INCLUDE_FILES:
            raise SpecError(f"space.include: {include}: the spec includes more than {MAX_INCLUDE_FILES} space files; "
                            f"merge them into fewer files")
        data = read_yaml(path, f"space.include: {include}:")
        if not isinstance(data, dict):
            raise SpecError(f"space.include: {path} must be a mapping with params (and constraints, include)")
        unknown = set(data) - set(SPACE_FILE_KEYS)
        if unknown:
            raise SpecError(f"space.include: {path} has unknown key(s) {sorted(unknown)}; accepted: {', '.join(SPACE_FILE_KEYS)}")
        data.pop("description", None)
        inner_origins: dict[str, str] = {}
        memo[key] = (expand_space(data, path.parent, inner_origins, stack + [key], memo), inner_origins)
    data, inner_origins = memo[key]
    return copy.deepcopy(data), dict(inner_origins)


def expand_space(space: Any, folder: Path, origins: dict[str, str], stack: list[str], memo: dict | None = None) -> Any:
    """Merge ``include`` d space files (in order, then this file's own params: a later definition of
    a parameter name replaces an earlier one; constraints are concatenated). ``origins`` gets the file
    that defined each parameter; ``memo``: the files expanded so far (:mod:`sweeper.study.includes`)."""
    memo = {} if memo is None else memo
    if not isinstance(space, dict):
        return space
    includes = space.get("include")
    if includes is None:
        for name in space.get("params") or {}:
            origins.setdefault(name, stack[-1])
        return space
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise SpecError(f"space.include: give a file or a list of files (builtin:NAME for search_spaces/NAME.yaml), got {includes!r}")
    params: dict[str, Any] = {}
    constraints: list[Any] = []
    own = space.get("params") or {}
    own_constraints = space.get("constraints") or []
    if not isinstance(own, dict) or not isinstance(own_constraints, list):
        return space  # not merged: validation reports the field's shape
    for include in includes:
        path = resolve_include(include, folder)
        if str(path) in stack:
            raise SpecError(f"space.include: {include} includes itself (chain: {' -> '.join(stack + [str(path)])})")
        data, inner_origins = expand_include(path, include, stack, memo)  # each file once per spec
        for key, kind in (("params", dict), ("constraints", list)):
            if not isinstance(data.get(key) or kind(), kind):
                raise SpecError(f"space.include: {path}: {key} must be a {'mapping' if kind is dict else 'list'}, "
                                f"got {type(data[key]).__name__} ({data[key]!r:.60})")
        for name, param in (data.get("params") or {}).items():
            params[name] = param
            origins[name] = inner_origins.get(name, str(path))
        constraints += data.get("constraints") or []
    for name, param in own.items():
        params.pop(name, None)
        params[name] = param
        origins[name] = stack[-1]
    merged = {k: v for k, v in space.items() if k != "include"}
    merged["params"] = params
    merged["constraints"] = constraints + own_constraints
    return merged


def resolve_include(include: str, folder: Path) -> Path:
    if include.startswith(BUILTIN_PREFIX):
        name = include[len(BUILTIN_PREFIX):]
        path = SEARCH_SPACES_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
        if not path.exists():
            shipped = sorted(p.stem for p in SEARCH_SPACES_DIR.glob("*.yaml"))
            raise SpecError(f"space.include: no ready space {include!r}; shipped: {', '.join('builtin:' + s for s in shipped)}")
        return path
    path = Path(include)
    return (path if path.is_absolute() else folder / path).resolve()
