"""Bounded, line-aware reading of the YAML files users hand the tool.

Every spec, `site.yaml`, imported `environment.yml` and `virtual-packages.yml` is read
here, and every problem is one :class:`SpecError` naming the file, the key path and the
line. The reader is bounded, since a spec may come from anyone with a hub account:

- a file larger than its cap (1 MiB for a spec) is refused before it is read;
- the bytes must be UTF-8 (the error names the line of the first bad byte);
- YAML aliases are refused: the 465-byte "billion laughs" document expands to gigabytes
  in any walk over the data, and no spec needs an alias;
- nesting deeper than Python's recursion allows is one line, not a traceback;
- no string, key or value, holds a control character (newlines, carriage returns, NUL,
  C1 controls, Unicode line and paragraph separators, bidirectional overrides): every
  value ends up in a file another program reads (a Dockerfile, labels, Helm values, the
  gateway's Python), where such a character could end a line or a quote early;
- no number is infinite or NaN (`.inf` in a bound became `inf` in the gateway's Python).

PyYAML is kept (it is what the rest of the tool reads and writes); this module adds what
it lacks for untrusted input: a loader without aliases, and the key path -> line map that
the error messages need.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from buildtool.common.errors import SpecError

# The most a spec, site.yaml or environment.yml may weigh. The largest public environment
# file imported in the tests is 5 KiB.
MAX_BYTES = 1024 * 1024
# What no string may hold: C0 and C1 controls (tab, newline, carriage return and NUL
# among them), DEL, the Unicode line and paragraph separators, the bidirectional
# embeddings, overrides and isolates, and the byte-order mark.
UNSAFE_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")

Lines = dict[tuple[Any, ...], int]


def unsafe_character(text: str) -> str | None:
    """A description of the first character of `text` that no value may hold, or None."""
    found = UNSAFE_CHARACTERS.search(text)
    if found is None:
        return None
    names = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\x00": "a NUL"}
    char = found.group()
    return names.get(char, f"the control character U+{ord(char):04X}")


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases (`*name`) where they are composed."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed", event.start_mark
            )
        return super().compose_node(parent, index)


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int) -> None:
        self.key, self.line = key, line


def key_text(loc: tuple[Any, ...]) -> str:
    """`("notebook", "dependencies", 2)` -> `notebook.dependencies[2]`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def nearest_line(lines: Lines, loc: tuple[Any, ...]) -> int | None:
    """The line of `loc`, or of its nearest enclosing key that has one."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _line_map(node: yaml.Node, prefix: tuple[Any, ...] = ()) -> Lines:
    """Map each key path in a YAML document to its 1-based line."""
    lines: Lines = {prefix: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, key_node.value)
            if path in lines:
                raise _DuplicateKey(key_text(path), key_node.start_mark.line + 1)
            lines.update(_line_map(value_node, path))
            lines[path] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_line_map(item, (*prefix, index)))
    return lines


def read_text(path: Path, max_bytes: int = MAX_BYTES, what: str = "file") -> str:
    """`path`'s text: at most `max_bytes`, UTF-8, or one SpecError saying which."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise SpecError(path, "", f"{what} not found") from None
    if not path.is_file():
        raise SpecError(path, "", f"{what} is not a regular file")
    if size > max_bytes:
        raise SpecError(path, "", f"{what} is {size} bytes, more than the {max_bytes} allowed")
    data = path.read_bytes()[: max_bytes + 1]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(path, "", f"not UTF-8 text (byte 0x{data[exc.start]:02x})", line) from None


def _check_values(path: Path, data: Any, lines: Lines, loc: tuple[Any, ...] = ()) -> None:
    """Refuse control characters in every string and non-finite numbers, by key path."""
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and (problem := unsafe_character(key)):
                where = nearest_line(lines, loc)
                raise SpecError(path, key_text(loc), f"a key holds {problem}", where)
            _check_values(path, value, lines, (*loc, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            _check_values(path, value, lines, (*loc, index))
    elif isinstance(data, str) and (problem := unsafe_character(data)):
        message = f"must be one line of text, but holds {problem}"
        raise SpecError(path, key_text(loc), message, nearest_line(lines, loc))
    elif isinstance(data, float) and not math.isfinite(data):
        raise SpecError(path, key_text(loc), f"{data} is not a number", nearest_line(lines, loc))


def load(path: Path, text: str, what: str = "the file") -> tuple[dict[str, Any], Lines]:
    """Parse `text` (read from `path`): a mapping, its key path -> line map, checked values."""
    try:
        loader = _NoAliasLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(path, "", f"not valid YAML: {problem}", line) from None
    except RecursionError:
        raise SpecError(path, "", "not valid YAML: nested too deeply") from None
    if not isinstance(data, dict) or node is None:
        raise SpecError(path, "", f"{what} must be a YAML mapping of keys to values", 1)
    try:
        lines = _line_map(node)
    except _DuplicateKey as dup:
        raise SpecError(path, dup.key, "key appears twice in the same mapping", dup.line) from None
    _check_values(path, data, lines)
    return data, lines


_Model = TypeVar("_Model", bound=BaseModel)


def validate(
    path: Path, text: str, model: type[_Model], what: str = "the file"
) -> tuple[_Model, Lines]:
    """Parse YAML `text` (read from `path`) into `model`, and the line of each key path.

    Every problem is one :class:`SpecError` naming the file, the key path and the line."""
    data, lines = load(path, text, what)
    try:
        validated = model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}"
        elif error["type"] == "missing":
            message = "required key is missing"
        index = re.match(r"\[(\d+)\] ", message)
        key = re.match(r"\{([^}]*)\} ", message)
        if index:  # list validators name the offending item: "[2] ..."
            loc = (*loc, int(index.group(1)))
            message = message[index.end() :]
        elif key:  # and mapping validators the offending key: "{NAME} ..."
            loc = (*loc, key.group(1))
            message = message[key.end() :]
        raise SpecError(path, key_text(loc), message, nearest_line(lines, loc)) from None
    return validated, lines


def load_file(
    path: Path, model: type[_Model], what: str = "the file", max_bytes: int = MAX_BYTES
) -> tuple[_Model, Lines]:
    """Read and validate `path` (see :func:`read_text` and :func:`validate`)."""
    return validate(path, read_text(path, max_bytes, what.removeprefix("the ")), model, what)
