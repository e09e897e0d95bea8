"""Frozen records: the part of `dataclasses` viewbox uses, without its start-up cost.

Importing `dataclasses` pulls in `inspect` and `ast`, and every class it
decorates has its methods generated through `exec`: together about 15 ms of
a `viewbox run` whose whole budget, Python's own start included, is 40 ms
(DESIGN.md §6). A record builds the same methods from closures instead.

What a `@record` class gets, as with `@dataclass(frozen=True)`:
- `__init__` taking the fields positionally or by keyword, in declaration
  order (base classes first), with defaults and `field(default_factory=...)`;
- assignment and deletion raising FrozenInstanceError;
- `__eq__` and `__hash__` over the fields declared with compare=True;
- `__repr__` over the fields declared with repr=True;
and the module functions `fields`, `replace` and `asdict` behave like theirs.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar, dataclass_transform

_T = TypeVar("_T")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class FrozenInstanceError(AttributeError):
    """Raised when a record's field is assigned or deleted."""


class Field:
    """One field of a record: its name, default, and metadata."""

    __slots__ = ("name", "default", "default_factory", "compare", "repr", "metadata")

    def __init__(self, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING,
                 compare: bool = True, repr: bool = True, metadata: Mapping[str, Any] | None = None) -> None:
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("a field cannot have both a default and a default_factory")
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.compare = compare
        self.repr = repr
        self.metadata: Mapping[str, Any] = metadata or {}

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, default={self.default!r}, compare={self.compare})"


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING,
          compare: bool = True, repr: bool = True, metadata: Mapping[str, Any] | None = None) -> Any:
    """Declares a field with a default, a default factory, compare=False, repr=False or metadata."""
    return Field(default, default_factory, compare, repr, metadata)


_FIELDS = "__record_fields__"


@dataclass_transform(frozen_default=True, field_specifiers=(field, Field))
def record(cls: type[_T]) -> type[_T]:
    """Makes `cls` a frozen record of its annotated class attributes."""
    own: list[Field] = []
    for name in cls.__dict__.get("__annotations__", {}):
        value = cls.__dict__.get(name, MISSING)
        spec = value if isinstance(value, Field) else Field(default=value)
        spec.name = name
        own.append(spec)
        if isinstance(value, Field):
            # like dataclasses: the class attribute becomes the plain default
            if spec.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, spec.default)
    inherited = [f for base in reversed(cls.__mro__[1:]) for f in getattr(base, _FIELDS, ())]
    by_name = {f.name: f for f in inherited + own}
    all_fields = tuple(by_name.values())
    setattr(cls, _FIELDS, all_fields)
    _check_order(cls, all_fields)

    names = tuple(f.name for f in all_fields)
    shown = tuple(f.name for f in all_fields if f.repr)
    compared = tuple(f.name for f in all_fields if f.compare)
    setter = object.__setattr__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(all_fields):
            raise TypeError(f"{cls.__name__}() takes {len(all_fields)} arguments, got {len(args)}")
        for spec, value in zip(all_fields, args):
            if spec.name in kwargs:
                raise TypeError(f"{cls.__name__}() got multiple values for {spec.name!r}")
            setter(self, spec.name, value)
        for spec in all_fields[len(args):]:
            if spec.name in kwargs:
                value = kwargs.pop(spec.name)
            elif spec.default is not MISSING:
                value = spec.default
            elif spec.default_factory is not MISSING:
                value = spec.default_factory()
            else:
                raise TypeError(f"{cls.__name__}() missing required argument {spec.name!r}")
            setter(self, spec.name, value)
        if kwargs:  # the known names were popped: what is left is unexpected
            raise TypeError(f"{cls.__name__}() got unexpected arguments {sorted(kwargs)}")

    def _key(self: Any) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in compared)

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(_key(self) == _key(other))

    def __hash__(self: Any) -> int:
        return hash(_key(self))

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{cls.__qualname__}({inner})"

    def __setattr__(self: Any, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self: Any, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    for method in (__init__, __eq__, __hash__, __repr__, __setattr__, __delattr__):
        method.__qualname__ = f"{cls.__qualname__}.{method.__name__}"
        setattr(cls, method.__name__, method)
    return cls


def _check_order(cls: type, all_fields: tuple[Field, ...]) -> None:
    seen_default = False
    for spec in all_fields:
        has_default = spec.default is not MISSING or spec.default_factory is not MISSING
        if seen_default and not has_default:
            raise TypeError(f"{cls.__name__}: non-default field {spec.name!r} follows a default one")
        seen_default = seen_default or has_default


def is_record(obj: object) -> bool:
    return hasattr(type(obj) if not isinstance(obj, type) else obj, _FIELDS)


def fields(obj: Any) -> tuple[Field, ...]:
    """The fields of a record class or instance, in order."""
    cls = obj if isinstance(obj, type) else type(obj)
    try:
        return tuple(getattr(cls, _FIELDS))
    except AttributeError:
        raise TypeError(f"{cls.__name__} is not a record") from None


def replace(obj: _T, **changes: Any) -> _T:
    """A copy of record `obj` with `changes` applied."""
    values = {f.name: getattr(obj, f.name) for f in fields(obj)}
    unknown = changes.keys() - values.keys()
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no fields {sorted(unknown)}")
    values.update(changes)
    return type(obj)(**values)


def asdict(obj: Any) -> dict[str, Any]:
    """The record as a dict, recursing into records, lists, tuples and dicts."""
    return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}


def _plain(value: Any) -> Any:
    if is_record(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value
