"""Container filesystem verbs: cp, diff, export, commit."""

from __future__ import annotations

import os
import sys

from ketch.cli.args import Flag, Parsed
from ketch.cli.common import command, out
from ketch.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ketch.engine.containers import ContainerRecord
    from ketch.engine.context import Context

_TERMINAL = "cowardly refusing to save to a terminal. Use the -o flag or redirect"


def _container(g: Parsed, name: str) -> tuple[Context, ContainerRecord]:
    from ketch.cli.containers import context

    ctx = context(g)
    return ctx, ctx.containers().find(name)


def split_cp_arg(arg: str) -> tuple[str, str]:
    """Docker's rule: CONTAINER:PATH, unless the argument is an absolute path, has no ":" or starts
    with "." (./name:with-colon is local)."""
    if arg.startswith("/"):
        return "", arg
    container, colon, path = arg.partition(":")
    if not colon or container.startswith("."):
        return "", arg
    return container, path or "/"


@command(
    Flag("archive", short="a", help="keep uid/gid of the source files"),
    Flag("follow-link", short="L", help="always follow a symlink in SRC_PATH"),
    Flag("quiet", short="q", help="no progress output"),
)
def cp(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import filesystem

    if len(cmd.args) != 2:
        raise InvalidArgument(
            '"ketch cp" requires exactly 2 arguments: CONTAINER:SRC_PATH DEST_PATH|- or SRC_PATH|- CONTAINER:DEST_PATH'
        )
    (src_name, src), (dst_name, dst) = map(split_cp_arg, cmd.args)
    if src_name and dst_name:
        raise InvalidArgument("copying between containers is not supported")
    if not src_name and not dst_name:
        raise InvalidArgument("must specify at least one container source")
    follow = cmd.boolean("follow-link")
    if src_name:
        ctx, record = _container(g, src_name)
        if dst == "-":
            size = filesystem.copy_out(ctx, record, src, sys.stdout.buffer, follow)
            sys.stdout.buffer.flush()
            return 0
        size = filesystem.copy_to_host(ctx, record, src, dst, follow)
    else:
        ctx, record = _container(g, dst_name)
        source = sys.stdin.buffer if src == "-" else src
        size = filesystem.copy_in(ctx, record, source, dst, cmd.boolean("archive"), follow)
    if not cmd.boolean("quiet") and sys.stderr.isatty():
        from ketch.cli.common import human_size

        sys.stderr.write(f"Successfully copied {human_size(size)} to {cmd.args[1]}\n")
    return 0


@command()
def diff(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import filesystem

    if len(cmd.args) != 1:
        raise InvalidArgument('"ketch diff" requires exactly 1 argument: CONTAINER')
    ctx, record = _container(g, cmd.args[0])
    out("\n".join(f"{kind} {path}" for kind, path in filesystem.diff(ctx, record)))
    return 0


@command(Flag("output", short="o", value=True, help="write to FILE instead of standard output"))
def export(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import filesystem

    if len(cmd.args) != 1:
        raise InvalidArgument('"ketch export" requires exactly 1 argument: CONTAINER')
    output = cmd.string("output")
    if not output and sys.stdout.isatty():
        raise InvalidArgument(_TERMINAL)
    ctx, record = _container(g, cmd.args[0])
    if not output:
        sys.stdout.flush()
        filesystem.export(ctx, record, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return 0
    try:
        with open(output, "wb") as f:
            filesystem.export(ctx, record, f)
    except BaseException:
        try:
            os.unlink(output)
        except OSError:
            pass
        raise
    return 0


@command(
    Flag("author", short="a", value=True, help='author (e.g. "Jane Doe <jane@example.com>")'),
    Flag("change", short="c", value=True, multi=True, help="apply a Dockerfile instruction (ENV, CMD, ...)"),
    Flag("message", short="m", value=True, help="commit message"),
    Flag("pause", short="p", help="accepted for Docker compatibility; the container is not paused"),
)
def commit(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import filesystem
    from ketch.engine.archive_formats import apply_changes

    if not 1 <= len(cmd.args) <= 2:
        raise InvalidArgument('"ketch commit" requires 1 or 2 arguments: CONTAINER [REPOSITORY[:TAG]]')
    changes = cmd.strings("change")
    apply_changes(changes)  # refuse a bad --change before any work
    ctx, record = _container(g, cmd.args[0])
    name = cmd.args[1] if len(cmd.args) == 2 else ""
    out(filesystem.commit(ctx, record, name, cmd.string("message"), cmd.string("author"), changes))
    return 0
