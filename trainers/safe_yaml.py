"""YAML files a user hands us (run configs, study specs, space includes, Slurm profiles), read within limits.

A study spec or a run config is a few kilobytes. A file far beyond that, or not a file at all, is a
mistake (a wrong path, a device, a generated file) or hostile, and must be refused at once with a
message, never with a traceback, a hang or an exhausted memory. :func:`read_yaml_file` refuses:

* anything but a regular file (a folder, ``/dev/zero``, ``/dev/urandom``, a FIFO), before opening it;
* more than :data:`MAX_BYTES` bytes (it reads at most that many plus one, so a growing file is bounded too);
* bytes that are not UTF-8 text;
* nesting deeper than :data:`MAX_DEPTH` (PyYAML builds documents recursively: ten thousand ``[`` would
  exhaust Python's stack). The depth is counted on the token stream, which the scanner reads iteratively;
* more than :data:`MAX_VALUES` values once aliases are expanded (``*alias`` repeats a subtree without
  copying it: ten levels of ten aliases are 10^10 values for any code that walks the document), and an
  alias inside the value it names (a document that contains itself);
* a string holding a NUL character (no path, name or environment variable can hold one);
* an integer literal of more than :data:`MAX_INT_DIGITS` digits (Python refuses to convert beyond 4300).

Every refusal is a :class:`YamlFileError` whose message names the file, the place in the document where
that applies, and the limit. Imports PyYAML only: the trainer (``trainers.config.load_config``) and the
sweeper (``sweeper.study.schema.read_yaml``) both read their files through it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 256 << 10        # 256 KiB: a large study spec is ~10 KB (parsed in ~1 s at the limit, benchmarks/hostile_inputs.py)
MAX_DEPTH = 64               # mappings and lists inside each other; a study spec nests ~6 deep
MAX_VALUES = 100_000         # scalars, mappings and lists, aliases expanded
MAX_INT_DIGITS = 100         # digits of one integer literal

_INT_LITERAL = re.compile(r"[-+]?[0-9][0-9_]*")
_OPEN = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken)
_CLOSE = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


# libyaml's parser when PyYAML has it (5-10 times faster than the pure-Python one); the resolver and the
# constructor stay PyYAML's, so both read a document the same way.
FastSafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlFileError(ValueError):
    """A YAML file was refused or could not be read. ``str(error)`` is the user-facing message."""


def read_yaml_file(path: str | Path, what: str, loader: type = FastSafeLoader) -> Any:
    """The document in the YAML file ``path`` (None for an empty file), read with ``loader`` (a SafeLoader
    subclass) within the limits above. ``what`` names the file in messages (``"study file"``)."""
    text = read_text_file(path, what)
    return load_yaml_text(text, f"{what} {path}", loader)


def read_text_file(path: str | Path, what: str, max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes`` bytes; :class:`YamlFileError` otherwise."""
    shown = f"{what} {path}"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise YamlFileError(f"{shown} does not exist") from None
    except (OSError, ValueError) as error:  # a NUL in the path, a name too long, no permission
        raise YamlFileError(f"{shown} cannot be read: {_reason(error)}") from None
    if not stat.S_ISREG(info.st_mode):
        raise YamlFileError(f"{shown} is {_file_kind(info.st_mode)}, not a regular file: give the path of a YAML file")
    if info.st_size > max_bytes:
        raise YamlFileError(f"{shown} has {info.st_size} bytes; a YAML file here may have at most {max_bytes} (is it the right file?)")
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        raise YamlFileError(f"{shown} cannot be read: {_reason(error)}") from None
    if len(data) > max_bytes:
        raise YamlFileError(f"{shown} grew past {max_bytes} bytes while it was read; a YAML file here may have at most {max_bytes}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise YamlFileError(
            f"{shown} is not UTF-8 text: byte 0x{data[error.start]:02x} at offset {error.start} (line {line}); "
            f"save it as UTF-8"
        ) from None


def load_yaml_text(text: str, shown: str, loader: type = FastSafeLoader) -> Any:
    """Parse YAML text within the limits (``shown`` names its source in messages)."""
    try:
        _check_depth(text, shown, loader)
        parser = loader(text)
        try:
            node = parser.get_single_node()
            if node is None:
                return None
            _check_values(node, shown)
            return parser.construct_document(node)
        finally:
            parser.dispose()
    except yaml.YAMLError as error:
        raise YamlFileError(f"{shown} is not valid YAML: {error}") from None
    except (ValueError, OverflowError, RecursionError, TypeError) as error:
        if isinstance(error, YamlFileError):
            raise
        raise YamlFileError(f"{shown} could not be read as YAML: {_reason(error)}") from None


def _check_depth(text: str, shown: str, loader: type) -> None:
    scanner = loader(text)
    try:
        depth = 0
        while scanner.check_token():
            token = scanner.get_token()
            if isinstance(token, _OPEN):
                depth += 1
                if depth > MAX_DEPTH:
                    line = token.start_mark.line + 1
                    raise YamlFileError(f"{shown}: line {line} nests mappings and lists more than {MAX_DEPTH} deep; "
                                        f"a spec needs a few levels")
            elif isinstance(token, _CLOSE):
                depth -= 1
    finally:
        scanner.dispose()


def _check_values(root: yaml.Node, shown: str) -> None:
    """Count the values of the composed document with aliases expanded (memoized per node, so a shared
    subtree is counted once per use without being walked again), and refuse NULs, huge integers and
    self-containing aliases. Iterative: the depth is already bounded, but no recursion is needed."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, str, bool]] = [(root, "", False)]
    while stack:
        node, where, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            children = _children(node, where)
            sizes[key] = 1 + sum(sizes[id(child)] for child, _ in children)
            if sizes[key] > MAX_VALUES:
                raise YamlFileError(f"{shown}: {where or 'the document'} expands to more than {MAX_VALUES} values "
                                    f"(aliases repeat their subtree); a spec needs a few hundred")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YamlFileError(f"{shown}: {where or 'the document'} contains itself through an alias (*name inside &name)")
        if isinstance(node, yaml.ScalarNode):
            _check_scalar(node, where, shown)
            sizes[key] = 1
            continue
        if isinstance(node, yaml.MappingNode):
            _check_duplicate_keys(node, where, shown)
        on_path.add(key)
        stack.append((node, where, True))
        for child, child_where in _children(node, where):
            if id(child) in on_path:
                raise YamlFileError(f"{shown}: {child_where} contains itself through an alias (*name inside &name)")
            if id(child) not in sizes:
                stack.append((child, child_where, False))


def _children(node: yaml.Node, where: str) -> list[tuple[yaml.Node, str]]:
    if isinstance(node, yaml.SequenceNode):
        return [(item, f"{where}[{index}]") for index, item in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        out = []
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            name = name if len(name) <= 60 else name[:57] + "..."
            out += [(key_node, f"{where}.{name}" if where else name), (value_node, f"{where}.{name}" if where else name)]
        return out
    return []


def _check_duplicate_keys(node: yaml.MappingNode, where: str, shown: str) -> None:
    """PyYAML keeps the last of two equal keys without a word; a spec with ``budget:`` twice is a mistake."""
    seen: dict[str, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        line = key_node.start_mark.line + 1
        if key_node.value in seen:
            place = f"{where}.{key_node.value}" if where else key_node.value
            raise YamlFileError(f"{shown}: {place} is given twice (lines {seen[key_node.value]} and {line}); keep one")
        seen[key_node.value] = line


def _check_scalar(node: yaml.ScalarNode, where: str, shown: str) -> None:
    value = node.value
    place = where or "the document"
    if "\x00" in value:
        raise YamlFileError(f"{shown}: {place} holds a NUL character (\\0); no name, path or value here can contain one")
    if node.tag == "tag:yaml.org,2002:int" and _INT_LITERAL.fullmatch(value) and len(value.lstrip("+-").replace("_", "")) > MAX_INT_DIGITS:
        raise YamlFileError(f"{shown}: {place} is an integer of {len(value)} digits; at most {MAX_INT_DIGITS} are accepted")


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
