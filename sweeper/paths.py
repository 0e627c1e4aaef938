"""Dotted paths into a nested config mapping (``clip.eps_high``): read, write, flatten.

Imports nothing of the sweeper."""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["get_path", "set_path", "leaves"]


def get_path(data: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of a nested mapping, None where a part is missing."""
    node: Any = data
    for part in path.split("."):
        node = node[part] if isinstance(node, Mapping) and part in node else None
    return node


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path of a nested dict, creating the mappings on the way."""
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def leaves(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {dotted.path: value} of its leaves (a list or an empty mapping is one leaf)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(leaves(value, f"{path}."))
        else:
            flat[path] = value
    return flat
