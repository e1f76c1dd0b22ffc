"""`ps` (Docker's columns, filters and --format) and `inspect` of containers and images."""

from __future__ import annotations

import sys

from ketch.cli import common
from ketch.cli.args import Flag, Parsed
from ketch.cli.common import command, out
from ketch.errors import InvalidArgument, KetchError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ketch.engine.containers import ContainerRecord, State
    from ketch.engine.context import Context

PS_HEADER = {
    "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "RunningFor": "CREATED",
    "Status": "STATUS", "Ports": "PORTS", "Names": "NAMES", "State": "STATE", "CreatedAt": "CREATED AT",
    "Labels": "LABELS", "Size": "SIZE",
}  # fmt: skip
PS_TABLE = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"


@command(Flag("all", short="a"), Flag("quiet", short="q"), Flag("latest", short="l"), Flag("last", short="n", value=True),
         Flag("no-trunc"), Flag("filter", short="f", value=True, multi=True), Flag("format", value=True),
         Flag("size", short="s"))  # fmt: skip
def ps(g: Parsed, cmd: Parsed) -> int:
    from ketch.cli.containers import context

    ctx = context(g)
    store = ctx.containers()
    entries = [(r, store.state(r.id)) for r in store.all()]
    entries.sort(key=lambda e: e[0].created, reverse=True)
    last = 1 if cmd.boolean("latest") else cmd.integer("last", -1)
    show_all = cmd.boolean("all") or last >= 0
    if not show_all:
        entries = [e for e in entries if e[1].running]
    entries = _filter(entries, cmd.strings("filter"))
    if last >= 0:
        entries = entries[:last]
    no_trunc = cmd.boolean("no-trunc")
    if cmd.boolean("quiet"):
        out("\n".join(r.id if no_trunc else r.short_id for r, _ in entries))
        return 0
    rows = [_row(r, s, no_trunc, ctx) for r, s in entries]
    out(common.render(cmd.string("format") or PS_TABLE, rows, PS_HEADER))
    return 0


def _ports(ctx: Context, record: ContainerRecord, state: State) -> str:
    """Docker's PORTS: "0.0.0.0:8080->80/tcp" for published ports, "80/tcp" for exposed ones."""
    from ketch.engine import networks

    published = networks.published(ctx, record.id) if state.running else []
    done = {b.key for b in published}
    parts = [f"{b.host_ip or '0.0.0.0'}:{b.host_port}->{b.key}" for b in published]
    parts += [key for key in record.config.get("ExposedPorts") or {} if key not in done]
    return ", ".join(parts)


def _row(record: ContainerRecord, state: State, no_trunc: bool, ctx: Context) -> dict[str, Any]:
    from ketch.engine.describe import command_line, status_line
    from ketch.oci.reference import Reference

    try:
        image = (
            Reference.parse(record.image_ref).familiar
            if "sha256:" not in record.image_ref
            else record.image_ref
        )
    except KetchError:
        image = record.image_ref
    if image.endswith(":latest") and not record.image_ref.endswith(":latest"):
        image = image.removesuffix(":latest")
    labels = record.config.get("Labels") or {}
    return {
        "ID": record.id if no_trunc else record.short_id, "Image": image,
        "Command": command_line(record, 0 if no_trunc else 20),
        "RunningFor": common.human_ago(record.created), "CreatedAt": record.created,
        "Status": status_line(state), "State": state.status, "Ports": _ports(ctx, record, state), "Names": record.name,
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())), "Size": "",
    }  # fmt: skip


def _filter(
    entries: list[tuple[ContainerRecord, State]], filters: list[str]
) -> list[tuple[ContainerRecord, State]]:
    import fnmatch

    for key, value in common.filters(filters):
        if key == "status":
            entries = [e for e in entries if e[1].status == value]
        elif key == "name":
            entries = [e for e in entries if value.lstrip("/") in e[0].name]
        elif key == "id":
            entries = [e for e in entries if e[0].id.startswith(value)]
        elif key == "label":
            k, _, v = value.partition("=")
            entries = [e for e in entries if k in (e[0].config.get("Labels") or {})
                       and (not v or e[0].config["Labels"][k] == v)]  # fmt: skip
        elif key == "ancestor":
            entries = [e for e in entries if fnmatch.fnmatchcase(e[0].image_ref, value) or e[0].image.startswith(value)
                       or e[0].image_ref.split(":")[0] == value]  # fmt: skip
        elif key == "network":
            entries = [e for e in entries if value in (e[0].host_config.get("NetworkMode"),
                       *(a.get("name") for a in e[0].host_config.get("KetchNetworks") or ()),
                       *(a.get("network") for a in e[0].host_config.get("KetchNetworks") or ()))]  # fmt: skip
        elif key == "publish":
            entries = [
                e
                for e in entries
                if any(value in (k, k.split("/")[0]) for k in e[0].host_config.get("PortBindings") or {})
            ]
        elif key == "expose":
            entries = [
                e
                for e in entries
                if any(value in (k, k.split("/")[0]) for k in e[0].config.get("ExposedPorts") or {})
            ]
        elif key == "exited":
            entries = [e for e in entries if e[1].status == "exited" and str(e[1].exit_code) == value]
        else:
            raise InvalidArgument(f"invalid filter '{key}'")
    return entries


@command(Flag("format", short="f", value=True), Flag("type", value=True), Flag("size", short="s"))
def inspect(g: Parsed, cmd: Parsed) -> int:
    """Containers first, then images, as Docker resolves a bare name."""
    from ketch.cli.containers import context
    from ketch.engine import describe
    from ketch.engine import images as engine_images

    if not cmd.args:
        raise InvalidArgument('"ketch inspect" requires at least 1 argument')
    kind = cmd.string("type")
    if kind not in ("", "container", "image"):
        raise InvalidArgument(f'"{kind}" is not a valid value for --type')
    ctx = context(g)
    return print_inspected(cmd, lambda text: _inspect_one(ctx, text, kind, describe, engine_images))


def print_inspected(cmd: Parsed, inspect_one: Callable[[str], dict[str, Any]]) -> int:
    """Inspect each argument: the documents as --format or a JSON array, an error line for each that fails.

    Returns 1 if any failed (the others are printed all the same), else 0.
    """
    from ketch import jsonio

    docs, status = [], 0
    for text in cmd.args:
        try:
            docs.append(inspect_one(text))
        except KetchError as exc:
            sys.stderr.write(f"Error: {exc}\n")
            status = 1
    if cmd.string("format"):
        out(common.render(cmd.string("format"), docs, {}))
    else:
        out(jsonio.dumps(docs, indent=4))
    return status


def _inspect_one(ctx: Any, text: str, kind: str, describe: Any, engine_images: Any) -> dict[str, Any]:
    from ketch.errors import NotFound

    if kind in ("", "container"):
        try:
            store = ctx.containers()
            record = store.find(text)
            return describe.container_json(ctx, record, store.state(record.id))  # type: ignore[no-any-return]
        except NotFound:
            if kind == "container":
                raise
    images = ctx.images()
    try:
        return engine_images.inspect(images, images.get(text))  # type: ignore[no-any-return]
    except NotFound:
        raise NotFound(f"No such object: {text}") from None


@command(Flag("format", short="f", value=True), Flag("size", short="s"))
def inspect_container(g: Parsed, cmd: Parsed) -> int:
    cmd.flags["type"] = "container"
    return inspect(g, cmd)
