"""Volume verbs: volume create, ls, inspect, rm and prune, with Docker's output."""

from __future__ import annotations

from ketch.cli import common
from ketch.cli.args import Flag, Parsed
from ketch.cli.common import command, out
from ketch.errors import InvalidArgument, KetchError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.engine.context import Context
    from ketch.engine.volumes import Volume

LS_HEADER = {
    "Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT",
    "Labels": "LABELS", "Links": "LINKS", "Size": "SIZE", "Group": "GROUP", "Availability": "AVAILABILITY",
    "Status": "STATUS",
}  # fmt: skip
LS_TABLE = "table {{.Driver}}\t{{.Name}}"
PRUNE_WARNING = {
    False: "WARNING! This will remove anonymous local volumes not used by at least one container.",
    True: "WARNING! This will remove all local volumes not used by at least one container.",
}


def _context(g: Parsed) -> Context:
    from ketch.cli.containers import context

    return context(g)


@command(Flag("driver", short="d", value=True), Flag("label", value=True, multi=True),
         Flag("opt", short="o", value=True, multi=True), Flag("name", value=True))  # fmt: skip
def create(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import volumes
    from ketch.engine.options import parse_labels

    if len(cmd.args) > 1:
        raise InvalidArgument('"ketch volume create" requires at most 1 argument')
    if cmd.args and cmd.string("name"):
        raise InvalidArgument("conflicting options: cannot specify a volume-name through both --name and as a positional arg")  # fmt: skip
    name = cmd.args[0] if cmd.args else cmd.string("name")
    labels = parse_labels(cmd.strings("label"))
    options = {key: value for key, _, value in (item.partition("=") for item in cmd.strings("opt"))}
    try:
        volume = volumes.create(_context(g), name, labels, cmd.string("driver") or "local", options)
    except KetchError as exc:
        common.daemon_error(exc)
        return 1
    out(volume.name)
    return 0


@command(
    Flag("quiet", short="q"), Flag("format", value=True), Flag("filter", short="f", value=True, multi=True)
)
def ls(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import volumes

    if cmd.args:
        raise InvalidArgument('"ketch volume ls" accepts no arguments')
    ctx = _context(g)
    filters = common.filters(cmd.strings("filter"))
    found = volumes.list_volumes(ctx)
    if filters:
        found = volumes.select(found, filters, volumes.users(ctx))
    template = cmd.string("format") or ("{{.Name}}" if cmd.boolean("quiet") else LS_TABLE)
    if template == "json":
        template = "{{json .}}"
    elif template == "table":
        template = LS_TABLE
    out(common.render(template, [_row(v) for v in found], LS_HEADER))
    return 0


def _row(volume: Volume) -> dict[str, Any]:
    labels = ",".join(f"{k}={v}" for k, v in sorted(volume.labels.items()))
    return {"Availability": "N/A", "Driver": volume.driver, "Group": "N/A", "Labels": labels, "Links": "N/A",
            "Mountpoint": volume.mountpoint, "Name": volume.name, "Scope": "local", "Size": "N/A",
            "Status": "N/A"}  # fmt: skip


@command(Flag("format", short="f", value=True))
def inspect(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import volumes

    if not cmd.args:
        raise InvalidArgument('"ketch volume inspect" requires at least 1 argument')
    ctx = _context(g)
    return common.inspect_each(cmd.args, lambda name: volumes.get(ctx, name).to_json(), cmd.string("format"))


@command(Flag("force", short="f"))
def rm(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import volumes

    if not cmd.args:
        raise InvalidArgument('"ketch volume rm" requires at least 1 argument')
    ctx = _context(g)
    used = volumes.users(ctx)
    status = 0
    for name in cmd.args:
        try:
            volumes.remove(ctx, name, cmd.boolean("force"), used)
        except KetchError as exc:
            common.daemon_error(exc)
            status = 1
            continue
        out(name)
    return status


@command(Flag("all", short="a"), Flag("force", short="f"), Flag("filter", value=True, multi=True))
def prune(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import volumes

    if cmd.args:
        raise InvalidArgument('"ketch volume prune" accepts no arguments')
    filters = common.filters(cmd.strings("filter"))
    all_ = cmd.boolean("all")
    if all_ and any(key == "all" for key, _ in filters):
        raise InvalidArgument("conflicting options: cannot specify both --all and --filter all=1")
    if not cmd.boolean("force") and not common.confirm(PRUNE_WARNING[all_]):
        out("Total reclaimed space: 0B")
        return 0
    deleted, freed = volumes.prune(_context(g), all_, filters)
    if deleted:
        out("Deleted Volumes:\n" + "\n".join(deleted) + "\n\n")
    out(f"Total reclaimed space: {common.human_size(freed)}")
    return 0
