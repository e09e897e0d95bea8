"""Loading a policy: resolving names and extends, merging layers, applying overrides.

A policy is built from layers, each a set of checked values with origins:
the files of its extends chain (depth first, in order), the file itself, then
the overrides (CLI flags or API keywords). A policy file that names no
[viewbox].extends extends "default" (shipped policies excepted: they say
what they extend); `extends = []` starts from the built-in field defaults
instead. Merging a later layer onto an
earlier one: scalars are replaced, lists append (duplicates dropped, the
first kept), tables merge key by key. Path rules are one ordered list,
[fs].rules: each layer's deny, then ask, then allow entries, then its own
rules, appended; a rule given again moves to its later place, as the last
matching rule is the one that decides.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pathlib

from viewbox._record import replace
from viewbox.errors import PolicyError, PolicyErrors
from viewbox.policy.model import (
    EXTENDS, FIELDS, RULE_LISTS, SCHEMA, TABLES, Entry, Item, Layer, Origin, OriginKey, Policy,
    Shape, check_field, os_reason, quote,
)
from viewbox.policy.parser import document_layer, parse_document

PolicyRef = str | os.PathLike[str]


def _policies_dir() -> str:
    # Plain files next to the package, found with os.path: importlib.resources
    # or pathlib would cost more start-up time than the whole spawn.
    try:
        import viewbox.policies

        return os.path.dirname(os.path.abspath(viewbox.policies.__file__))
    except ModuleNotFoundError:
        # Running from a source tree that is not installed: policies/ sits next to viewbox/.
        return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            "policies")


_POLICIES_DIR = _policies_dir()

#: names of the policies shipped with viewbox
SHIPPED: tuple[str, ...] = tuple(sorted(name[:-len(".toml")] for name in os.listdir(_POLICIES_DIR)
                                        if name.endswith(".toml")))


def _no_such_policy(name: str) -> str:
    return f"no shipped policy or file named {quote(name)} (shipped: {', '.join(SHIPPED)})"


def shipped_path(name: str) -> pathlib.Path:
    """The file of the shipped policy `name` ("default", "strict", ...)."""
    import pathlib

    return pathlib.Path(_shipped_file(name))


def _shipped_file(name: str) -> str:
    if name not in SHIPPED:
        raise PolicyError(_no_such_policy(name))
    return os.path.join(_POLICIES_DIR, f"{name}.toml")


# --- overrides ---------------------------------------------------------------

#: override key -> the field it sets
OVERRIDES: Mapping[str, str] = MappingProxyType({
    "ro": "fs.ro",
    "rw": "fs.rw",
    "hide": "fs.hide",
    "tmpfs": "fs.tmpfs",
    "deny": "fs.deny",
    "ask": "fs.ask",
    "allow": "fs.allow",
    "workdir": "process.workdir",
    "hostname": "identity.hostname",
    "uid": "identity.uid",
    "gid": "identity.gid",
    "net": "net.mode",
    "listen": "net.listen",
    "publish": "net.publish",
    "allow_net": "net.allow",
    "dns": "net.dns",
    "env": "env.set",
    "memory": "limits.memory",
    "cpus": "limits.cpu",
    "pids": "limits.pids",
    "timeout": "limits.wall",
    "disk": "limits.disk",
    "time_start": "time.start",
    "time_offset": "time.offset",
    "time_rate": "time.rate",
    "time_frozen": "time.frozen",
})


def _override_layer(overrides: Mapping[str, Any],
                    style: Literal["api", "cli"]) -> tuple[Layer, list[PolicyError]]:
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise TypeError(f"unknown policy override {unknown[0]!r} (known: {', '.join(OVERRIDES)})")
    layer: Layer = {}
    errors: list[PolicyError] = []
    for key, value in overrides.items():
        if value is None:  # "not given", so callers can pass every keyword through
            continue
        origin = Origin(flag=f"--{key.replace('_', '-')}" if style == "cli" else f"api: {key}")
        entry, field_errors = check_field(FIELDS[OVERRIDES[key]], value, lambda _index: origin)
        errors += field_errors
        if entry is not None:
            layer[OVERRIDES[key]] = entry
    return fold_rules(layer), errors


# --- merging -----------------------------------------------------------------

RULES = "fs.rules"


def fold_rules(layer: Layer) -> Layer:
    """`layer` with its [fs].deny, ask and allow entries moved, in that order, into its
    [fs].rules, ahead of the rules it has there: the one sequence in which its rules apply.
    File values keep, in their origin, the field they were written in ("[fs].deny[1]")."""
    items: list[Item] = []
    for spec in (*RULE_LISTS, FIELDS[RULES]):
        for index, item in enumerate(layer.pop(spec.name, [])):
            origin = item.origin if item.origin.flag else replace(item.origin, label=spec.label(index))
            items.append(Item(item.value, origin))
    if items:
        layer[RULES] = _merge_ordered([], items)
    return layer


def merge(base: Layer, top: Layer) -> Layer:
    """`top` applied onto `base` (neither changes)."""
    merged = dict(base)
    for name, entry in top.items():
        spec = FIELDS[name]
        if spec.shape is Shape.SCALAR:
            merged[name] = entry
        elif spec.shape is Shape.LIST and spec.ordered:
            merged[name] = _merge_ordered(merged.get(name, []), entry)
        elif spec.shape is Shape.LIST:
            merged[name] = _merge_items(merged.get(name, []), entry, spec.identity)
        else:
            merged[name] = {**merged.get(name, {}), **entry}
    return merged


def _merge_ordered(base: list[Item], top: list[Item]) -> list[Item]:
    """`top` appended to `base`; an item given again keeps only its last place (where the last
    matching rule decides, the earlier copy could never decide anything)."""
    items = base + top
    last = {item.value: index for index, item in enumerate(items)}
    return [item for index, item in enumerate(items) if last[item.value] == index]


def _merge_items(base: list[Item], top: list[Item], identity: Callable[[Any], Any] | None) -> list[Item]:
    items = list(base)
    position = {_identify(identity, item.value): index for index, item in enumerate(items)}
    for item in top:
        key = _identify(identity, item.value)
        if key not in position:
            position[key] = len(items)
            items.append(item)
        elif items[position[key]].value != item.value:
            # Same identity, new value (a tmpfs given a new size): the later layer wins, in place.
            items[position[key]] = item
    return items


def _identify(identity: Callable[[Any], Any] | None, value: Any) -> Any:
    return value if identity is None else identity(value)


def _build_policy(layer: Layer, name: str, sources: list[str], implicit: list[str]) -> Policy:
    origins: dict[OriginKey, Origin] = {}
    tables = {}
    for table, specs in SCHEMA.items():
        values: dict[str, Any] = {}
        for spec in specs.values():
            entry: Entry = layer.get(spec.name)
            if spec.attr is None or entry is None:
                continue
            if spec.shape is Shape.SCALAR:
                values[spec.attr] = entry.value
                origins[(spec.name, None)] = entry.origin
            elif spec.shape is Shape.LIST:
                values[spec.attr] = tuple(item.value for item in entry)
                origins.update({(spec.name, index): item.origin for index, item in enumerate(entry)})
            else:
                values[spec.attr] = MappingProxyType({key: item.value for key, item in entry.items()})
                origins.update({(spec.name, key): item.origin for key, item in entry.items()})
        tables[table] = TABLES[table](**values)
    return Policy(**tables, origins=MappingProxyType(origins), name=name, sources=tuple(sources),
                  implicit=tuple(implicit))


# --- files and extends -------------------------------------------------------

class _Loader:
    """One load: the errors found so far, the files applied so far."""

    def __init__(self) -> None:
        self.errors: list[PolicyError] = []
        self.sources: list[str] = []
        self.implicit: list[str] = []

    def load(self, file: str, chain: tuple[tuple[str, str], ...] = (),
             referrer: tuple[Origin, str] | None = None) -> Layer:
        """The layer of `file` with its extends merged under it.

        `chain` holds (file, real path) of the files extending this one, for cycles;
        `referrer` is the extends entry (origin, label) that named it.
        """
        try:
            with open(file, "rb") as f:
                raw = f.read()
        except OSError as err:
            if referrer is None:
                self.errors.append(PolicyError(f"cannot read: {os_reason(err)}", file=file))
            else:
                origin, label = referrer
                self.errors.append(origin.error(label, f"cannot read {quote(file)}: {os_reason(err)}"))
            return {}
        try:
            data, locator = parse_document(raw, file)
        except PolicyError as err:
            self.errors.append(err)
            return {}
        layer, errors = document_layer(data, locator, file)
        layer = fold_rules(layer)
        self.errors += errors

        chain += ((file, os.path.realpath(file)),)
        merged: Layer = {}
        references = layer.pop(EXTENDS.name, None)
        if references is None and not _is_shipped(file):
            # A file naming no parent starts from "default", not from a view showing the host's
            # /home, /root and /tmp; `extends = []` says that is meant.
            references = [Item("default", Origin(file=file, label="implicit [viewbox].extends"))]
            self.implicit.append(file)
        for index, reference in enumerate(references or []):
            label = EXTENDS.label(index)
            parent = self._resolve_extends(reference.value, file, reference.origin, label)
            if parent is None:
                continue
            reals = [real for _, real in chain]
            if os.path.realpath(parent) in reals:
                cycle = [name for name, _ in chain[reals.index(os.path.realpath(parent)):]] + [parent]
                self.errors.append(reference.origin.error(label, f"extends cycle: {' -> '.join(cycle)}"))
                continue
            merged = merge(merged, self.load(parent, chain, (reference.origin, label)))
        self.sources.append(file)
        return merge(merged, layer)

    def _resolve_extends(self, reference: str, file: str, origin: Origin, label: str) -> str | None:
        """The file an extends entry names: a path relative to `file`'s directory, or a shipped policy."""
        relative = os.path.normpath(os.path.join(os.path.dirname(file), reference))
        if "/" in reference or reference.endswith(".toml"):
            return relative
        if reference in SHIPPED:
            return _shipped_file(reference)
        if os.path.isfile(relative):
            return relative
        self.errors.append(origin.error(label, _no_such_policy(reference)))
        return None


def _is_shipped(file: str) -> bool:
    directory, name = os.path.split(os.path.realpath(file))
    return directory == os.path.realpath(_POLICIES_DIR) and name[:-len(".toml")] in SHIPPED


def _policy_file(ref: PolicyRef | None) -> tuple[str, str]:
    """The name and the file of the policy `ref` names (see load_policy)."""
    if ref is None:
        ref = "default"
    if not isinstance(ref, str):
        return os.fspath(ref), os.fspath(ref)
    if "/" not in ref and not ref.endswith(".toml"):
        if ref in SHIPPED:
            return ref, _shipped_file(ref)
        if not os.path.isfile(ref):
            raise PolicyErrors([PolicyError(_no_such_policy(ref))])
    return ref, ref


def _load(name: str, file: str, overrides: Mapping[str, Any] | None,
          style: Literal["api", "cli"], *, host_facts: bool = False) -> Policy:
    """The policy, or PolicyErrors with every mistake of every stage at once: the files'
    syntax and fields, the overrides, then what the values say together (checked on the
    values that passed); with `host_facts`, also what this host already shows wrong."""
    from viewbox.policy.compiler import validate
    from viewbox.views import fs

    override_layer, override_errors = _override_layer(overrides or {}, style)
    loader = _Loader()
    layer = loader.load(file)
    policy = _build_policy(merge(layer, override_layer), name, loader.sources, loader.implicit)
    errors = loader.errors + override_errors + validate(policy)
    if host_facts:
        errors += fs.missing_sources(policy)
    if errors:
        raise PolicyErrors(errors)
    return policy


def load_policy(ref: PolicyRef | None = None, *, overrides: Mapping[str, Any] | None = None,
                override_origin: Literal["api", "cli"] = "api") -> Policy:
    """Loads a policy: its extends, then the file, then `overrides`, merged and checked.

    `ref` is a shipped policy name ("default" when None) or a path: a path when it is
    os.PathLike, contains "/" or ends in ".toml", or when no shipped policy has that
    name but a file does. `overrides` keys: ro, rw, hide, tmpfs, deny, ask, allow (lists of
    str; deny, ask and allow take "[ACCESS:]GLOB" path rules), workdir, hostname, net (str),
    listen, publish, allow_net, dns (lists of str: [net]), uid, gid (int), env (dict added
    to [env].set), memory, disk (size),
    cpus (cores), pids (int), timeout (duration: [limits].wall) (those four also
    "unlimited"), time_start (instant),
    time_offset ("-1d"), time_rate (float), time_frozen (bool): [time]; None values are
    skipped; an unknown key raises TypeError. `override_origin="cli"` names their origins
    "--ro" etc., else "api: ro". Raises PolicyErrors listing every mistake found.
    """
    if override_origin not in ("api", "cli"):
        raise ValueError(f"override_origin must be 'api' or 'cli', not {override_origin!r}")
    return _load(*_policy_file(ref), overrides, override_origin)


def check_policy_file(path: PolicyRef) -> Policy:
    """Loads the policy file at `path` (always a path, never a shipped name) as a run would,
    also looking on this host for the paths it binds; PolicyErrors listing every mistake."""
    return _load(os.fspath(path), os.fspath(path), None, "api", host_facts=True)
