"""Space files read by ``include``: each file read and expanded once per spec, however many files include it.

Includes form a graph; only cycles were refused before, so a few small files that each include the next
ones twice (a diamond chain) made thousands of reads: the expansion of a file depends on the file alone
(a cycle through it is found on its first expansion), so it is kept in ``memo`` and reused. A spec reads at
most :data:`MAX_INCLUDE_FILES` files, nested at most :data:`MAX_INCLUDE_DEPTH` deep (Python's recursion
limit would end a deeper chain with a traceback).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

from sweeper.study.schema import SpecError, read_yaml

SPACE_FILE_KEYS = ("params", "constraints", "include", "description")
MAX_INCLUDE_FILES = 200
MAX_INCLUDE_DEPTH = 32


def expand_include(path: Path, include: str, stack: list[str], memo: dict[str, Any],
                   expand: Callable[..., Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The space file ``path`` (named ``include`` in the spec) with its own includes merged (``expand`` is
    :func:`sweeper.study.space.expand_space`), and the file that defined each of its parameters."""
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
        memo[key] = (expand(data, path.parent, inner_origins, stack + [key], memo), inner_origins)
    data, inner_origins = memo[key]
    return copy.deepcopy(data), dict(inner_origins)
