"""Archive verbs: save, load, import."""

from __future__ import annotations

import sys

from ketch.cli import common
from ketch.cli.args import Flag, Parsed
from ketch.cli.common import command, out
from ketch.errors import InvalidArgument, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO

    from ketch.engine.images import Report

_LOAD_STATUS = {"Extracting": "Loading layer", "Pull complete": "Loaded"}


def _open(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise NotFound(f"open {path}: no such file or directory") from None
    except OSError as exc:
        raise InvalidArgument(f"open {path}: {exc.strerror}") from None


@command(
    Flag(
        "output",
        short="o",
        value=True,
        help="write to FILE (a directory for oci-dir) instead of standard output",
    ),
    Flag("format", value=True, help="docker-archive (default), oci-archive or oci-dir"),
)
def save(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import archive_save
    from ketch.engine.archive_formats import FORMATS

    if not cmd.args:
        raise InvalidArgument("save needs at least 1 argument")
    fmt = cmd.string("format") or "docker-archive"
    if fmt not in FORMATS:
        raise InvalidArgument(f"unknown --format {fmt!r} (docker-archive, oci-archive, oci-dir)")
    output = cmd.string("output")
    if not output and fmt == "oci-dir":
        raise InvalidArgument("--format oci-dir needs -o DIRECTORY")
    if not output and sys.stdout.isatty():
        raise InvalidArgument("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    service = common.images(g)
    items = archive_save.resolve(service, cmd.args)
    if output:
        archive_save.save_file(service, items, output, fmt)
        return 0
    sys.stdout.flush()
    archive_save.save(service, items, sys.stdout.buffer, fmt)
    sys.stdout.buffer.flush()
    return 0


@command(
    Flag("input", short="i", value=True, help="read from FILE instead of standard input"),
    Flag("quiet", short="q", help="no progress"),
    Flag("platform", value=True, help="os/arch[/variant] to pick from a multi-platform archive"),
)
def load(g: Parsed, cmd: Parsed) -> int:
    from contextlib import nullcontext

    from ketch.cli.progress import Progress
    from ketch.engine import archive_load
    from ketch.oci.image import Platform

    if cmd.args:
        raise InvalidArgument("load accepts no arguments (use -i FILE)")
    path = cmd.string("input")
    if not path and sys.stdin.isatty():
        raise InvalidArgument("requested load from stdin, but stdin is empty")
    platform = Platform.parse(cmd.string("platform")) if cmd.string("platform") else None
    service = common.images(g)
    quiet = cmd.boolean("quiet") or not sys.stdout.isatty()  # docker shows progress on terminals only
    source = _open(path) if path else nullcontext(sys.stdin.buffer)
    with source as stream, Progress(sys.stdout, quiet) as progress:
        loaded = archive_load.load(service, stream, _renamed(progress.report), platform)
    for image in loaded:
        for name in image.names:
            out(f"Loaded image: {name}")
        if not image.names:
            out(f"Loaded image ID: {image.id}")
    return 0


def _renamed(report: Report) -> Report:
    def wrapped(layer: str, status: str, current: int = 0, total: int = 0) -> None:
        report(layer, _LOAD_STATUS.get(status, status), current, total)

    return wrapped


@command(
    Flag("change", short="c", value=True, multi=True, help="apply a Dockerfile instruction (ENV, CMD, ...)"),
    Flag("message", short="m", value=True, help="commit message of the imported image"),
)
def import_(g: Parsed, cmd: Parsed) -> int:
    from contextlib import nullcontext

    from ketch.engine import archive_save
    from ketch.engine.archive_formats import apply_changes

    if not 1 <= len(cmd.args) <= 2:
        raise InvalidArgument("import needs FILE|- and optionally REPOSITORY[:TAG]")
    src = cmd.args[0]
    name = cmd.args[1] if len(cmd.args) == 2 else ""
    changes = cmd.strings("change")
    apply_changes(changes)  # refuse a bad --change before reading anything
    service = common.images(g)
    if src == "-":
        source: Any = nullcontext(sys.stdin.buffer)
    elif src.startswith(("http://", "https://")):
        source = _download(src)
    else:
        source = _open(src)
    with source as stream:
        image = archive_save.import_rootfs(service, stream, src, changes, cmd.string("message"), name)
    out(image.id)
    return 0


def _download(url: str) -> Any:
    """A URL's body (docker import URL): streamed as it arrives; the importer only reads forward."""
    import urllib.error
    import urllib.request

    try:
        return urllib.request.urlopen(url, timeout=60)  # the user asked for this URL
    except (urllib.error.URLError, OSError) as exc:
        raise InvalidArgument(f"import {url}: {getattr(exc, 'reason', exc)}") from None
