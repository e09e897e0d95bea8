"""viewbox._record stands in for @dataclass(frozen=True): it must behave like it."""
from __future__ import annotations

import dataclasses

import pytest

from viewbox._record import FrozenInstanceError, asdict, field, fields, record, replace


@record
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = field(default_factory=tuple)
    note: str = field(default="", compare=False, metadata={"doc": "ignored by =="})
    cache: int = field(default=0, compare=False, repr=False)


@record
class Labelled(Point):
    label: str = "p"


@dataclasses.dataclass(frozen=True)
class ReferencePoint:
    x: int
    y: int = 0
    tags: tuple[str, ...] = dataclasses.field(default_factory=tuple)
    note: str = dataclasses.field(default="", compare=False)


def test_init_positional_keyword_and_defaults_like_dataclasses() -> None:
    for cls in (Point, ReferencePoint):
        p = cls(1, y=2)
        assert (p.x, p.y, p.tags, p.note) == (1, 2, (), "")
        with pytest.raises(TypeError):
            cls()  # x is required
        with pytest.raises(TypeError):
            cls(1, x=1)  # given twice
        with pytest.raises(TypeError):
            cls(1, z=3)  # unknown


def test_frozen() -> None:
    p = Point(1)
    with pytest.raises(FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del p.y  # type: ignore[misc]
    assert isinstance(FrozenInstanceError(), AttributeError)


def test_equality_and_hash_skip_compare_false_fields() -> None:
    assert Point(1, note="a") == Point(1, note="b")
    assert hash(Point(1, note="a")) == hash(Point(1, note="b"))
    assert Point(1) != Point(2)
    assert Point(1) != Labelled(1)  # another class is never equal
    assert {Point(1, 2), Point(1, 2)} == {Point(1, 2)}


def test_default_factory_gives_each_instance_its_own_value() -> None:
    @record
    class Box:
        items: list[int] = field(default_factory=list)

    a, b = Box(), Box()
    a.items.append(1)
    assert b.items == []


def test_inheritance_fields_in_order() -> None:
    lab = Labelled(1, 2, label="q")
    assert [f.name for f in fields(lab)] == ["x", "y", "tags", "note", "cache", "label"]
    assert repr(lab) == "Labelled(x=1, y=2, tags=(), note='', label='q')"  # cache: repr=False


def test_fields_replace_asdict_like_dataclasses() -> None:
    p = Point(1, 2, ("a",))
    assert fields(Point)[3].metadata["doc"] == "ignored by =="
    assert replace(p, y=5) == Point(1, 5, ("a",))
    with pytest.raises(TypeError):
        replace(p, z=1)

    @record
    class Outer:
        inner: Point
        more: list[Point]

    plain = {"x": 1, "y": 2, "tags": ("a",), "note": "", "cache": 0}
    assert asdict(Outer(p, [p])) == {"inner": plain, "more": [plain]}
    assert asdict(p) == {**dataclasses.asdict(ReferencePoint(1, 2, ("a",))), "cache": 0}


def test_a_required_field_after_a_default_is_refused() -> None:
    with pytest.raises(TypeError):
        @record
        class Bad:
            a: int = 0
            b: int
