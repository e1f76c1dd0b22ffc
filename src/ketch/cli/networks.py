"""Network verbs: network create, ls, inspect, rm, prune, connect, disconnect; and `port`."""

from __future__ import annotations

import sys

from ketch.cli import common
from ketch.cli.args import Flag, Parsed
from ketch.cli.common import command, out
from ketch.errors import InvalidArgument, KetchError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.engine.context import Context
    from ketch.network.store import NetworkRecord

LS_HEADER = {
    "ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv6": "IPV6",
    "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT",
}  # fmt: skip
LS_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"


def _context(g: Parsed) -> Context:
    from ketch.cli.containers import context

    return context(g)


@command(Flag("driver", short="d", value=True), Flag("subnet", value=True, multi=True),
         Flag("gateway", value=True, multi=True), Flag("ip-range", value=True, multi=True),
         Flag("internal"), Flag("ipv6"), Flag("label", value=True, multi=True),
         Flag("opt", short="o", value=True, multi=True), Flag("attachable"))  # fmt: skip
def create(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import networks
    from ketch.engine.options import parse_labels

    if len(cmd.args) != 1:
        raise InvalidArgument('"ketch network create" requires exactly 1 argument')
    subnets, gateways, ranges = cmd.strings("subnet"), cmd.strings("gateway"), cmd.strings("ip-range")
    if len(gateways) > len(subnets) or len(ranges) > len(subnets):
        raise InvalidArgument("every --gateway and --ip-range needs a --subnet")
    configs = [(s, gateways[i] if i < len(gateways) else "", ranges[i] if i < len(ranges) else "")
               for i, s in enumerate(subnets)]  # fmt: skip
    options = {key: value for key, _, value in (item.partition("=") for item in cmd.strings("opt"))}
    try:
        net = networks.create(
            _context(g), cmd.args[0], driver=cmd.string("driver") or "bridge", subnets=configs,
            internal=cmd.boolean("internal"), ipv6=cmd.boolean("ipv6"),
            labels=parse_labels(cmd.strings("label")), options=options,
        )  # fmt: skip
    except KetchError as exc:
        common.daemon_error(exc)
        return 1
    out(net.id)
    return 0


@command(Flag("quiet", short="q"), Flag("format", value=True), Flag("filter", short="f", value=True, multi=True),
         Flag("no-trunc"))  # fmt: skip
def ls(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import networks

    if cmd.args:
        raise InvalidArgument('"ketch network ls" accepts no arguments')
    ctx = _context(g)
    found = networks.ensure_predefined(ctx).all()
    found = _select(ctx, found, common.filters(cmd.strings("filter")))
    found.sort(key=lambda n: n.name)
    no_trunc = cmd.boolean("no-trunc")
    template = cmd.string("format") or ("{{.ID}}" if cmd.boolean("quiet") else LS_TABLE)
    if template == "json":
        template = "{{json .}}"
    elif template == "table":
        template = LS_TABLE
    out(common.render(template, [_row(n, no_trunc) for n in found], LS_HEADER))
    return 0


def _select(ctx: Context, nets: list[NetworkRecord], filters: list[tuple[str, str]]) -> list[NetworkRecord]:
    from ketch.engine import networks

    for key, value in filters:
        if key == "name":
            nets = [n for n in nets if value in n.name]
        elif key == "id":
            nets = [n for n in nets if n.id.startswith(value)]
        elif key == "driver":
            nets = [n for n in nets if n.driver == value]
        elif key == "label":
            k, sep, v = value.partition("=")
            nets = [n for n in nets if k in n.labels and (not sep or n.labels[k] == v)]
        elif key == "type":
            if value not in ("builtin", "custom"):
                raise InvalidArgument(f"invalid filter: 'type'='{value}'")
            nets = [n for n in nets if (n.name in ("bridge", "host", "none")) == (value == "builtin")]
        elif key == "dangling":
            used = networks.referenced(ctx)
            want = value.lower() in ("1", "true")
            nets = [
                n for n in nets if n.name not in ("bridge", "host", "none") and (n.id not in used) == want
            ]
        else:
            raise InvalidArgument(f"invalid filter '{key}'")
    return nets


def _row(net: NetworkRecord, no_trunc: bool) -> dict[str, Any]:
    labels = ",".join(f"{k}={v}" for k, v in sorted(net.labels.items()))
    return {"ID": net.id if no_trunc else net.id[:12], "Name": net.name, "Driver": net.driver, "Scope": "local",
            "IPv6": str(net.ipv6).lower(), "Internal": str(net.internal).lower(), "Labels": labels,
            "CreatedAt": net.created}  # fmt: skip


@command(Flag("format", short="f", value=True), Flag("verbose", short="v"))
def inspect(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import networks

    if not cmd.args:
        raise InvalidArgument('"ketch network inspect" requires at least 1 argument')
    ctx = _context(g)
    return common.inspect_each(
        cmd.args, lambda ref: networks.network_json(ctx, networks.get(ctx, ref)), cmd.string("format")
    )


@command(Flag("force", short="f"))
def rm(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import networks

    if not cmd.args:
        raise InvalidArgument('"ketch network rm" requires at least 1 argument')
    ctx = _context(g)
    status = 0
    for ref in cmd.args:
        try:
            networks.remove(ctx, ref)
        except KetchError as exc:
            if cmd.boolean("force") and "not found" in str(exc):
                continue
            common.daemon_error(exc)
            status = 1
            continue
        out(ref)
    return status


@command(Flag("force", short="f"), Flag("filter", value=True, multi=True))
def prune(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import networks

    if cmd.args:
        raise InvalidArgument('"ketch network prune" accepts no arguments')
    ctx = _context(g)
    warning = "WARNING! This will remove all custom networks not used by at least one container."
    if not cmd.boolean("force") and not common.confirm(warning):
        return 0
    candidates = _select(ctx, networks.ensure_predefined(ctx).all(), common.filters(cmd.strings("filter")))
    keep = {n.id for n in networks.ensure_predefined(ctx).all()} - {n.id for n in candidates}
    removed = networks.prune(ctx, set(networks.referenced(ctx)) | keep)
    if removed:
        out("Deleted Networks:\n" + "\n".join(n.name for n in removed) + "\n")
    return 0


@command(Flag("alias", value=True, multi=True), Flag("ip", value=True), Flag("ip6", value=True),
         Flag("link", value=True, multi=True), Flag("link-local-ip", value=True, multi=True))  # fmt: skip
def connect(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import networks

    if len(cmd.args) != 2:
        raise InvalidArgument('"ketch network connect" requires exactly 2 arguments')
    if cmd.strings("link"):
        raise InvalidArgument("--link is not supported: use a user-defined network and container names")
    ctx = _context(g)
    try:
        record = ctx.containers().find(cmd.args[1])
        networks.connect(
            ctx, record, cmd.args[0], tuple(cmd.strings("alias")), cmd.string("ip"), cmd.string("ip6")
        )
    except KetchError as exc:
        common.daemon_error(exc)
        return 1
    return 0


@command(Flag("force", short="f"))
def disconnect(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import networks

    if len(cmd.args) != 2:
        raise InvalidArgument('"ketch network disconnect" requires exactly 2 arguments')
    ctx = _context(g)
    try:
        record = ctx.containers().find(cmd.args[1])
        networks.disconnect(ctx, record, cmd.args[0], cmd.boolean("force"))
    except KetchError as exc:
        common.daemon_error(exc)
        return 1
    return 0


@command()
def port(g: Parsed, cmd: Parsed) -> int:
    """`port CONTAINER [PRIVATE_PORT[/PROTO]]`: Docker's "80/tcp -> 0.0.0.0:8080" lines."""
    from ketch.engine import networks

    if not 1 <= len(cmd.args) <= 2:
        raise InvalidArgument('"ketch port" requires at least 1 and at most 2 arguments')
    ctx = _context(g)
    try:
        record = ctx.containers().find(cmd.args[0])
    except KetchError as exc:
        common.daemon_error(exc)
        return 1
    bindings = networks.published(ctx, record.id) if ctx.containers().state(record.id).running else []
    if len(cmd.args) == 2:
        want = cmd.args[1] if "/" in cmd.args[1] else f"{cmd.args[1]}/tcp"
        chosen = [b for b in bindings if b.key == want]
        if not chosen:
            sys.stderr.write(f"Error: No public port '{want}' published for {cmd.args[0]}\n")
            return 1
        out("\n".join(f"{b.host_ip or '0.0.0.0'}:{b.host_port}" for b in chosen))
        return 0
    bindings.sort(key=lambda b: (b.container_port, b.protocol))
    out("\n".join(f"{b.key} -> {b.host_ip or '0.0.0.0'}:{b.host_port}" for b in bindings))
    return 0
