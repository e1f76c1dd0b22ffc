"""Unit tests for ketch.record: the Record base that replaces dataclasses."""

from __future__ import annotations

import pytest

from ketch.record import Record, field, replace


class Point(Record):
    x: int
    y: int = 0


class Bag(Record):
    name: str
    items: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)


class Counter(Record, frozen=False):
    count: int = 0
    label: str = ""


class Point3(Point):
    z: int = 7


class Shared(Record):
    items: list[int] = []  # a plain mutable default is shared, as the module documents


# --- construction --------------------------------------------------------------------------------


def test_positional_and_keyword_construction() -> None:
    assert Point(1, 2).x == 1
    assert Point(1, 2).y == 2
    assert Point(x=3, y=4).to_dict() == {"x": 3, "y": 4}
    assert Point(5, y=6).to_dict() == {"x": 5, "y": 6}


def test_defaults_fill_missing_arguments() -> None:
    assert Point(1).y == 0
    assert Counter().count == 0
    assert Counter().label == ""


def test_missing_argument_raises_type_error() -> None:
    with pytest.raises(TypeError, match="missing argument 'x'"):
        Point()
    with pytest.raises(TypeError, match="missing argument 'x'"):
        Point(y=1)


def test_too_many_positional_arguments_raise_type_error() -> None:
    with pytest.raises(TypeError, match="takes 2 arguments, got 3"):
        Point(1, 2, 3)


def test_unknown_keyword_raises_type_error() -> None:
    with pytest.raises(TypeError, match="unexpected or repeated argument 'w'"):
        Point(1, w=2)


def test_argument_given_twice_raises_type_error() -> None:
    with pytest.raises(TypeError, match="repeated argument 'x'"):
        Point(1, x=2)


def test_default_factory_gives_a_fresh_object_per_instance() -> None:
    a, b = Bag("a"), Bag("b")
    assert a.items == []
    assert a.meta == {}
    assert a.items is not b.items
    assert a.meta is not b.meta
    a.items.append("x")
    assert b.items == []
    assert Bag("c").items == []


def test_default_factory_not_called_when_value_given() -> None:
    items = ["given"]
    assert Bag("a", items).items is items


def test_plain_mutable_default_is_shared() -> None:
    assert Shared().items is Shared().items


def test_defaults_are_not_left_as_class_attributes() -> None:
    assert "y" not in Point.__dict__
    assert "items" not in Bag.__dict__


# --- immutability --------------------------------------------------------------------------------


def test_frozen_record_refuses_setattr() -> None:
    p = Point(1, 2)
    with pytest.raises(AttributeError, match="cannot be set"):
        p.x = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        p.other = 1  # type: ignore[attr-defined]
    assert p.x == 1


def test_frozen_record_refuses_delattr() -> None:
    with pytest.raises(AttributeError, match="immutable"):
        del Point(1).x  # type: ignore[misc]


def test_non_frozen_record_allows_declared_fields_only() -> None:
    c = Counter()
    c.count = 3
    c.label = "hi"
    assert c == Counter(3, "hi")
    with pytest.raises(AttributeError, match="cannot be set"):
        c.undeclared = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        del c.count


def test_subclass_of_non_frozen_record_is_frozen_by_default() -> None:
    class Sub(Counter):
        extra: int = 0

    s = Sub()
    with pytest.raises(AttributeError):
        s.count = 1


# --- equality, hash, repr ------------------------------------------------------------------------


def test_equality_compares_type_and_values() -> None:
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(2, 1)
    assert Point(1, 0) != (1, 0)
    assert Point(1, 0) != Point3(1, 0, 7)
    assert Point3(1, 0, 7) != Point(1, 0)


def test_hash_follows_equality() -> None:
    assert hash(Point(1, 2)) == hash(Point(1, 2))
    assert len({Point(1, 2), Point(1, 2), Point(2, 1)}) == 2
    assert {Point(1, 2): "a"}[Point(1, 2)] == "a"


def test_record_with_unhashable_field_is_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(Bag("a"))


def test_repr_lists_fields_in_order() -> None:
    assert repr(Point(1, 2)) == "Point(x=1, y=2)"
    assert repr(Bag("a")) == "Bag(name='a', items=[], meta={})"
    assert repr(Point3(1)) == "Point3(x=1, y=0, z=7)"


# --- replace, to_dict ----------------------------------------------------------------------------


def test_replace_returns_a_changed_copy() -> None:
    p = Point(1, 2)
    q = replace(p, y=5)
    assert q == Point(1, 5)
    assert p == Point(1, 2)
    assert type(q) is Point
    assert replace(Point3(1), x=9) == Point3(9, 0, 7)


def test_replace_with_unknown_field_raises() -> None:
    with pytest.raises(TypeError):
        replace(Point(1), w=2)


def test_replace_keeps_shared_references() -> None:
    b = Bag("a")
    assert replace(b, name="b").items is b.items


def test_to_dict_is_ordered_by_declaration() -> None:
    assert list(Point3(1, 2, 3).to_dict().items()) == [("x", 1), ("y", 2), ("z", 3)]


# --- inheritance ---------------------------------------------------------------------------------


def test_subclass_appends_its_fields_after_the_base() -> None:
    assert Point3._fields == ("x", "y", "z")
    assert Point._fields == ("x", "y")
    p = Point3(1, 2, 3)
    assert (p.x, p.y, p.z) == (1, 2, 3)
    assert Point3(1).to_dict() == {"x": 1, "y": 0, "z": 7}


def test_subclass_can_change_a_default() -> None:
    class Moved(Point):
        y: int = 10

    assert Moved(1).y == 10
    assert Point(1).y == 0


def test_subclass_may_add_a_required_field() -> None:
    class Tagged(Point):
        tag: str

    assert Tagged(1, 2, "t").tag == "t"
    with pytest.raises(TypeError, match="missing argument 'tag'"):
        Tagged(1)


def test_private_annotations_are_not_fields() -> None:
    class WithPrivate(Record):
        a: int
        _cache: int = 0

    assert WithPrivate._fields == ("a",)
    with pytest.raises(TypeError):
        WithPrivate(1, 2)


def test_redeclared_field_keeps_its_position() -> None:
    class Moved(Point):
        x: int = 5

    assert Moved._fields == ("x", "y")
    assert Moved(1).x == 1
