"""JSON for the start-up path, without the json package.

`import json` costs ~10 ms: json.decoder imports re, which imports enum. ketch-oci reads and
writes a few small JSON documents per call, so this module drives the C scanner and string
encoder of CPython's `_json` directly. Output matches json.dumps (ASCII, the same separators);
input errors fall back to json.loads, which raises json.JSONDecodeError (a ValueError) with
the usual message.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"


class _Context:
    """The attributes json.decoder.JSONDecoder gives its scanner."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = None  # NaN and Infinity take the slow path (and are refused there too)
    memo: dict[str, str] = {}


_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # any object with these attributes


def loads(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        text = text.decode()
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        obj, end = _scan(text, start)
    except Exception:  # the C scanner reports errors poorly: let json say what is wrong
        return _slow(text)
    if text[end:].strip(_WHITESPACE):
        return _slow(text)
    return obj


def _slow(text: str) -> Any:
    import json

    return json.loads(text, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unserializable(o: Any) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


# The C encoder json.dumps itself uses when there is no indent: no circularity check, NaN and
# infinities refused (as `_encode` below does).
_c_encode = _json.make_encoder(
    None, _unserializable, _json.encode_basestring_ascii, None, ": ", ", ", False, False, False
)


def dumps(obj: Any, indent: int | str | None = None) -> str:
    if indent is None:
        return "".join(_c_encode(obj, 0))
    out: list[str] = []
    pad = " " * indent if isinstance(indent, int) else indent
    _encode(obj, out, pad, "\n")
    return "".join(out)


def _encode(o: Any, out: list[str], pad: str | None, newline: str) -> None:
    if isinstance(o, str):
        out.append(_json.encode_basestring_ascii(o))
    elif o is None or o is True or o is False:
        out.append("null" if o is None else "true" if o else "false")
    elif isinstance(o, int):
        out.append(int.__repr__(o))
    elif isinstance(o, float):
        if o != o or o in (float("inf"), float("-inf")):
            raise ValueError(f"{o!r} is not valid JSON")
        out.append(float.__repr__(o))
    elif isinstance(o, dict):
        _container(list(o.items()), "{", "}", out, pad, newline, is_dict=True)
    elif isinstance(o, (list, tuple)):
        _container(list(o), "[", "]", out, pad, newline, is_dict=False)
    else:
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _container(
    items: list[Any], open_: str, close: str, out: list[str], pad: str | None, newline: str, is_dict: bool
) -> None:
    if not items:
        out.append(open_ + close)
        return
    inner = newline + pad if pad is not None else ""
    out.append(open_)
    for i, item in enumerate(items):
        if i:
            out.append("," if pad is not None else ", ")
        out.append(inner)
        if is_dict:
            key, value = item
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
            out.append(_json.encode_basestring_ascii(key) + ": ")
            _encode(value, out, pad, inner)
        else:
            _encode(item, out, pad, inner)
    out.append(newline if pad is not None else "")
    out.append(close)
