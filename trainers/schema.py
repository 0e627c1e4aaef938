"""What run configs (:mod:`trainers.config`) and the sweeper's study specs (which embed a run config as
their ``base``) share: one model walker, one error formatter (an error line names the field as the user
wrote it, what is wrong, and what is accepted) and the refusal of booleans where numbers are expected.
Pure pydantic, no torch.
"""

from __future__ import annotations

import functools
import re
from types import UnionType
from typing import Annotated, Any, Sequence, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

def _strip(annotation: Any) -> Any:
    """``Annotated[X, ...]`` -> X and ``X | None`` -> X (other unions are kept)."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
    return annotation


def as_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (through Annotated and Optional), or None."""
    annotation = _strip(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def union_tags(annotation: Any) -> list[str]:
    """The ``type`` literals of a discriminated union's members, in declaration order (e.g. a study's
    sampler kinds); [] for anything else."""
    tags: list[str] = []
    annotation = _strip(annotation)
    if get_origin(annotation) in (Union, UnionType):
        for member in get_args(annotation):
            model = as_model(member)
            field = model.model_fields.get("type") if model else None
            if field is not None:
                tags += [str(tag) for tag in get_args(field.annotation)]
    return tags


def step_into(annotation: Any, part: Any) -> Any:
    """The annotation one step below ``annotation`` along a pydantic location part (a field name, a list
    index, a dict key or a union's ``type`` tag), or None when there is none."""
    annotation = _strip(annotation)
    model = as_model(annotation)
    if model is not None:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field is not None else None
    origin = get_origin(annotation)
    if origin in (list, tuple):
        return get_args(annotation)[0]
    if origin is dict:
        return get_args(annotation)[1]
    if origin in (Union, UnionType):
        for member in get_args(annotation):
            member_model = as_model(member)
            type_field = member_model.model_fields.get("type") if member_model else None
            if type_field is not None and part in get_args(type_field.annotation):
                return member_model
        return annotation
    return None


def annotation_at(root: type[BaseModel], loc: Sequence[Any]) -> Any:
    """The annotation at a pydantic error location below ``root`` (None when the walk leaves the schema)."""
    annotation: Any = root
    for part in loc:
        if isinstance(part, str) and part.startswith(_INTERNAL_LOC_PREFIXES):
            continue
        annotation = step_into(annotation, part)
        if annotation is None:
            return None
    return annotation


_INTERNAL_LOC_PREFIXES = ("function-", "list[", "dict[", "union[", "tagged-union[")


def render_location(loc: Sequence[Any], data: Any = None) -> str:
    """A pydantic location as the user wrote it: ``a.b``, ``[key]`` for keys holding a dot or a slash,
    ``[i]`` for list items. Walked along ``data`` (the input), so union tags and pydantic's internal
    markers, which are not in the data, are dropped."""
    out = ""
    node = data
    for index, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            key = str(part)
            out += f"[{key}]" if ("." in key or "/" in key) and out else (f".{key}" if out else key)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out += f"[{part}]"
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, int):
            continue  # a single mapping normalized to a one-item list (a study's objective)
        elif isinstance(node, dict) and node.get("type") == part:
            continue  # a discriminated union's tag
        elif isinstance(node, dict) and "type" not in node and index + 1 < len(loc) and loc[index + 1] in node:
            continue  # a union's tag filled in by a shorthand (``executor: {env: ...}`` is a local executor)
        elif isinstance(part, str) and part.startswith(_INTERNAL_LOC_PREFIXES):
            continue
        else:
            out += f".{part}" if out else str(part)
            node = None
    return out


def _names_a_field(line: str, root: type[BaseModel]) -> bool:
    """True when a validator's message starts with a field path of ``root`` (``space.params[x]: ...``)."""
    head = re.match(r"[A-Za-z_]\w*", line)
    return bool(head) and head.group(0) in root.model_fields and line[head.end():head.end() + 1] in (".", "[", ":", " ")


def format_validation_error(error: ValidationError, prefix: str = "", *, root: type[BaseModel], data: Any = None) -> str:
    """One line per error: ``  <field path>: <problem> [(got <value>)]``.

    ``root`` is the model validated (it gives the accepted keys of an unknown key and the kinds of a missing
    ``type``), ``data`` the validated input (paths are rendered along it), and ``prefix`` is put before every
    path (``base.`` for a study's run config)."""
    lines = []
    for item in error.errors():
        loc, kind = item["loc"], item["type"]
        path = prefix + render_location(loc, data) if loc else (prefix.rstrip(".") or "<root>")
        msg = item["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if kind == "missing":
            msg = "required field is missing"
        elif kind == "union_tag_not_found":
            tags = union_tags(annotation_at(root, loc))
            msg = f"missing 'type': one of {', '.join(tags)}" if tags else "missing 'type'"
        elif kind == "union_tag_invalid":
            ctx = item.get("ctx") or {}
            msg = f"type {ctx.get('tag')!r} is not known; accepted: {ctx.get('expected_tags')}"
        elif kind == "finite_number":
            msg = "must be a finite number; inf and nan are not accepted"
        elif kind == "extra_forbidden":
            model = as_model(annotation_at(root, loc[:-1]))
            msg = "unknown key" + (f"; accepted: {', '.join(model.model_fields)}" if model else "")
        got = item.get("input")
        shown = kind not in ("missing", "value_error", "assertion_error") and not isinstance(got, (dict, list))
        for line in msg.split("\n"):
            head, colon, rest = line.partition(":")
            if _names_a_field(line, root):
                lines.append(f"  {prefix}{line}")  # the validator already names the field
            elif kind == "value_error" and colon and isinstance(got, dict) and head in got:
                # a validator of a mapping names one of its keys: "n_trials: ..." under budget
                lines.append(f"  {path}{f'[{head}]' if '.' in head or '/' in head else f'.{head}'}:{rest}")
            else:
                lines.append(f"  {path}: {line}" + (f" (got {got!r})" if shown else ""))
    return "\n".join(lines)


def expects_number(annotation: Any) -> bool:
    """True when a field takes numbers and no booleans (``int``, ``float | None``, ``int | Literal["auto"]``)."""
    annotation = _strip(annotation)
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    members = [_strip(member) for member in members]
    return any(m in (int, float) for m in members) and not any(m in (bool, str, Any) for m in members)


def refuse_bool_as_number(model: type[BaseModel], value: Any, field_name: str | None) -> Any:
    """pydantic reads ``true`` as 1 where a number is expected; YAML makes booleans of true/yes/on, so
    ``n_trials: true`` would silently mean 1. Refuse it (for the run config and the study spec alike)."""
    if isinstance(value, bool) and field_name and _field_expects_number(model, field_name):
        raise ValueError(f"expected a number, got the boolean {str(value).lower()} (YAML reads true/false/yes/no/on/off as booleans)")
    return value


@functools.lru_cache(maxsize=None)
def _field_expects_number(model: type[BaseModel], field_name: str) -> bool:
    return expects_number(model.model_fields[field_name].annotation)
