"""What every ketch verb shares: the verb decorator, the engine built from the global flags, formatting."""

from __future__ import annotations

import os
import sys
import time

from ketch.cli.args import Flag, Parsed
from ketch.clock import human_duration
from ketch.clock import parse_rfc3339 as parse_time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ketch.engine.images import ImageService
    from ketch.registry.client import RegistryConfig

    Handler = Callable[[Parsed, Parsed], int]

DEFAULT_ROOT = "/var/lib/ketch"


def command(
    *flags: Flag, positional_stops: bool = False, error_code: int = 1
) -> Callable[[Handler], Handler]:
    """Declare a verb's flags (-h/--help is added to every verb). With `positional_stops`, flags
    end at the first positional (run IMAGE CMD -x: -x is the command's); `error_code` is the exit
    status for engine errors (run, create and exec use Docker's 125)."""

    def wrap(fn: Handler) -> Handler:
        fn.FLAGS = (*flags, Flag("help", short="h"))  # type: ignore[attr-defined]
        fn.STOPS = positional_stops  # type: ignore[attr-defined]
        fn.ERROR_CODE = error_code  # type: ignore[attr-defined]
        return fn

    return wrap


def root(g: Parsed) -> str:
    return g.string("root") or os.environ.get("KETCH_ROOT") or DEFAULT_ROOT


def engine_config(g: Parsed) -> dict[str, Any]:
    """<root>/engine.json, Docker daemon.json's keys: insecure-registries, registry-mirrors, certs-dir."""
    from ketch.engine.context import engine_config as read

    return read(root(g))


def auth_file() -> str:
    default = os.path.join(os.path.expanduser("~"), ".config", "ketch", "auth.json")
    return os.environ.get("KETCH_AUTH_FILE") or default


def registry_config(g: Parsed, tls_verify: bool = True) -> RegistryConfig:
    from ketch.registry.client import RegistryConfig

    conf = engine_config(g)
    return RegistryConfig(
        certs_dir=conf.get("certs-dir", "/etc/docker/certs.d"),
        insecure=tuple(conf.get("insecure-registries", ())),
        mirrors=tuple(conf.get("registry-mirrors", ())),
        auth_file=auth_file(),
        tls_verify=tls_verify,
    )


def images(g: Parsed, tls_verify: bool = True) -> ImageService:
    from ketch.engine.images import ImageService

    driver = g.string("storage-driver") or engine_config(g).get("storage-driver", "auto")
    return ImageService(os.path.join(root(g), "storage"), registry_config(g, tls_verify), driver)


def filters(items: list[str]) -> list[tuple[str, str]]:
    """--filter key=value items, split; a missing "=" is Docker's "bad format of filter" error."""
    from ketch.errors import InvalidArgument

    out = []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise InvalidArgument(f"bad format of filter (expected name=value): {item!r}")
        out.append((key, value))
    return out


def tls_verify(cmd: Parsed) -> bool:
    raw = cmd.string("tls-verify") or "true"
    return raw.lower() not in ("false", "0", "no")


# --- output --------------------------------------------------------------------------------------


def human_size(n: float) -> str:
    """Docker's sizes: decimal units, 3 significant digits ("4.26MB", "512B")."""
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000
        i += 1
    return f"{n:.3g}{units[i]}"


def human_ago(rfc3339: str, now: float | None = None) -> str:
    """Docker's "2 weeks ago" from an RFC 3339 time."""
    seconds = (now or time.time()) - parse_time(rfc3339)
    if seconds < 1:
        return "Less than a second ago"
    return f"{human_duration(seconds)} ago"


def table(rows: list[list[str]], header: list[str]) -> str:
    """Docker's tabwriter output: columns padded to the widest cell plus three spaces."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "".join(c.ljust(max(w + 3, 10)) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def render(template: str, fields: list[dict[str, Any]], header: dict[str, str]) -> str:
    """Go-template-like --format: {{.Field}}, {{json .}}, {{json .Field}}, `table` prefix, \\t."""
    from ketch.cli.template import render as _render

    return _render(template, fields, header)


def out(text: str) -> None:
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def confirm(warning: str) -> bool:
    """Docker's prompt: the warning, then a line from stdin; only "y" goes ahead."""
    sys.stdout.write(f"{warning}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    return sys.stdin.readline().strip().lower() == "y"


def daemon_error(exc: Exception) -> None:
    """An error as docker prints one the daemon returned."""
    sys.stderr.write(f"Error response from daemon: {exc}\n")


def inspect_each(refs: list[str], get: Any, template: str) -> int:
    """`<object> inspect`: the JSON of each ref (`get(ref)`), or `template` applied; errors after."""
    from ketch import jsonio
    from ketch.errors import KetchError

    docs, failed = [], []
    for ref in refs:
        try:
            docs.append(get(ref))
        except KetchError as exc:
            failed.append(exc)
    if template:
        out(render(template, docs, {}))
    elif docs or not failed:
        out(jsonio.dumps(docs, indent=4))
    for error in failed:
        daemon_error(error)
    return 1 if failed else 0
