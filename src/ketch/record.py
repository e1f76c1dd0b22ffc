"""Frozen records: dataclass semantics without dataclasses' import and class-creation cost.

`dataclasses` generates each class's methods with exec(): about 0.5-1 ms per class, plus
~7 ms to import (it pulls in inspect). ketch-oci defines a few dozen spec classes and must
start in a few milliseconds, so records here get one generic __init__ built from the class
annotations. mypy still checks constructor calls: the base is declared a dataclass_transform.

    class Mount(Record):
        destination: str
        options: tuple[str, ...] = ()
        extra: dict[str, str] = field(default_factory=dict)   # a fresh dict per instance
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar, dataclass_transform

    _R = TypeVar("_R", bound="Record")
else:

    def dataclass_transform(**_kw):
        return lambda cls: cls


_MISSING = object()


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Any) -> None:
        self.make = make


def field(default_factory: Any) -> Any:
    """A default built fresh for each instance (like dataclasses.field(default_factory=...))."""
    return _Factory(default_factory)


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
class Record:
    """Base of records (immutable unless declared `frozen=False`): construction, ==, hash, repr."""

    _fields: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}

    _frozen: bool = True

    def __init_subclass__(cls, frozen: bool = True) -> None:
        cls._frozen = frozen
        own = [n for n in cls.__dict__.get("__annotations__", {}) if not n.startswith("_")]
        cls._fields = cls._fields + tuple(
            f for f in own if f not in cls._fields
        )  # redeclared keep their place
        cls._defaults = dict(cls._defaults)
        for name in own:
            if name in cls.__dict__:
                cls._defaults[name] = cls.__dict__[name]
                delattr(cls, name)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__} takes {len(fields)} arguments, got {len(args)}")
        values = dict(zip(fields, args, strict=False))
        for key, value in kwargs.items():
            if key not in fields or key in values:
                raise TypeError(f"{type(self).__name__}: unexpected or repeated argument {key!r}")
            values[key] = value
        setter = object.__setattr__
        for name in fields:
            value = values.get(name, _MISSING)
            if value is _MISSING:
                value = self._defaults.get(name, _MISSING)
                if value is _MISSING:
                    raise TypeError(f"{type(self).__name__}: missing argument {name!r}")
                if isinstance(value, _Factory):
                    value = value.make()
            setter(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if self._frozen or name not in self._fields:
            raise AttributeError(f"{type(self).__name__}.{name} cannot be set; use replace()")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self._fields)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self).__name__, *self._values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({inner})"

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self._fields}


def replace(obj: _R, **changes: Any) -> _R:
    """A copy of `obj` with some fields changed."""
    values = obj.to_dict()
    values.update(changes)
    return type(obj)(**values)
