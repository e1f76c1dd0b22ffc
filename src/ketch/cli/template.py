"""A small subset of Go's text/template for --format: {{.Field}}, {{.A.B}}, {{json .}}, {{json .F}},
{{upper .F}}, {{lower .F}}, {{join .F ","}}, and the `table` prefix with a header row and aligned columns."""

from __future__ import annotations

import json
import re

from ketch.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}")
_WORD = re.compile(r'"(?:[^"\\]|\\.)*"|\S+')


def render(template: str, rows: list[dict[str, Any]], header: dict[str, str]) -> str:
    """One line per row; with `table`, a header line first and \\t-separated columns aligned."""
    template = template.replace("\\t", "\t").replace("\\n", "\n")
    is_table = template.startswith("table")
    if is_table:
        template = template[len("table") :].lstrip() or "\t".join("{{." + k + "}}" for k in header)
    lines = [_render_one(template, row) for row in rows]
    if not is_table:
        return "\n".join(lines)
    head = _ACTION.sub(lambda m: _header(m.group(1), header), template)
    return _align([head, *lines])


def _render_one(template: str, row: dict[str, Any]) -> str:
    return _ACTION.sub(lambda m: _text(_evaluate(m.group(1), row)), template)


def _evaluate(action: str, row: dict[str, Any]) -> Any:
    words = [w[1:-1] if w.startswith('"') else w for w in _WORD.findall(action)]
    if not words:
        raise InvalidArgument("template: empty action {{}}")
    if len(words) == 1:
        return _field(words[0], row)
    fn, args = words[0], [_field(w, row) if w.startswith(".") else w for w in words[1:]]
    if fn == "json":
        return json.dumps(args[0], separators=(",", ":"), ensure_ascii=False)
    if fn in ("upper", "lower"):
        return getattr(_text(args[0]), fn)()
    if fn == "join" and len(args) == 2:
        return str(args[1]).join(_text(a) for a in args[0])
    raise InvalidArgument(f"template: unsupported function {fn!r} in {{{{{action}}}}}")


def _field(path: str, row: Any) -> Any:
    if path == ".":
        return row
    if not path.startswith("."):
        raise InvalidArgument(f"template: expected a field like .Name, got {path!r}")
    value = row
    for part in path[1:].split("."):
        if not isinstance(value, dict) or part not in value:
            raise InvalidArgument(f"template: no field {path!r}")
        value = value[part]
    return value


def _text(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_text(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def _header(action: str, header: dict[str, str]) -> str:
    fields = [w for w in action.split() if w.startswith(".")]
    name = fields[0].lstrip(".") if fields else ""
    return header.get(name, name.upper())


def _align(lines: list[str]) -> str:
    cells = [line.split("\t") for line in lines]
    count = max(len(c) for c in cells)
    widths = [max((len(c[i]) for c in cells if i < len(c) - 1), default=0) for i in range(count)]
    out = []
    for row in cells:
        out.append(
            "".join(
                c.ljust(max(widths[i] + 3, 10)) if i < len(row) - 1 else c for i, c in enumerate(row)
            ).rstrip()
        )
    return "\n".join(out)
