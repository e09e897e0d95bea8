"""The TOML side of policies: reading a file into checked values with their lines, and writing one back.

tomllib gives values but no positions, so a small Locator scans the raw text
once (after tomllib has accepted it) and records the line of every table
header, key and array element; checked values carry Origin(file, line).
"""
from __future__ import annotations

import re
import tomllib
from typing import Any

from viewbox.errors import PolicyError
from viewbox.policy.model import (
    DEFAULT_ORIGIN, FIELDS, SCHEMA, GlobRule, Layer, ListenSocket, NetAllowRule, Origin, Policy, PublishedPort,
    UNLIMITED, Shape, TmpfsMount,
    check_field, describe, did_you_mean, format_size, quote, toml_key,
)

PathKey = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_AT_LINE = re.compile(r"\s*\(at line (\d+), column \d+\)$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)$")


class Locator:
    """Line numbers of the table headers, keys and array elements of a valid TOML text.

    Paths are key tuples with list indices: ("fs",), ("fs", "ro"), ("fs", "ro", 2),
    ("env", "set", "HOME"). Tables of arrays ([[x]]) count like arrays.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0
        self._line = 1
        self._lines: dict[PathKey, int] = {}
        self._scan()

    def line(self, *path: str | int) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), 0, -1):
            found = self._lines.get(path[:end])
            if found is not None:
                return found
        return None

    # -- scanning (the text is valid TOML: tomllib accepted it first)

    def _scan(self) -> None:
        table: PathKey = ()
        tables_seen: dict[PathKey, int] = {}
        while True:
            self._skip(newlines=True)
            if self._pos >= len(self._text):
                return
            start, line = self._pos, self._line
            if self._peek() == "[":
                is_array = self._peek(1) == "["
                self._advance(2 if is_array else 1)
                name: PathKey = self._key()
                if is_array:
                    index = tables_seen.get(name, 0)
                    tables_seen[name] = index + 1
                    name += (index,)
                table = name
                self._record(table, line)
            else:
                key = self._key()
                self._skip(newlines=False)
                if key and self._peek() == "=":
                    self._advance()
                    self._skip(newlines=False)
                    self._record(table + key, line)
                    self._value(table + key)
            self._skip_rest_of_line()
            if self._pos == start:
                self._advance()

    def _peek(self, ahead: int = 0) -> str:
        index = self._pos + ahead
        return self._text[index] if index < len(self._text) else ""

    def _advance(self, count: int = 1) -> None:
        end = min(self._pos + count, len(self._text))
        self._line += self._text.count("\n", self._pos, end)
        self._pos = end

    def _skip(self, *, newlines: bool) -> None:
        """Skips blanks and comments, and line ends too when `newlines`."""
        while self._pos < len(self._text):
            char = self._text[self._pos]
            if char in " \t" or (newlines and char in "\r\n"):
                self._advance()
            elif char == "#":
                self._skip_rest_of_line()
            else:
                return

    def _skip_rest_of_line(self) -> None:
        end = self._text.find("\n", self._pos)
        self._advance((len(self._text) if end < 0 else end) - self._pos)

    def _record(self, path: PathKey, line: int) -> None:
        for end in range(1, len(path) + 1):
            self._lines.setdefault(path[:end], line)

    def _key(self) -> tuple[str, ...]:
        """A dotted key: bare and quoted parts."""
        parts: list[str] = []
        while True:
            self._skip(newlines=False)
            if self._peek() in ("\"", "'"):
                start = self._pos
                self._string()
                parts.append(tomllib.loads(f"k = {self._text[start:self._pos]}")["k"])
            else:
                match = _BARE_KEY.match(self._text, self._pos)
                if not match:
                    return tuple(parts)
                parts.append(match.group())
                self._advance(match.end() - self._pos)
            self._skip(newlines=False)
            if self._peek() != ".":
                return tuple(parts)
            self._advance()

    def _value(self, path: PathKey) -> None:
        char = self._peek()
        if char in ("\"", "'"):
            self._string()
        elif char == "[":
            self._array(path)
        elif char == "{":
            self._inline_table(path)
        else:  # number, boolean, date-time: up to the next separator
            while self._pos < len(self._text) and self._text[self._pos] not in ",]}#\r\n":
                self._advance()

    def _string(self) -> None:
        text, delimiter = self._text, self._text[self._pos]
        escapes = delimiter == "\""
        if text.startswith(delimiter * 3, self._pos):
            self._advance(3)
            while self._pos < len(text):
                if escapes and text[self._pos] == "\\":
                    self._advance(2)
                elif text.startswith(delimiter * 3, self._pos):
                    self._advance(3)
                    # up to two quotes may end the content right before the delimiter
                    for _ in range(2):
                        if self._peek() == delimiter:
                            self._advance()
                    return
                else:
                    self._advance()
            return
        self._advance()
        while self._pos < len(text) and text[self._pos] != "\n":
            if escapes and text[self._pos] == "\\":
                self._advance(2)
            elif text[self._pos] == delimiter:
                self._advance()
                return
            else:
                self._advance()

    def _array(self, path: PathKey) -> None:
        self._advance()
        index = 0
        while self._pos < len(self._text):
            self._skip(newlines=True)
            if self._peek() == "]":
                self._advance()
                return
            self._record(path + (index,), self._line)
            self._value(path + (index,))
            self._skip(newlines=True)
            if self._peek() == ",":
                self._advance()
            elif self._peek() != "]":
                return
            index += 1

    def _inline_table(self, path: PathKey) -> None:
        self._advance()
        while self._pos < len(self._text):
            self._skip(newlines=True)
            if self._peek() == "}":
                self._advance()
                return
            line = self._line
            key = self._key()
            self._skip(newlines=False)
            if not key or self._peek() != "=":
                return
            self._advance()
            self._skip(newlines=False)
            self._record(path + key, line)
            self._value(path + key)
            self._skip(newlines=True)
            if self._peek() == ",":
                self._advance()
            elif self._peek() != "}":
                return


# --- reading -----------------------------------------------------------------

def parse_document(raw: bytes, file: str) -> tuple[dict[str, Any], Locator]:
    """The TOML document in `raw` and its locator; PolicyError (with the line) if it is not TOML."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PolicyError("not valid UTF-8", file=file, line=raw[:err.start].count(b"\n") + 1) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        if match := _TOML_AT_LINE.search(message):
            line = int(match[1])
        elif match := _TOML_AT_END.search(message):
            line = text.count("\n") + 1
        else:
            line = None
        if match:
            message = message[:match.start()]
        raise PolicyError(message, file=file, line=line) from None
    return data, Locator(text)


def document_layer(data: dict[str, Any], locator: Locator, file: str) -> tuple[Layer, list[PolicyError]]:
    """Checks a parsed policy file against the schema: its values with origins, and every mistake."""
    layer: Layer = {}
    errors: list[PolicyError] = []
    for table, content in data.items():
        specs = SCHEMA.get(table)
        if specs is None:
            errors.append(_unknown_table(table, content, locator.line(table), file))
            continue
        if not isinstance(content, dict):
            errors.append(PolicyError(f"expected a table, got {describe(content)}",
                                      file=file, line=locator.line(table), field=f"[{table}]"))
            continue
        for key, raw in content.items():
            spec = specs.get(key)
            if spec is None:
                hint = did_you_mean(key, specs) or f" (known: {', '.join(specs)})"
                errors.append(PolicyError(f"unknown field{hint}", file=file, line=locator.line(table, key),
                                          field=f"[{table}].{toml_key(key)}"))
                continue

            def origin_at(index: int | str | None, table: str = table, key: str = key) -> Origin:
                where = (table, key) if index is None else (table, key, index)
                return Origin(file=file, line=locator.line(*where))

            entry, field_errors = check_field(spec, raw, origin_at)
            errors += field_errors
            if entry is not None:
                layer[spec.name] = entry
    errors.sort(key=lambda error: error.line or 0)
    return layer, errors


def _unknown_table(name: str, content: object, line: int | None, file: str) -> PolicyError:
    if not isinstance(content, dict):
        # A key outside any table, e.g. `version = 1` written above [viewbox].
        owners = [spec for spec in FIELDS.values() if spec.key == name]
        hint = f" (did you mean [{owners[0].table}].{name}?)" if owners else ""
        return PolicyError(f"unknown top-level key{hint}", file=file, line=line, field=toml_key(name))
    hint = did_you_mean(name, SCHEMA) or f" (known: {', '.join(SCHEMA)})"
    return PolicyError(f"unknown table{hint}", file=file, line=line, field=f"[{toml_key(name)}]")


# --- writing -----------------------------------------------------------------

def render_policy(policy: Policy) -> str:
    """The effective policy as TOML that loads back to an equal Policy, each value saying where it came from."""
    named = f" {quote(policy.name)}" if policy.name else ""
    lines = [f"# The effective viewbox policy{named}: extends resolved, overrides applied."]
    if policy.sources:
        lines.append(f"# Merged from: {', '.join(policy.sources)}")
    lines += [f"# {file} names no [viewbox].extends, so it extends \"default\" "
              "(with extends = [] it would start from the built-in field defaults)" for file in policy.implicit]
    lines.append('# Each value says where it came from ("default": no policy set it).')
    for table, specs in SCHEMA.items():
        section = getattr(policy, table)
        body: list[str] = []
        subtables: list[str] = []
        if table == "viewbox":
            body.append("extends = []  # standalone: what it extends is merged in below")
        for key, spec in specs.items():
            if spec.attr is None:
                continue
            value = getattr(section, spec.attr)
            if spec.shape is Shape.SCALAR:
                if value is None and policy.origin(spec.name) != DEFAULT_ORIGIN:
                    # a limit set to "unlimited" (over one a policy extended sets)
                    body.append(f"{key} = {quote(UNLIMITED)}{_from(policy.origin(spec.name))}")
                    continue
                if value is None:
                    body.append(f"# {key}: not set: {spec.unset}")
                    continue
                if spec.name == "net.mode" and value == "host":
                    body.append("# UNSAFE: shares the host network")
                body.append(f"{key} = {toml_value(value)}{_from(policy.origin(spec.name))}")
            elif spec.shape is Shape.LIST:
                if not value:
                    body.append(f"{key} = []")
                    continue
                if spec.name == "fs.rules":
                    body.append("# deny, ask and allow of every layer, in the order they apply: "
                                "the last rule matching a path decides")
                body.append(f"{key} = [")
                body += [f"    {toml_value(item)},{_from(policy.origin(spec.name, index))}"
                         for index, item in enumerate(value)]
                body.append("]")
            elif not value:
                body.append(f"{key} = {{}}")
            else:
                subtables += ["", f"[{table}.{key}]"]
                subtables += [f"{toml_key(name)} = {toml_value(item)}{_from(policy.origin(spec.name, name))}"
                              for name, item in value.items()]
        lines += ["", f"[{table}]", *body, *subtables]
    return "\n".join(lines) + "\n"


def _from(origin: Origin) -> str:
    return "  # default" if origin == DEFAULT_ORIGIN else f"  # from {origin}"


def toml_value(value: object) -> str:
    """A value of a policy field in TOML, as `viewbox show` and `viewbox learn` write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, (GlobRule, ListenSocket, PublishedPort, NetAllowRule)):
        return quote(str(value))
    if isinstance(value, TmpfsMount):
        return f"{{ path = {quote(value.path)}, size = {quote(format_size(value.size))} }}"
    raise TypeError(f"no TOML form for {value!r}")
