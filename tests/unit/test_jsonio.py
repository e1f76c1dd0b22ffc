"""ketch.jsonio writes what json.dumps writes, and refuses what it refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ketch import jsonio

DOCS: list[Any] = [
    {"a": 1, "b": [1, 2.5, "x\u00e9\n\t\"", None, True, False, (3, 4)], "c": {"d": {}}, "e": []},
    [], {}, "s", 0, -7, 1.0, -0.0, 1e300, 2**70, [[]], {"k": {"l": [{"m": "\u2603\U0001f600"}]}},
]  # fmt: skip


@pytest.mark.parametrize("doc", DOCS)
def test_output_matches_json_dumps(doc: Any) -> None:
    assert jsonio.dumps(doc) == json.dumps(doc)
    assert jsonio.dumps(doc, indent=1) == json.dumps(doc, indent=1)
    assert jsonio.loads(jsonio.dumps(doc)) == json.loads(json.dumps(doc))


@pytest.mark.parametrize("bad", [float("nan"), {"x": float("inf")}, [float("-inf")]])
def test_non_finite_floats_are_refused(bad: Any) -> None:
    for indent in (None, 1):
        with pytest.raises(ValueError):
            jsonio.dumps(bad, indent=indent)


@pytest.mark.parametrize("bad", [object(), {"a": {1, 2}}, [b"bytes"]])
def test_other_types_are_refused(bad: Any) -> None:
    for indent in (None, 1):
        with pytest.raises(TypeError):
            jsonio.dumps(bad, indent=indent)
