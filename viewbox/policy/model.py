"""The policy model: typed tables, their schema, and where every value came from.

A Policy is what a policy file says once its extends and the overrides are
merged in and every value is checked — but not yet bound to a run: paths may
still hold placeholders such as {cwd}, which the compiler expands. The schema
(which keys exist, their shape, default and check) is declared once, on the
record fields below, and drives parsing, merging, rendering and messages.
"""
from __future__ import annotations

import datetime
import enum
import os
import re
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from viewbox._record import field, fields, record, replace
from viewbox.errors import PolicyError
from viewbox.plan import Access, RuleAction
from viewbox.views.limits import SYSCALL_GROUPS

SCHEMA_VERSION = 1
#: tmpfs size when none is given: the kernel's default (half of RAM) is too much.
DEFAULT_TMPFS_SIZE = 256 * 2**20
#: layers a policy may accept to run without ([viewbox].accept_degraded)
DEGRADABLE_LAYERS = ("landlock",)
#: placeholders path strings may hold, as {name}
PLACEHOLDERS = ("cwd",)
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel
MAX_RLIMIT = 2**63 - 1
#: [limits].files: the kernel's default fs.nr_open, above which RLIMIT_NOFILE cannot be raised
MAX_FILES = 2**20


# --- origins -----------------------------------------------------------------

@record
class Origin:
    """Where a value came from: a file and line, an override flag, or the built-in default."""

    file: str | None = None
    line: int | None = None
    flag: str | None = None  # "--ro" (CLI) or "api: ro" (Python keyword)
    #: the field as the file wrote it ("[fs].deny[1]"), where the value now sits in another
    #: (path rules, which all land in [fs].rules)
    label: str | None = None

    def __str__(self) -> str:
        if self.flag:
            return self.flag
        if self.file:
            where = f"{self.file}:{self.line}" if self.line else self.file
            return f"{where}: {self.label}" if self.label else where
        return "default"

    def error(self, field_label: str, message: str) -> PolicyError:
        """An error about the value from here; `field_label` ("[fs].ro[2]") names it in files."""
        if self.flag:
            return PolicyError(message, field=self.flag)
        return PolicyError(message, file=self.file, line=self.line, field=field_label)


DEFAULT_ORIGIN = Origin()


class Item(NamedTuple):
    """One checked value and its origin, as the loader carries them before a Policy exists."""

    value: Any
    origin: Origin


# --- messages ----------------------------------------------------------------

def quote(text: str) -> str:
    """`text` as a TOML basic string (also how messages show strings)."""
    # JSON escapes are valid TOML escapes; TOML also forbids a raw DEL.
    import json  # messages and rendering only: not on the run path

    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def describe(value: object) -> str:
    """A value's TOML type and, for scalars, the value: 'string "x"', 'integer 5'."""
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        return f"string {quote(value)}"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, (datetime.date, datetime.time)):
        return f"date-time {value.isoformat()}"
    return type(value).__name__


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean "x"?)' for the closest choice, else ''."""
    import difflib  # only on the error path

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {quote(close[0])}?)" if close else ""


def os_reason(err: OSError) -> str:
    """'no such file or directory': strerror as it reads inside a message."""
    text = os.strerror(err.errno) if err.errno else str(err)
    return text[:1].lower() + text[1:]


# --- paths and placeholders --------------------------------------------------

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def normalize(path: str) -> str:
    """os.path.normpath, also folding the leading '//' POSIX lets it keep."""
    path = os.path.normpath(path)
    return "/" + path.lstrip("/") if path.startswith("//") else path


def expand(template: str, *, cwd: str) -> str:
    """A checked path template with its placeholders filled in, normalised."""
    values = {"cwd": cwd}
    return normalize(_PLACEHOLDER.sub(lambda match: values[match[1]], template))


_GLOB_SPECIAL = re.compile(r"([\\*?\[])")


def expand_glob(template: str, *, cwd: str) -> str:
    """A checked glob with its placeholders filled in, normalised; the values are escaped, so a
    directory named "a[1]" is matched as written."""
    values = {"cwd": _GLOB_SPECIAL.sub(r"\\\1", cwd)}
    return normalize(_PLACEHOLDER.sub(lambda match: values[match[1]], template))


# --- checks: each takes a raw value, returns it typed, or raises FieldError ----

class FieldError(ValueError):
    """A value breaks its field's rule; the caller adds file, line and field name."""


Check = Callable[[Any], Any]


def _expected(what: str, value: object) -> FieldError:
    return FieldError(f"expected {what}, got {describe(value)}")


def check_string(value: object) -> str:
    if not isinstance(value, str):
        raise _expected("a string", value)
    return value


def check_boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _expected("a boolean", value)
    return value


def check_integer(low: int, high: int) -> Check:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _expected("an integer", value)
        if value < low:
            raise FieldError(f"must be at least {low}, got {value}")
        if value > high:
            raise FieldError(f"must be at most {high}, got {value}")
        return value
    return check


def check_version(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expected("an integer", value)
    if value != SCHEMA_VERSION:
        raise FieldError(f"unsupported version {value} (this viewbox reads version {SCHEMA_VERSION})")
    return value


def check_choice(*options: str, noun: str | None = None,
                 planned: Mapping[str, str] = MappingProxyType({})) -> Check:
    """One of `options`; `planned` maps values reserved for later to the message they get."""
    def check(value: object) -> str:
        value = check_string(value)
        if value in options:
            return value
        if value in planned:
            raise FieldError(planned[value])
        hint = did_you_mean(value, options)
        if noun:
            known = hint or f" (known: {', '.join(options)})"
            raise FieldError(f"unknown {noun} {quote(value)}{known}")
        alternatives = " or ".join(quote(option) for option in options)
        raise FieldError(f"expected {alternatives}, got {quote(value)}{hint}")
    return check


def check_path(value: object) -> str:
    """An absolute path, possibly with placeholders; normalised when it has none."""
    if not isinstance(value, str):
        raise _expected("a path string", value)
    if "\0" in value:
        raise FieldError(f"path contains a NUL byte: {quote(value)}")
    _check_placeholders(value)
    if not expand(value, cwd="/").startswith("/"):
        raise FieldError(f"path must be absolute, got {quote(value)}")
    # A template keeps its spelling: normpath("{cwd}/..") would lose the placeholder.
    return value if _PLACEHOLDER.search(value) else normalize(value)


def check_hidden_path(value: object) -> str:
    """An item of [fs].hide: a concrete path below "/" (a pattern is a deny rule's job)."""
    path = check_path(value)
    if path == "/":
        raise FieldError('cannot hide "/": nothing would be left to run; for a view holding only '
                         'some paths, set base = "empty" and list them in ro and rw')
    if re.search(r"[*?\[]", path):
        raise FieldError(f"hide takes concrete paths, got the pattern {quote(path)}: to refuse every path "
                         f'matching it, write deny = [{quote(path)}] (a per-path rule: each path call the '
                         "command makes is then decided by the supervisor, see policies/README.md)")
    return path


def _check_placeholders(value: str) -> None:
    for name in _PLACEHOLDER.findall(value):
        if name not in PLACEHOLDERS:
            known = ", ".join(f"{{{known}}}" for known in PLACEHOLDERS)
            raise FieldError(f"unknown placeholder {{{name}}} in {quote(value)} (known: {known})")


# --- path rules: [fs].deny, ask, allow and rules -------------------------------

#: access words of a rule, as written before its glob ("read,write:/etc/**")
ACCESS_WORDS: Mapping[str, Access] = MappingProxyType(
    {"read": Access.READ, "write": Access.WRITE, "exec": Access.EXEC})
ALL_ACCESS = Access.READ | Access.WRITE | Access.EXEC
#: the rule lists of [fs], in the order they apply within one layer
RULE_ACTIONS: Mapping[str, RuleAction] = MappingProxyType(
    {"deny": RuleAction.DENY, "ask": RuleAction.ASK, "allow": RuleAction.ALLOW})
_ACCESS_PREFIX = re.compile(r"[\w, ]*")


@record
class GlobRule:
    """One per-path rule as a policy holds it (its glob may still hold placeholders).

    str() gives the form [fs].rules reads: "deny:/**/*.pem", "allow:read,exec:/opt/**".
    """

    action: RuleAction
    access: Access
    glob: str  # absolute and normalised, or a template holding placeholders ("{cwd}/**")

    def __str__(self) -> str:
        action = self.action.name.lower()
        if self.access == ALL_ACCESS:
            return f"{action}:{self.glob}"
        words = ",".join(word for word, bit in ACCESS_WORDS.items() if self.access & bit)
        return f"{action}:{words}:{self.glob}"


def parse_glob_rule(value: object, action: RuleAction) -> GlobRule:
    """A rule from "[ACCESS:]GLOB": ACCESS is read, write, exec joined by ","
    (all three when left out); GLOB is absolute or starts with "**/"."""
    if not isinstance(value, str):
        raise _expected('a string "[ACCESS:]GLOB"', value)
    if not value:
        raise FieldError('empty rule (expected "[ACCESS:]GLOB", e.g. "**/*.pem" or "write:/etc/**")')
    if "\0" in value:
        raise FieldError(f"rule contains a NUL byte: {quote(value)}")
    access, glob = ALL_ACCESS, value
    prefix, colon, rest = value.partition(":")
    if colon and _ACCESS_PREFIX.fullmatch(prefix):
        access, glob = Access(0), rest
        for word in prefix.split(","):
            word = word.strip()
            if word not in ACCESS_WORDS:
                hint = did_you_mean(word, ACCESS_WORDS) or ' (access is read, write or exec, joined by ",")'
                raise FieldError(f"unknown access {quote(word)} in {quote(value)}{hint}")
            access |= ACCESS_WORDS[word]
    if not glob:
        raise FieldError(f"empty glob in {quote(value)}")
    _check_placeholders(glob)
    if glob.startswith("**/"):
        glob = "/" + glob
    if not expand(glob, cwd="/").startswith("/"):
        raise FieldError(f'glob must be absolute ("/...") or start with "**/", got {quote(glob)}')
    _check_glob_syntax(glob)
    # A template keeps its spelling: the compiler normalises it once the placeholders are filled in.
    return GlobRule(action, access, glob if _PLACEHOLDER.search(glob) else normalize(glob))


def _check_glob_syntax(glob: str) -> None:
    """The pattern as the C core reads it: '*' '?' '[...]' within a component, '**' only as
    a whole component, '\\' escaping the next character."""
    for part in glob.split("/"):
        if part == "**":
            continue
        index = 0
        while index < len(part):
            char = part[index]
            if char == "\\":
                if index + 1 == len(part):
                    raise FieldError(f'"\\" escapes nothing at the end of {quote(part)} in {quote(glob)}')
                index += 2
            elif char == "[":
                end = index + 1
                if part[end:end + 1] in ("!", "^"):
                    end += 1
                if part[end:end + 1] == "]":  # a "]" first is a member, not the end
                    end += 1
                while end < len(part) and part[end] != "]":
                    end += 2 if part[end] == "\\" else 1
                if end >= len(part):
                    raise FieldError(f'unclosed "[" in {quote(part)} in {quote(glob)} (write "\\[" for a "[")')
                index = end + 1
            elif part.startswith("**", index):
                raise FieldError(f'"**" must be a whole path component ("/a/**/b"), got {quote(part)} '
                                 f"in {quote(glob)}")
            else:
                index += 1


def check_rule(action: RuleAction) -> Check:
    """An item of [fs].deny, ask or allow."""
    return lambda value: parse_glob_rule(value, action)


def check_ordered_rule(value: object) -> GlobRule:
    """An item of [fs].rules: "ACTION:[ACCESS:]GLOB", ACTION deny, ask or allow."""
    if not isinstance(value, str):
        raise _expected('a string "ACTION:[ACCESS:]GLOB"', value)
    action, colon, rule = value.partition(":")
    if not colon or action not in RULE_ACTIONS:
        hint = did_you_mean(action, RULE_ACTIONS) if colon else ""
        raise FieldError(f'expected "ACTION:[ACCESS:]GLOB" with ACTION deny, ask or allow, '
                         f"got {quote(value)}{hint}")
    return parse_glob_rule(rule, RULE_ACTIONS[action])


def check_reference(value: object) -> str:
    """An [viewbox].extends entry: a shipped policy name or a path; resolved by the loader."""
    value = check_string(value)
    if not value or "\0" in value:
        raise FieldError(f"expected a policy name or path, got {quote(value)}")
    return value


def check_degradable_layer(value: object) -> str:
    value = check_string(value)
    if value not in DEGRADABLE_LAYERS:
        allowed = ", ".join(quote(layer) for layer in DEGRADABLE_LAYERS)
        raise FieldError(f"unknown layer {quote(value)} (only {allowed} may be accepted as degraded)")
    return value


_HOSTNAME = re.compile(r"[A-Za-z0-9.-]{1,64}")


def check_hostname(value: object) -> str:
    value = check_string(value)
    if not _HOSTNAME.fullmatch(value):
        raise FieldError(f'invalid hostname {quote(value)} (1 to 64 letters, digits, "." or "-")')
    return value


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_env_name(value: object) -> str:
    value = check_string(value)
    if not _ENV_NAME.fullmatch(value):
        raise FieldError(f"invalid variable name {quote(value)} "
                         "(letters, digits and _, not starting with a digit)")
    return value


def check_env_value(value: object) -> str:
    value = check_string(value)
    if "\0" in value:
        raise FieldError(f"value contains a NUL byte: {quote(value)}")
    return value


_SIZE = re.compile(r"(\d+)([BKMGT])", re.IGNORECASE)
_SIZE_UNITS = {"B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
#: the largest size any field takes: far below what would wrap the kernel's 64-bit counters
MAX_SIZE = 2**50
#: the smallest [limits].memory: room for the sandbox's init and a small command; a size
#: written without its unit ("256") lands below it
MIN_MEMORY = 4 * 2**20
#: the smallest tmpfs or [limits].disk: one page
MIN_DISK = 4 * 2**10


def parse_size(value: object, minimum: int) -> int:
    """Bytes from an integer (bytes) or a string with a unit like "64M" (B, K, M, G, T;
    powers of 1024), from `minimum` to MAX_SIZE."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        size = int(match[1]) * _SIZE_UNITS[match[2].upper()]
    elif isinstance(value, str) and value.strip().isdigit():
        raise FieldError(f"size {quote(value)} has no unit: write {quote(value.strip() + 'M')} for megabytes "
                         "(units B, K, M, G, T)")
    else:
        shown = quote(value) if isinstance(value, str) else describe(value)
        raise FieldError(f"invalid size {shown} (a number with B, K, M, G or T, e.g. \"256M\"; "
                         "or an integer of bytes)")
    if not minimum <= size <= MAX_SIZE:
        raise FieldError(f"size must be from {format_size(minimum)} to {format_size(MAX_SIZE)}, "
                         f"got {format_size(size) if size > 0 else size}")
    return size


class SizeCheck:
    """The check of a size field: parse_size with the field's minimum."""

    def __init__(self, minimum: int) -> None:
        self.minimum = minimum

    def __call__(self, value: object) -> int:
        return parse_size(value, self.minimum)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
#: a duration is kept in whole milliseconds, and as seconds it fits 32 bits
MIN_DURATION = 0.001
MAX_DURATION = float(2**31 - 1)


def check_duration(value: object) -> float:
    """Seconds from a number (seconds) or a string like "2s", "500ms", "10m", "1h30m"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and re.fullmatch(rf"(?:{_DURATION_PART.pattern})+", value):
        seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(value))
    else:
        shown = quote(value) if isinstance(value, str) else describe(value)
        raise FieldError(f"invalid duration {shown} (seconds, or numbers with ms, s, m or h: \"90s\", \"1h30m\")")
    if not MIN_DURATION <= seconds <= MAX_DURATION:
        raise FieldError(f"duration must be from 1ms to {MAX_DURATION:.0f}s, got {value}")
    return seconds


#: cgroup CPU bandwidth is granted per 100 ms period, at least 1 ms of it.
MIN_CPU = 0.01
MAX_CPU = 4096.0


def check_cpu(value: object) -> float:
    """CPU cores as a number (0.5 is half of one core), or such a number in a string ("0.5")."""
    if isinstance(value, str) and re.fullmatch(r"\d+(?:\.\d+)?", value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _expected("a number of CPU cores such as 0.5", value)
    if not MIN_CPU <= value <= MAX_CPU:
        raise FieldError(f"must be between {MIN_CPU} and {MAX_CPU:g} cores, got {value}")
    return float(value)


def format_size(size: int) -> str:
    """The shortest exact spelling parse_size reads back: 268435456 -> "256M"."""
    for unit in "TGMK":
        if size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return f"{size}B"


@record
class TmpfsMount:
    path: str
    size: int = DEFAULT_TMPFS_SIZE  # bytes


def _check_tmpfs_path(value: object) -> str:
    path = check_path(value)
    if path == "/":
        raise FieldError('cannot put a tmpfs on "/": nothing would be left to run; for an empty root, '
                         'set base = "empty"')
    return path


def check_tmpfs(value: object) -> TmpfsMount:
    """A tmpfs item: "PATH", "PATH:SIZE" or { path = "PATH", size = "SIZE" }.

    In the string form a ':' always starts the size; a path holding ':' needs the table form.
    """
    if isinstance(value, str):
        path, colon, size_text = value.rpartition(":")
        if colon:
            return TmpfsMount(_check_tmpfs_path(path), parse_size(size_text, MIN_DISK))
        return TmpfsMount(_check_tmpfs_path(value))
    if isinstance(value, Mapping):
        for key in value:
            if key not in ("path", "size"):
                raise FieldError(f"unknown key {quote(key)} in a tmpfs table (it takes path and size)")
        if "path" not in value:
            raise FieldError("a tmpfs table needs a path")
        size = parse_size(value["size"], MIN_DISK) if "size" in value else DEFAULT_TMPFS_SIZE
        return TmpfsMount(_check_tmpfs_path(value["path"]), size)
    raise _expected('"PATH", "PATH:SIZE" or a table { path, size }', value)


# --- the time view --------------------------------------------------------------

#: the earliest and latest instant [time].start takes (the kernel's signed 64-bit nanoseconds)
MIN_INSTANT = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
MAX_INSTANT = datetime.datetime(2262, 1, 1, tzinfo=datetime.timezone.utc)


def check_instant(value: object) -> str:
    """An instant with its zone: "2009-04-21T12:00:00Z" or a TOML offset date-time; kept in UTC
    as "YYYY-MM-DDTHH:MM:SS[.ffffff]Z"."""
    if isinstance(value, datetime.datetime):
        instant = value
    elif isinstance(value, str):
        try:
            instant = datetime.datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            raise FieldError(f"invalid instant {quote(value)} (expected e.g. \"2009-04-21T12:00:00Z\")") from None
    else:
        raise _expected('an instant such as "2009-04-21T12:00:00Z"', value)
    if instant.tzinfo is None:
        shown = quote(value) if isinstance(value, str) else instant.isoformat()
        raise FieldError(f"instant {shown} has no zone (add Z for UTC, or +HH:MM)")
    if not MIN_INSTANT <= instant < MAX_INSTANT:
        raise FieldError(f"instant must lie between 1970 and 2262, got {instant.isoformat()}")
    text = instant.astimezone(datetime.timezone.utc).replace(tzinfo=None).isoformat()
    return text + "Z"


def instant_ns(text: str) -> int:
    """Nanoseconds since the epoch of an instant check_instant returned."""
    instant = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    delta = instant - MIN_INSTANT
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


_OFFSET_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|y|d|h|m|s)")
#: seconds per unit of [time].offset; a year is the Gregorian mean year
OFFSET_UNITS: Mapping[str, float] = MappingProxyType(
    {"y": 365.2425 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001})


def check_offset(value: object) -> str:
    """A signed offset such as "-17y", "+3d4h", "-1d", "90s" (units y d h m s ms); kept as written."""
    if not isinstance(value, str):
        raise _expected('an offset such as "-1d" or "+3d4h"', value)
    body = value[1:] if value[:1] in "+-" else value
    if not body or not re.fullmatch(rf"(?:{_OFFSET_PART.pattern})+", body):
        raise FieldError(f"invalid offset {quote(value)} (a sign and numbers with y, d, h, m, s or ms: "
                         "\"-17y\", \"+3d4h\")")
    if abs(offset_ns(value)) >= 2**62:
        raise FieldError(f"offset {quote(value)} is too large")
    return value


def offset_ns(text: str) -> int:
    """Nanoseconds of an offset check_offset accepted."""
    sign = -1 if text.startswith("-") else 1
    seconds = sum(float(n) * OFFSET_UNITS[unit] for n, unit in _OFFSET_PART.findall(text.lstrip("+-")))
    return sign * round(seconds * 1e9)


#: [time].rate bounds: virtual seconds per real second
MIN_RATE = 0.001
MAX_RATE = 1000.0


def check_rate(value: object) -> float:
    """A positive number of virtual seconds per real second."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _expected("a number such as 2.0", value)
    if not MIN_RATE <= value <= MAX_RATE:
        raise FieldError(f"must be between {MIN_RATE} and {MAX_RATE:g}, got {value}")
    return float(value)


# --- the schema --------------------------------------------------------------

class Shape(enum.Enum):
    SCALAR = "scalar"   # later layers replace it
    LIST = "list"       # later layers append, duplicates dropped
    TABLE = "table"     # later layers merge key by key


@record
class FieldSpec:
    """One key of the policy schema: its shape, check, and names."""

    shape: Shape
    check: Check                       # one value, list item, or table value
    key_check: Check | None = None     # TABLE: the keys
    #: LIST: items with equal identity are one item; a later one replaces an earlier (tmpfs by path)
    identity: Callable[[Any], Any] | None = None
    #: LIST: the order is the meaning (path rules: the last match wins), so an item given
    #: again moves to its later place instead of being dropped
    ordered: bool = False
    #: SCALAR defaulting to None: what an unset value means (it depends on the run)
    unset: str | None = None
    table: str = ""
    key: str = ""                      # as written in TOML
    attr: str | None = None            # on the table record; None: consumed by the loader

    @property
    def name(self) -> str:
        """'fs.ro': how origins and the loader refer to the field."""
        return f"{self.table}.{self.key}"

    def label(self, index: int | str | None = None) -> str:
        """How messages name the field or one of its items: '[fs].ro[2]', '[env].set.HOME'."""
        base = f"[{self.table}].{self.key}"
        if isinstance(index, int):
            return f"{base}[{index}]"
        if isinstance(index, str):
            return f"{base}.{toml_key(index)}"
        return base


_SPEC = "viewbox.policy.spec"


def _scalar(default: Any, check: Check, *, unset: str | None = None) -> Any:
    return field(default=default, metadata={_SPEC: FieldSpec(Shape.SCALAR, check, unset=unset)})


def _list(check: Check, *, identity: Callable[[Any], Any] | None = None, key: str = "",
          ordered: bool = False) -> Any:
    spec = FieldSpec(Shape.LIST, check, identity=identity, key=key, ordered=ordered)
    return field(default=(), metadata={_SPEC: spec})


def _table(key_check: Check, value_check: Check) -> Any:
    spec = FieldSpec(Shape.TABLE, value_check, key_check=key_check)
    return field(default_factory=lambda: MappingProxyType({}), metadata={_SPEC: spec})


@record
class ViewboxTable:
    """[viewbox]: about the policy itself ([viewbox].extends is resolved by the loader)."""

    version: int = _scalar(SCHEMA_VERSION, check_version)
    description: str = _scalar("", check_string)
    accept_degraded: tuple[str, ...] = _list(check_degradable_layer)


@record
class FsTable:
    """[fs]: the filesystem view."""

    base: str = _scalar("host", check_choice("host", "empty"))
    ro: tuple[str, ...] = _list(check_path)
    rw: tuple[str, ...] = _list(check_path)
    hide: tuple[str, ...] = _list(check_hidden_path)
    #: paths of ro/rw that may be absent on a host (skipped there instead of an error)
    optional: tuple[str, ...] = _list(check_path)
    tmpfs: tuple[TmpfsMount, ...] = _list(check_tmpfs, identity=lambda mount: mount.path)
    proc: bool = _scalar(True, check_boolean)
    dev: bool = _scalar(True, check_boolean)
    #: per-path rules in the order they apply, the last match deciding: every layer's
    #: deny, then ask, then allow entries (the loader folds them in), then its own rules
    rules: tuple[GlobRule, ...] = _list(check_ordered_rule, ordered=True)


# --- [net]: listen and publish ------------------------------------------------

_SOCKET_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}")


def _check_port(text: str, what: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise FieldError(f"{what} must be a number from 1 to 65535, got {quote(text)}")
    return int(text)


def _check_ip(text: str, what: str) -> str:
    """An IPv4 address, or an IPv6 one in brackets ("[::1]"); returned without brackets."""
    import ipaddress  # only while checking a policy with [net] sockets

    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        raise FieldError(f"{what} must be an IP address (\"0.0.0.0\", \"127.0.0.1\", \"[::1]\"), "
                         f"got {quote(text)}") from None
    if address.version == 6 and bare == text:
        raise FieldError(f"write an IPv6 {what} in brackets: \"[{bare}]\"")
    return str(address)


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@record
class ListenSocket:
    """An item of [net].listen: a socket viewbox binds on the host and passes in (LISTEN_FDS).

    str() gives the form the policy reads: "web=tcp:0.0.0.0:8080", "app=unix:/run/app.sock".
    """

    name: str           # its LISTEN_FDNAMES entry
    kind: str           # "tcp" or "unix"
    host: str = ""      # tcp: the address bound
    port: int = 0       # tcp: the port bound
    path: str = ""      # unix: the socket file's path on the host (may hold placeholders)

    def __str__(self) -> str:
        where = f"{_host_text(self.host)}:{self.port}" if self.kind == "tcp" else self.path
        return f"{self.name}={self.kind}:{where}"


def check_listen(value: object) -> ListenSocket:
    """An item of [net].listen: "[NAME=]tcp:ADDRESS:PORT", "[NAME=]tcp:PORT" (every IPv4
    address) or "[NAME=]unix:PATH"."""
    if not isinstance(value, str):
        raise _expected('a string "[NAME=]tcp:ADDRESS:PORT" or "[NAME=]unix:PATH"', value)
    name, equals, spec = value.partition("=")
    if not equals:
        name, spec = "", value
    elif not _SOCKET_NAME.fullmatch(name):
        raise FieldError(f"invalid socket name {quote(name)} in {quote(value)} "
                         '(1 to 255 letters, digits, "_", "." or "-")')
    kind, colon, where = spec.partition(":")
    if kind == "unix" and colon:
        path = check_path(where)
        if len(os.fsencode(path)) > 107:
            raise FieldError(f"a unix socket path holds at most 107 bytes, got {quote(path)}")
        default = "unix-" + re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(path) or "socket")
        return ListenSocket(name or default[:255], "unix", path=path)
    if kind == "tcp" and colon:
        host, colon, port = where.rpartition(":")
        ip = _check_ip(host, "address") if colon else "0.0.0.0"
        number = _check_port(port, "port")
        return ListenSocket(name or f"tcp-{number}", "tcp", host=ip, port=number)
    raise FieldError(f'expected "[NAME=]tcp:ADDRESS:PORT" or "[NAME=]unix:PATH", got {quote(value)}')


@record
class PublishedPort:
    """An item of [net].publish: the host's ADDRESS:HOST_PORT forwarded to 127.0.0.1:PORT inside.

    str() gives the form the policy reads: "0.0.0.0:8080:80".
    """

    host: str
    host_port: int
    port: int

    def __str__(self) -> str:
        return f"{_host_text(self.host)}:{self.host_port}:{self.port}"


def check_publish(value: object) -> PublishedPort:
    """An item of [net].publish: "[ADDRESS:]HOST_PORT:PORT", ADDRESS 0.0.0.0 when left out."""
    if not isinstance(value, str):
        raise _expected('a string "[ADDRESS:]HOST_PORT:PORT"', value)
    text = value
    rest, colon, port = text.rpartition(":")
    if not colon:
        raise FieldError(f'expected "[ADDRESS:]HOST_PORT:PORT" (e.g. "8080:80"), got {quote(text)}')
    host, colon, host_port = rest.rpartition(":")
    ip = _check_ip(host, "address") if colon else "0.0.0.0"
    return PublishedPort(ip, _check_port(host_port, "host port"), _check_port(port, "port"))


@record
class NetAllowRule:
    """An item of [net].allow: destinations the sandbox may connect to, by address or by name.

    str() gives the form the policy reads: "10.1.2.0/24:5432", "[::1]:8080", "127.0.0.1:8000-8099",
    "pypi.org:443", "*.example.com:443", "*:443" (any name: what it resolves to, on that port).
    """

    network: str        # "10.1.2.0/24", "::1/128"; "" for a name
    port_min: int
    port_max: int
    name: str = ""      # "pypi.org", "*.example.com", "*" (lower case): its addresses, once resolved

    def __str__(self) -> str:
        import ipaddress

        if self.name:
            host = self.name
        else:
            net = ipaddress.ip_network(self.network)
            host = str(net.network_address) if net.prefixlen == net.max_prefixlen else self.network
            if net.version == 6:
                host = f"[{host}]"
        if (self.port_min, self.port_max) == (1, 65535):
            ports = "*"
        elif self.port_min == self.port_max:
            ports = str(self.port_min)
        else:
            ports = f"{self.port_min}-{self.port_max}"
        return f"{host}:{ports}"


_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def _check_domain(text: str) -> str:
    """A domain name of [net].allow, "*." and one, or "*" (any name): lower case, without the
    final dot."""
    if text == "*":
        return text
    name = text.lower().removesuffix(".")
    labels = name.split(".")
    wildcard = labels[0] == "*"
    if wildcard:
        labels = labels[1:]
    if "*" in name[1:] or not labels or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise FieldError(f"invalid domain name {quote(text)}: labels of letters, digits and \"-\", "
                         'joined by "."; a "*." in front stands for any subdomain, "*" alone for any name')
    if wildcard and len(labels) < 2:
        raise FieldError(f"{quote(text)} is too wide: a wildcard needs a domain of two labels or more "
                         '("*.example.com")')
    return name


def check_net_allow(value: object) -> NetAllowRule:
    """An item of [net].allow: "ADDRESS[/PREFIX]:PORTS" (IPv6 in brackets) or "NAME:PORTS"
    ("pypi.org:443", "*.example.com:443"); PORTS a port, "LOW-HIGH" or "*"."""
    import ipaddress

    if not isinstance(value, str):
        raise _expected('a string "ADDRESS[/PREFIX]:PORT" or "NAME:PORT"', value)
    host, colon, ports = value.rpartition(":")
    if not colon or not host:
        raise FieldError(f'expected "ADDRESS[/PREFIX]:PORT" or "NAME:PORT" (e.g. "10.1.2.0/24:5432", '
                         f'"pypi.org:443"), got {quote(value)}')
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare == host and ":" in host:
        raise FieldError(f"write an IPv6 address in brackets: \"[{host}]:{ports}\"")
    name = ""
    network = None
    try:
        network = ipaddress.ip_network(bare, strict=True)
    except ValueError as err:
        if bare != host or "/" in bare or not re.search(r"[A-Za-z*]", bare) or re.fullmatch(r"[0-9.]+", bare):
            raise FieldError(f"invalid address {quote(bare)} in {quote(value)}: {err}") from None
        name = _check_domain(bare)
    if network is not None and network.version == 6 and bare == host:
        raise FieldError(f"write an IPv6 address in brackets: \"[{bare}]:{ports}\"")
    if ports == "*":
        low, high = 1, 65535
    else:
        first, dash, last = ports.partition("-")
        low = _check_port(first, "port")
        high = _check_port(last, "port") if dash else low
        if high < low:
            raise FieldError(f"port range {quote(ports)} ends before it starts")
    return NetAllowRule(str(network) if network is not None else "", low, high, name)


def check_dns_server(value: object) -> str:
    """An item of [net].dns: "ADDRESS" or "ADDRESS:PORT" ("[ADDRESS]:PORT" for IPv6), normalised
    to "ADDRESS:PORT" / "[ADDRESS]:PORT"."""
    import ipaddress

    if not isinstance(value, str):
        raise _expected('a string "ADDRESS[:PORT]"', value)
    host, port = value, "53"
    if value.startswith("["):
        inner, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise FieldError(f'expected "[IPV6]:PORT", got {quote(value)}')
        host, port = inner, rest[1:] or "53"
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise FieldError(f"a DNS server is an address (\"10.0.0.53\", \"127.0.0.1:5353\"), got {quote(value)}") from None
    number = _check_port(port, "port")
    return f"[{address}]:{number}" if address.version == 6 else f"{address}:{number}"


#: [net].mode values
NET_MODES = ("none", "private", "host")


@record
class NetTable:
    """[net]: the network view."""

    mode: str = _scalar("none", check_choice(*NET_MODES))
    #: sockets bound on the host and passed in, systemd's way (LISTEN_FDS), in this order from fd 3
    listen: tuple[ListenSocket, ...] = _list(
        check_listen, identity=lambda sock: (sock.kind, sock.host, sock.port, sock.path))
    #: host ports forwarded to ports inside (needs the sandbox's own network: mode "none")
    publish: tuple[PublishedPort, ...] = _list(
        check_publish, identity=lambda port: (port.host, port.host_port))
    #: destinations outside that the sandbox may connect to (mode "none"): the supervisor connects;
    #: names are resolved by viewbox, and only they resolve inside
    allow: tuple[NetAllowRule, ...] = _list(check_net_allow)
    #: where viewbox resolves [net].allow's names: DNS servers ("ADDRESS[:PORT]"), asked in turn
    #: (none: the host's resolver, as getaddrinfo: /etc/hosts, then DNS)
    dns: tuple[str, ...] = _list(check_dns_server)


@record
class IdentityTable:
    """[identity]: who the sandbox is."""

    uid: int | None = _scalar(None, check_integer(0, MAX_ID), unset="the caller's uid")
    gid: int | None = _scalar(None, check_integer(0, MAX_ID), unset="the caller's gid")
    hostname: str = _scalar("viewbox", check_hostname)
    home: str = _scalar("/tmp", check_path)


@record
class ProcessTable:
    """[process]: how the command starts."""

    workdir: str | None = _scalar(None, check_path, unset=(
        '"{cwd}" when the caller\'s directory is visible in the view, else "/"'))


@record
class EnvTable:
    """[env]: the command's environment (which starts clean)."""

    pass_: tuple[str, ...] = _list(check_env_name, key="pass")
    set: Mapping[str, str] = _table(check_env_name, check_env_value)


#: what [limits].memory, cpu, pids and wall say to hold no limit, also undoing one a policy extended
#: (default's) sets: TOML has no null, and an API keyword of None means "not given"
UNLIMITED = "unlimited"


class OrUnlimited:
    """The check of a limit that may be lifted: `check`, or UNLIMITED for no limit (None)."""

    def __init__(self, check: Check) -> None:
        self.check = check

    def __call__(self, value: object) -> Any:
        if value == UNLIMITED:
            return None
        try:
            return self.check(value)
        except FieldError as err:
            if not isinstance(value, str):
                raise
            raise FieldError(f'{err}; "{UNLIMITED}" sets no limit') from None


#: [limits].require: the weakest enforcement level a policy accepts (viewbox.quota.LEVELS)
QUOTA_REQUIREMENTS = ("rlimit", "cgroup")
#: the sandbox's init and the command count against [limits].pids
MIN_PIDS = 2


@record
class LimitsTable:
    """[limits]: resource limits (enforced by viewbox.quota) and rlimits."""

    memory: int | None = _scalar(None, OrUnlimited(SizeCheck(MIN_MEMORY)), unset="no limit")
    cpu: float | None = _scalar(None, OrUnlimited(check_cpu), unset="no limit")
    pids: int | None = _scalar(None, OrUnlimited(check_integer(MIN_PIDS, 2**22)), unset="no limit")
    wall: float | None = _scalar(None, OrUnlimited(check_duration), unset="no limit")
    disk: int | None = _scalar(None, SizeCheck(MIN_DISK), unset="each tmpfs has the size [fs].tmpfs gives it")
    files: int = _scalar(1024, check_integer(16, MAX_FILES))
    core: int = _scalar(0, check_integer(0, MAX_RLIMIT))
    require: str = _scalar("rlimit", check_choice(*QUOTA_REQUIREMENTS))


@record
class SeccompTable:
    """[seccomp]: syscall groups let through (all are denied by default)."""

    allow: tuple[str, ...] = _list(check_choice(*SYSCALL_GROUPS, noun="syscall group"))


#: [time].file_times: whose clock a file's times are on, as the sandbox reads and sets them
FILE_TIMES = ("host", "sandbox")


@record
class TimeTable:
    """[time]: the sandbox's own clock (viewbox.views.time)."""

    start: str | None = _scalar(None, check_instant, unset="the host's time (plus offset)")
    offset: str | None = _scalar(None, check_offset, unset="none")
    rate: float = _scalar(1.0, check_rate)
    frozen: bool = _scalar(False, check_boolean)
    strict: bool = _scalar(False, check_boolean)
    file_times: str | None = _scalar(None, check_choice(*FILE_TIMES, noun="file_times"),
                                     unset='"sandbox" with path rules (the supervisor answers stat then), '
                                           'else "host"')

    @property
    def active(self) -> bool:
        """Whether the sandbox gets a clock of its own at all."""
        return (self.start is not None or self.offset is not None or self.rate != 1.0
                or self.frozen or self.strict)


OriginKey = tuple[str, int | str | None]


@record
class Policy:
    """A merged, validated policy; `origins`, `name`, `sources` and `implicit` do not take part in equality."""

    viewbox: ViewboxTable = field(default_factory=ViewboxTable)
    fs: FsTable = field(default_factory=FsTable)
    net: NetTable = field(default_factory=NetTable)
    identity: IdentityTable = field(default_factory=IdentityTable)
    process: ProcessTable = field(default_factory=ProcessTable)
    env: EnvTable = field(default_factory=EnvTable)
    limits: LimitsTable = field(default_factory=LimitsTable)
    seccomp: SeccompTable = field(default_factory=SeccompTable)
    time: TimeTable = field(default_factory=TimeTable)
    #: (field name, list index or table key or None) -> where that value came from
    origins: Mapping[OriginKey, Origin] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False)
    #: what it was loaded as: a shipped policy's name or the file's path
    name: str = field(default="", compare=False)
    #: policy files merged into this one, in the order they were applied
    sources: tuple[str, ...] = field(default=(), compare=False)
    #: files among `sources` that name no [viewbox].extends, and so extend "default"
    implicit: tuple[str, ...] = field(default=(), compare=False)

    def origin(self, name: str, index: int | str | None = None) -> Origin:
        """Where a value came from: origin("fs.ro", 2), origin("limits.files")."""
        return self.origins.get((name, index), DEFAULT_ORIGIN)

    def label(self, name: str, index: int | str | None = None) -> str:
        """How an error names a value: as its file wrote it ("[fs].hide[0]" for the first item
        a file gave, wherever the merge put it)."""
        origin = self.origin(name, index)
        if origin.label:
            return origin.label
        if isinstance(index, int) and origin.file:
            index = sum(1 for earlier in range(index) if self.origin(name, earlier).file == origin.file)
        return FIELDS[name].label(index)


TABLES: Mapping[str, type] = MappingProxyType({
    "viewbox": ViewboxTable,
    "fs": FsTable,
    "net": NetTable,
    "identity": IdentityTable,
    "process": ProcessTable,
    "env": EnvTable,
    "limits": LimitsTable,
    "seccomp": SeccompTable,
    "time": TimeTable,
})

EXTENDS = FieldSpec(Shape.LIST, check_reference, table="viewbox", key="extends")
#: [fs].deny, ask, allow: folded by the loader into [fs].rules, in this order within a layer
RULE_LISTS = tuple(FieldSpec(Shape.LIST, check_rule(action), table="fs", key=key)
                   for key, action in RULE_ACTIONS.items())
#: fields without an attribute of their own: the loader consumes them
_LOADER_FIELDS = (EXTENDS, *RULE_LISTS)


def _table_schema(table: str, cls: type) -> dict[str, FieldSpec]:
    specs = {}
    for table_field in fields(cls):
        spec = table_field.metadata[_SPEC]
        key = spec.key or table_field.name
        specs[key] = replace(spec, table=table, key=key, attr=table_field.name)
    specs.update({spec.key: spec for spec in _LOADER_FIELDS if spec.table == table})
    return specs


#: table -> key -> FieldSpec: every key a policy file may hold
SCHEMA: Mapping[str, Mapping[str, FieldSpec]] = MappingProxyType(
    {table: _table_schema(table, cls) for table, cls in TABLES.items()})
#: "fs.ro" -> FieldSpec
FIELDS: Mapping[str, FieldSpec] = MappingProxyType(
    {spec.name: spec for specs in SCHEMA.values() for spec in specs.values()})


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else quote(key)


# --- checking one field's raw value ------------------------------------------

#: A field's checked value as the loader holds it: Item (SCALAR), list[Item] (LIST), dict[str, Item] (TABLE)
Entry = Any
#: field name ("fs.ro") -> Entry: one policy file, an override set, or a merge of them
Layer = dict[str, Entry]


def check_field(spec: FieldSpec, raw: object,
                origin_at: Callable[[int | str | None], Origin]) -> tuple[Entry | None, list[PolicyError]]:
    """Checks a field's raw value; returns what passed and an error per value that did not.

    `origin_at(index)` says where the field (None) or one of its items or keys came from.
    """
    errors: list[PolicyError] = []
    failed = object()

    def run(check: Check, value: object, index: int | str | None) -> Any:
        try:
            return check(value)
        except FieldError as err:
            errors.append(origin_at(index).error(spec.label(index), str(err)))
            return failed

    if spec.shape is Shape.SCALAR:
        value = run(spec.check, raw, None)
        return (None if value is failed else Item(value, origin_at(None))), errors
    if spec.shape is Shape.LIST:
        if not isinstance(raw, (list, tuple)):
            return None, [origin_at(None).error(spec.label(), f"expected an array, got {describe(raw)}")]
        items = [Item(value, origin_at(index)) for index, item in enumerate(raw)
                 if (value := run(spec.check, item, index)) is not failed]
        return items, errors
    if not isinstance(raw, Mapping):
        return None, [origin_at(None).error(spec.label(), f"expected a table, got {describe(raw)}")]
    assert spec.key_check is not None
    table = {}
    for key, item in raw.items():
        if run(spec.key_check, key, key) is not failed:
            value = run(spec.check, item, key)
            if value is not failed:
                table[key] = Item(value, origin_at(key))
    return table, errors
