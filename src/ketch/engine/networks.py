"""Networks and each container's place on them: Docker's bridge networking, daemonless.

    network create ──▶ <root>/networks/<id>.json, a Linux bridge, firewall rules
    start (setup child) ──▶ endpoints: addresses from IPAM, published ports ──▶ /etc/hosts,
                            resolv.conf ──▶ runtime.create ──▶ veth pair into the init's netns
    exit (monitor) ──▶ endpoints dropped, rules re-rendered; the veths die with the netns

The predefined networks are Docker's: `bridge` (the default; device ketch0, made on first
use), `host` and `none`. A container's networks are recorded at create time in its HostConfig
(`KetchNetworks`, in order: the first one carries the default route and the published ports)
and changed by connect/disconnect. User-defined networks get the embedded DNS resolver
(`ketch.network.dnsd`, listening on each network's gateway); the default bridge does not, as
with Docker.
"""

from __future__ import annotations

import os

from ketch.engine.context import engine_config
from ketch.errors import Conflict, InvalidArgument, KetchError, NotFound
from ketch.network.store import DEFAULT, PREDEFINED, Endpoint, NetworkRecord, NetworkStore, Subnet
from ketch.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from ketch.engine.containers import ContainerRecord
    from ketch.engine.context import Context
    from ketch.engine.options import RunOptions
    from ketch.network.ports import PortBinding

DEFAULT_BRIDGE = "ketch0"
HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
)
FALLBACK_DNS = ("8.8.8.8", "8.8.4.4")  # Docker's, when the host has no usable resolver


class Attachment(Record):
    """A container's membership of one network, as recorded in its HostConfig."""

    network: str  # network id
    name: str  # network name
    aliases: tuple[str, ...] = ()
    ipv4: str = ""  # --ip
    ipv6: str = ""  # --ip6
    mac: str = ""

    def to_json(self) -> dict[str, Any]:
        return {**self.to_dict(), "aliases": list(self.aliases)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Attachment:
        return cls(**{**doc, "aliases": tuple(doc.get("aliases", ()))})


def store(ctx: Context) -> NetworkStore:
    return NetworkStore(ctx.root, ctx.runroot)


def _tag(ctx: Context) -> str:
    """ "" for the default runtime root; otherwise a short hash of it, which names this engine's
    default bridge and firewall chains so that two engines on one host never share them."""
    if os.path.realpath(ctx.runroot) == "/run/ketch":
        return ""
    from ketch.oci.digest import small_hex  # not hashlib: OpenSSL's load is not worth 6 hex digits

    return small_hex(os.path.realpath(ctx.runroot).encode())[:6]


def chain_prefix(ctx: Context) -> str:
    return f"KETCH{_tag(ctx)}"


def default_bridge(ctx: Context) -> str:
    tag = _tag(ctx)
    return str(engine_config(ctx.root).get("bridge") or (f"ketch{tag}" if tag else DEFAULT_BRIDGE))


# --- networks --------------------------------------------------------------------------------------


def ensure_predefined(ctx: Context) -> NetworkStore:
    """Records for bridge, host and none (made once; the bridge device itself waits for a container)."""
    s = store(ctx)
    if set(PREDEFINED) <= {n.name for n in s.all()}:  # one read of the records on every run
        return s
    config = engine_config(ctx.root)
    with s.lock():
        existing = {n.name for n in s.all()}
        for name in PREDEFINED:
            if name in existing:
                continue
            subnets: tuple[Subnet, ...] = ()
            if name == DEFAULT:
                subnets = (_default_subnet(config.get("bip") or "", s),)
            driver = {"bridge": "bridge", "host": "host", "none": "null"}[name]
            s.add(_new_record(name, driver, default_bridge(ctx) if name == DEFAULT else "", subnets))
    return s


def _default_subnet(bip: str, s: NetworkStore) -> Subnet:
    """engine.json's "bip" (Docker's: the bridge's address with its prefix, "10.87.0.1/16"), or
    ketch's default subnet, or, when the host already routes that one, the first free pool subnet."""
    from ketch.network import ipam

    if not bip:
        taken = _taken(s)
        pools = (
            (ipam.DEFAULT_BRIDGE_SUBNET, ipam.prefix_of(ipam.DEFAULT_BRIDGE_SUBNET)),
            *ipam.DEFAULT_POOLS,
        )
        subnet = ipam.choose_subnet(pools, taken)
        return Subnet(subnet, ipam.default_gateway(subnet))
    import ipaddress

    try:
        iface = ipaddress.ip_interface(bip)
    except ValueError:
        raise InvalidArgument(f"invalid bip in engine.json: {bip}") from None
    return Subnet(str(iface.network), str(iface.ip))


def _taken(s: NetworkStore) -> list[str]:
    """Subnets a new network must not overlap: the other networks', and the host's routes (the
    routes of this engine's own bridges are its networks already)."""
    from ketch.network import ipam

    nets = s.all()
    own = [n.bridge for n in nets if n.bridge]
    return [x.subnet for n in nets for x in n.subnets] + ipam.host_routes(ignore=own)


def _new_record(
    name: str, driver: str, bridge: str, subnets: tuple[Subnet, ...], **more: Any
) -> NetworkRecord:
    from ketch.clock import rfc3339

    network_id = os.urandom(32).hex()
    if driver == "bridge" and not bridge:
        bridge = f"ketch-{network_id[:9]}"
    return NetworkRecord(network_id, name, rfc3339(), bridge, subnets, driver=driver, **more)


def get(ctx: Context, ref: str) -> NetworkRecord:
    return ensure_predefined(ctx).get(ref)


def create(
    ctx: Context, name: str, *, driver: str = "bridge", subnets: Iterable[tuple[str, str, str]] = (),
    internal: bool = False, ipv6: bool = False, labels: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
) -> NetworkRecord:  # fmt: skip
    """`network create`: the record, then the bridge and its rules; a failure leaves neither."""
    from ketch.network import ipam
    from ketch.network.store import check_name

    check_name(name)
    if driver != "bridge":
        raise InvalidArgument(f'plugin "{driver}" not found: only the bridge driver can create networks')
    s = ensure_predefined(ctx)
    options = dict(options or {})
    bridge = options.get("com.docker.network.bridge.name", "")
    if bridge and (len(bridge) > 15 or "/" in bridge or " " in bridge):
        raise InvalidArgument(f"invalid bridge name: {bridge}")
    with s.lock():
        others = s.all()
        if any(n.name == name for n in others):
            raise Conflict(f"network with name {name} already exists")
        taken = _taken(s)
        chosen: list[Subnet] = []
        for subnet, gateway, ip_range in subnets:
            ipam.check_config(subnet, gateway, ip_range)
            clash = next((t for t in taken if ipam.overlaps(subnet, t)), None)
            if clash is not None:
                raise Conflict(
                    f"invalid pool request: Pool overlaps with other one on this address space ({clash})"
                )
            chosen.append(Subnet(subnet, gateway or ipam.default_gateway(subnet), ip_range))
            taken.append(subnet)
        config = engine_config(ctx.root)
        if not any(not c.ipv6 for c in chosen):
            pools = [(p["base"], int(p["size"])) for p in config.get("default-address-pools") or []]
            subnet = ipam.choose_subnet(pools or ipam.DEFAULT_POOLS, taken)
            chosen.insert(0, Subnet(subnet, ipam.default_gateway(subnet)))
        if ipv6 and not any(c.ipv6 for c in chosen):
            subnet = ipam.choose_subnet(ipam.DEFAULT_IPV6_POOLS, taken)
            chosen.append(Subnet(subnet, ipam.default_gateway(subnet)))
        if any(c.ipv6 for c in chosen) and not ipv6:
            raise InvalidArgument("an IPv6 subnet needs --ipv6")
        record = _new_record(name, "bridge", bridge, tuple(chosen), internal=internal, ipv6=ipv6,
                             labels=dict(labels or {}), options=options)  # fmt: skip
        if any(n.bridge == record.bridge for n in others if n.bridge):
            raise Conflict(f"bridge {record.bridge} is already used by another network")
        s.add(record)
        try:
            _bring_up(ctx, record)
        except BaseException:
            _tear_down(ctx, record)
            s.remove(record)
            raise
    return record


def remove(ctx: Context, ref: str) -> NetworkRecord:
    s = ensure_predefined(ctx)
    net = s.get(ref)
    if net.name in PREDEFINED:
        raise Conflict(f"{net.name} is a pre-defined network and cannot be removed")
    with s.lock(), s.endpoint_lock(net.id):
        live = [e for e in s.endpoints(net.id) if _alive(ctx, e)]
        if live:
            raise Conflict(
                f"error while removing network: network {net.name} id {net.id} has active endpoints"
            )
        s.remove(net)
        _tear_down(ctx, net)
    return net


def prune(ctx: Context, in_use: set[str]) -> list[NetworkRecord]:
    """Remove user-defined networks no container refers to (running or not)."""
    removed = []
    for net in ensure_predefined(ctx).all():
        if net.name in PREDEFINED or net.id in in_use:
            continue
        try:
            removed.append(remove(ctx, net.id))
        except Conflict:
            continue
    return removed


def referenced(ctx: Context) -> dict[str, list[str]]:
    """Network id -> the ids of containers (running or not) attached to it."""
    out: dict[str, list[str]] = {}
    for record in ctx.containers().all():
        for att in attachments(record):
            out.setdefault(att.network, []).append(record.id)
    return out


def teardown_all(ctx: Context) -> None:
    """Remove every bridge and rule of this engine's networks (tests, `system reset`); records stay."""
    s = store(ctx)
    for net in s.all():
        if net.bridge:
            from ketch.network import bridge

            bridge.remove_bridge(net.bridge)
    _refresh_firewall(ctx, force_empty=True)
    from ketch.network import dnsd

    dnsd.stop(ctx.runroot)


def _bring_up(ctx: Context, net: NetworkRecord) -> None:
    from ketch.network import bridge

    with store(ctx).endpoint_lock(net.id):
        bridge.ensure_bridge(net)
    _refresh_firewall(ctx)
    if _uses_dns(net):
        from ketch.network import dnsd

        dnsd.ensure(ctx.root, ctx.runroot, net.subnets[0].gateway)


def _tear_down(ctx: Context, net: NetworkRecord) -> None:
    from ketch.network import bridge

    if net.bridge:
        bridge.remove_bridge(net.bridge)
    _refresh_firewall(ctx)
    if _uses_dns(net):
        from ketch.network import dnsd

        dnsd.reload(ctx.runroot)


def _uses_dns(net: NetworkRecord) -> bool:
    return net.driver == "bridge" and not net.default


def _refresh_firewall(ctx: Context, force_empty: bool = False) -> None:
    """Re-render ketch's chains from every network with a bridge up and every live endpoint."""
    from ketch.files import FileLock
    from ketch.network import bridge, firewall

    s = store(ctx)
    os.makedirs(s.rundir, exist_ok=True)
    with FileLock(os.path.join(s.rundir, "firewall.lock")):
        nets = [] if force_empty else [n for n in s.all() if n.bridge and bridge.exists(n.bridge)]
        endpoints = [e for n in nets for e in _live_endpoints(ctx, n)] if nets else []
        for family in (4, 6):
            if family == 6 and not any(n.ipv6 for n in nets) and not _had_ipv6(s):
                continue
            firewall.apply(family, [n for n in nets if family == 4 or n.ipv6], endpoints, chain_prefix(ctx))
        _mark_ipv6(s, any(n.ipv6 for n in nets))


def _had_ipv6(s: NetworkStore) -> bool:
    return os.path.exists(os.path.join(s.rundir, "ip6tables"))


def _mark_ipv6(s: NetworkStore, on: bool) -> None:
    path = os.path.join(s.rundir, "ip6tables")
    if on:
        open(path, "a").close()
    elif os.path.exists(path):
        os.unlink(path)


def _live_endpoints(ctx: Context, net: NetworkRecord) -> list[Endpoint]:
    """The network's endpoints whose container still runs; a dead one's file is reclaimed."""
    s = store(ctx)
    out = []
    for ep in s.endpoints(net.id):
        if _alive(ctx, ep):
            out.append(ep)
        else:
            s.drop_endpoint(net.id, ep.container)
    return out


def _alive(ctx: Context, ep: Endpoint) -> bool:
    """Whether the endpoint's container still holds it: its monitor lives, or its init does."""
    from ketch.engine.containers import process_alive

    if ep.monitor and process_alive(ep.monitor, ep.monitor_start):
        return True
    try:
        return ctx.containers().state(ep.container).running
    except KetchError:
        return False


# --- a container's networks --------------------------------------------------------------------------


def plan(ctx: Context, options: RunOptions) -> tuple[str, list[Attachment]]:
    """At create: Docker's NetworkMode and the networks the container joins (checked to exist)."""
    mode = options.network
    if mode == "default":
        mode = DEFAULT
    if mode in ("host", "none"):
        return mode, []
    if mode.startswith("container:"):
        other = ctx.containers().find(mode.partition(":")[2])
        return f"container:{other.id}", []
    net = get(ctx, mode)
    if net.driver in ("host", "null"):
        return net.name if net.driver == "host" else "none", []
    if options.ip or options.ip6:
        if net.default:
            raise InvalidArgument("user specified IP address is supported on user defined networks only")
        for address, six in ((options.ip, False), (options.ip6, True)):
            subnet = net.subnet(six)
            if address and subnet is None:
                raise InvalidArgument(f"no configured subnet contains IP address {address}")
            if address and subnet is not None:
                from ketch.network import ipam

                ipam.check_requested(subnet.subnet, subnet.gateway, address, ())
    if options.aliases and net.default:
        raise InvalidArgument(
            "network-scoped alias is supported only for containers in user defined networks"
        )
    att = Attachment(net.id, net.name, tuple(options.aliases), options.ip, options.ip6, options.mac_address)
    return net.name, [att]


def attachments(record: ContainerRecord) -> list[Attachment]:
    return [Attachment.from_json(a) for a in record.host_config.get("KetchNetworks") or ()]


class Wiring(Record):
    """What one start of a container decided about its network."""

    endpoints: tuple[Endpoint, ...] = ()
    netns: str = ""  # a namespace to join (--network container:), "" for a new one
    hosts: str = ""  # /etc/hosts
    resolv: str = ""  # /etc/resolv.conf
    hostname: str = ""  # with --network container:, the other container's


def wire(ctx: Context, record: ContainerRecord, options: RunOptions, hostname: str,
         ports: Iterable[PortBinding] = (), monitor: tuple[int, int] = (0, 0)) -> Wiring:  # fmt: skip
    """Endpoints on the container's networks (bridges made on first use) and its /etc files;
    undo with release() when a later step fails."""
    mode = record.host_config.get("NetworkMode") or options.network
    if mode.startswith("container:"):
        return _join(ctx, mode.partition(":")[2])
    endpoints: list[Endpoint] = []
    try:
        for index, att in enumerate(attachments(record)):
            endpoints.append(
                _allocate(ctx, record, att, index, tuple(ports) if index == 0 else (), options, monitor)
            )
    except BaseException:
        release(ctx, record.id, endpoints)
        raise
    if any(e.ports for e in endpoints):
        _refresh_firewall(ctx)
    hosts = _hosts(options, hostname, endpoints, mode, ctx)
    return Wiring(tuple(endpoints), "", hosts, _resolv(ctx, options, endpoints, mode))


def _join(ctx: Context, other_id: str) -> Wiring:
    containers = ctx.containers()
    try:
        state = containers.state(other_id)
    except NotFound:
        raise NotFound(f"cannot join network of a non running container: {other_id[:12]}") from None
    if state.status not in ("running", "paused") or not state.pid:
        raise Conflict(f"cannot join network of a non running container: {other_id[:12]}")
    files = {}
    for name in ("hosts", "resolv.conf", "hostname"):
        try:
            with open(containers.path(other_id, name), encoding="utf-8") as f:
                files[name] = f.read()
        except FileNotFoundError:
            files[name] = ""
    return Wiring((), f"/proc/{state.pid}/ns/net", files["hosts"], files["resolv.conf"],
                  files["hostname"].strip())  # fmt: skip


def _allocate(ctx: Context, record: ContainerRecord, att: Attachment, index: int,
              ports: tuple[PortBinding, ...], options: RunOptions, monitor: tuple[int, int]) -> Endpoint:  # fmt: skip
    from ketch.network import bridge, ipam

    s = store(ctx)
    try:
        net = s.get(att.network)
    except NotFound:
        raise NotFound(f"network {att.name} not found") from None
    made = False
    with s.endpoint_lock(net.id):
        if net.bridge and not bridge.exists(net.bridge):
            made = bridge.ensure_bridge(net)
        addresses = {}
        for six in (False, True):
            subnet = net.subnet(six)
            if subnet is None:
                continue
            wanted = att.ipv6 if six else att.ipv4
            addresses[six] = _pick(ctx, s, net, subnet, wanted, record.id)
        ipv4 = addresses.get(False, "")
        ep = Endpoint(
            network=net.id, container=record.id, name=record.name, interface=f"eth{index}",
            veth=f"veth{os.urandom(4).hex()}{index}", mac=att.mac or (ipam.mac_for(ipv4) if ipv4 else ipam.random_mac()),
            ipv4=ipv4, ipv6=addresses.get(True, ""), aliases=att.aliases, ports=ports,
            dns=tuple(options.dns), monitor=monitor[0], monitor_start=monitor[1],
        )  # fmt: skip
        s.put_endpoint(ep)
    if made:
        _refresh_firewall(ctx)
    if _uses_dns(net):
        from ketch.network import dnsd

        dnsd.ensure(ctx.root, ctx.runroot, net.subnets[0].gateway)
    return ep


def _pick(
    ctx: Context, s: NetworkStore, net: NetworkRecord, subnet: Subnet, wanted: str, container_id: str
) -> str:
    """An address for the container (call under the network's endpoint lock); holders that died
    unseen are reclaimed when their address is needed."""
    from ketch.network import ipam

    family = 6 if subnet.ipv6 else 4
    for attempt in (0, 1):
        others = [e for e in s.endpoints(net.id) if e.container != container_id]
        used = [e.ipv6 if subnet.ipv6 else e.ipv4 for e in others]
        try:
            if wanted:
                return ipam.check_requested(subnet.subnet, subnet.gateway, wanted, used)
            chosen = ipam.allocate(
                subnet.subnet, subnet.gateway, subnet.ip_range, used, s.last(net.id, family)
            )
            s.set_last(net.id, family, chosen)
            return chosen
        except Conflict:
            if attempt:
                raise
            for e in others:
                if not _alive(ctx, e):
                    s.drop_endpoint(net.id, e.container)
    raise AssertionError("unreachable")


def plumb(ctx: Context, wiring: Wiring, pid: int) -> None:
    """Give the namespace of the container's init `pid` its interfaces (after runtime.create)."""
    from ketch.network import bridge

    s = store(ctx)
    for index, ep in enumerate(wiring.endpoints):
        bridge.attach(ep, s.get(ep.network), pid, default_route=index == 0)


def release(
    ctx: Context, container_id: str, endpoints: Iterable[Endpoint] | None = None, unplug: bool = False
) -> None:
    """Give back the container's addresses and ports (after it stopped, or a failed start). The
    veth pairs die with the container's namespace; `unplug` deletes them now (disconnecting a
    running container), which costs the kernel an RCU grace period or two."""
    from ketch.network import bridge

    s = store(ctx)
    eps = list(s.endpoints_of(container_id) if endpoints is None else endpoints)
    ported = False
    for ep in eps:
        if unplug:
            bridge.detach(ep)
        with s.endpoint_lock(ep.network):
            s.drop_endpoint(ep.network, container_id)
        ported = ported or bool(ep.ports)
    if ported:
        _refresh_firewall(ctx)


# --- /etc/hosts and /etc/resolv.conf ----------------------------------------------------------------


def _hosts(options: RunOptions, hostname: str, endpoints: list[Endpoint], mode: str, ctx: Context) -> str:
    text = HOSTS_HEADER
    for entry in options.add_hosts:
        name, _, address = entry.partition(":")
        if address == "host-gateway":
            address = _host_gateway(ctx)
        text += f"{address}\t{name}\n"
    if mode == "host":
        return text
    mine = [e.ipv4 or e.ipv6 for e in endpoints[:1] if e.ipv4 or e.ipv6]
    names = hostname + (f" {options.name}" if options.name and options.name != hostname else "")
    text += f"{mine[0]}\t{names}\n" if mine else f"127.0.1.1\t{hostname}\n"
    return text


def _host_gateway(ctx: Context) -> str:
    """--add-host NAME:host-gateway: the default bridge's gateway address, as Docker uses."""
    net = ensure_predefined(ctx).get(DEFAULT)
    subnet = net.subnet(False)
    return subnet.gateway if subnet is not None else "127.0.0.1"


def host_resolv() -> list[str]:
    try:
        with open("/etc/resolv.conf", encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def _resolv(ctx: Context, options: RunOptions, endpoints: list[Endpoint], mode: str) -> str:
    """Docker's resolv.conf: the host's for host networking; on user networks the embedded
    resolver (the network's gateway here); otherwise --dns or the host's non-loopback servers."""
    lines = host_resolv()
    if mode == "host" and not (options.dns or options.dns_search or options.dns_options):
        return "\n".join(lines) + "\n"
    servers = [ln.split()[1] for ln in lines if ln.startswith("nameserver") and len(ln.split()) > 1]
    search = [w for ln in lines if ln.startswith("search") for w in ln.split()[1:]]
    opts = [w for ln in lines if ln.startswith("options") for w in ln.split()[1:]]
    s = store(ctx)
    first = s.find(endpoints[0].network) if endpoints else None
    if first is not None and _uses_dns(first):
        external = list(options.dns) or [x for x in servers if not _loopback(x)] or servers
        servers = [first.subnets[0].gateway]
        comment = f"# ExtServers: [{' '.join(external)}]\n"
    else:
        servers = list(options.dns) or [x for x in servers if not _loopback(x)] or list(FALLBACK_DNS)
        comment = ""
    if options.dns_search:
        search = [] if options.dns_search == (".",) else list(options.dns_search)
    if options.dns_options:
        opts = list(options.dns_options)
    text = "".join(f"nameserver {x}\n" for x in servers)
    text += f"search {' '.join(search)}\n" if search else ""
    text += f"options {' '.join(opts)}\n" if opts else ""
    return text + comment


def _loopback(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


# --- connect, disconnect, inspect -------------------------------------------------------------------


def connect(ctx: Context, record: ContainerRecord, ref: str, aliases: tuple[str, ...] = (),
            ipv4: str = "", ipv6: str = "") -> None:  # fmt: skip
    """`network connect`: record the attachment; a running container gets its interface now."""
    from ketch.engine.create import options_from_json

    net = get(ctx, ref)
    if net.driver != "bridge":
        raise Conflict(
            f"container cannot be connected to network {net.name}: only bridge networks can be joined"
        )
    mode = record.host_config.get("NetworkMode", "")
    if mode in ("host", "none") or mode.startswith("container:"):
        raise Conflict(f"container sharing network namespace with another container or host cannot be connected "
                       f"to any other network ({mode})")  # fmt: skip
    current = attachments(record)
    if any(a.network == net.id for a in current):
        raise Conflict(f"endpoint with name {record.name} already exists in network {net.name}")
    if (ipv4 or ipv6 or aliases) and net.default:
        raise InvalidArgument("user specified IP address is supported on user defined networks only")
    att = Attachment(net.id, net.name, aliases, ipv4, ipv6)
    state = ctx.containers().state(record.id)
    if state.status in ("running", "paused") and state.pid:
        options = options_from_json(record.host_config["Ketch"])
        ep = _allocate(ctx, record, att, _free_index(ctx, record.id), (), options, _monitor_of(state))
        try:
            from ketch.network import bridge

            bridge.attach(ep, net, state.pid, default_route=False)
        except BaseException:
            release(ctx, record.id, [ep], unplug=True)
            raise
    record.host_config["KetchNetworks"] = [a.to_json() for a in [*current, att]]
    ctx.containers().update_record(record)


def disconnect(ctx: Context, record: ContainerRecord, ref: str, force: bool = False) -> None:
    net = get(ctx, ref)
    current = attachments(record)
    if not any(a.network == net.id for a in current):
        if force:
            return
        raise Conflict(f"container {record.id} is not connected to network {net.name}")
    s = store(ctx)
    with s.endpoint_lock(net.id):
        ep = next((e for e in s.endpoints(net.id) if e.container == record.id), None)
    if ep is not None:
        release(ctx, record.id, [ep], unplug=True)
    record.host_config["KetchNetworks"] = [a.to_json() for a in current if a.network != net.id]
    if record.host_config.get("NetworkMode") == net.name:
        remaining = record.host_config["KetchNetworks"]
        record.host_config["NetworkMode"] = remaining[0]["name"] if remaining else "none"
    ctx.containers().update_record(record)


def _free_index(ctx: Context, container_id: str) -> int:
    used = {int(e.interface[3:]) for e in store(ctx).endpoints_of(container_id) if e.interface[3:].isdigit()}
    return next(i for i in range(len(used) + 1) if i not in used)


def _monitor_of(state: Any) -> tuple[int, int]:
    return int(state.monitor or 0), int(state.monitor_start or 0)


def container_settings(ctx: Context, record: ContainerRecord, running: bool) -> dict[str, Any]:
    """Docker's NetworkSettings for inspect."""
    from ketch.network import ports

    live = {e.network: e for e in store(ctx).endpoints_of(record.id)} if running else {}
    nets: dict[str, Any] = {}
    for att in attachments(record):
        ep = live.get(att.network)
        net = store(ctx).find(att.network)
        nets[att.name] = _endpoint_json(att, ep, net)
    if record.host_config.get("NetworkMode") in ("host", "none"):
        nets[record.host_config["NetworkMode"]] = _endpoint_json(Attachment("", ""), None, None)
    first = next(iter(live.values()), None)
    exposed = list((record.config.get("ExposedPorts") or {}).keys())
    bindings = [p for e in live.values() for p in e.ports]
    main = nets.get(next(iter(nets), ""), {}) if nets else {}
    return {
        "Bridge": "", "SandboxID": "", "SandboxKey": "", "HairpinMode": False,
        "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
        "Ports": ports.docker_ports(bindings, exposed) if running else {},
        "EndpointID": main.get("EndpointID", "") if first else "",
        "Gateway": main.get("Gateway", ""), "IPAddress": main.get("IPAddress", ""),
        "IPPrefixLen": main.get("IPPrefixLen", 0), "MacAddress": main.get("MacAddress", ""),
        "GlobalIPv6Address": main.get("GlobalIPv6Address", ""),
        "GlobalIPv6PrefixLen": main.get("GlobalIPv6PrefixLen", 0), "IPv6Gateway": main.get("IPv6Gateway", ""),
        "Networks": nets,
    }  # fmt: skip


def _endpoint_json(att: Attachment, ep: Endpoint | None, net: NetworkRecord | None) -> dict[str, Any]:
    v4 = net.subnet(False) if net is not None else None
    v6 = net.subnet(True) if net is not None else None
    have = ep is not None
    return {
        "IPAMConfig": {"IPv4Address": att.ipv4, "IPv6Address": att.ipv6} if att.ipv4 or att.ipv6 else None,
        "Links": None, "Aliases": list(att.aliases) or None, "MacAddress": ep.mac if ep else "",
        "NetworkID": att.network, "EndpointID": (ep.container[:32] + att.network[:32]) if ep else "",
        "Gateway": v4.gateway if have and v4 and ep and ep.ipv4 else "",
        "IPAddress": ep.ipv4 if ep else "", "IPPrefixLen": int(v4.subnet.split("/")[1]) if have and v4 and ep and ep.ipv4 else 0,
        "IPv6Gateway": v6.gateway if have and v6 and ep and ep.ipv6 else "",
        "GlobalIPv6Address": ep.ipv6 if ep else "",
        "GlobalIPv6PrefixLen": int(v6.subnet.split("/")[1]) if have and v6 and ep and ep.ipv6 else 0,
        "DNSNames": ([ep.name, ep.container[:12], *att.aliases] if ep and net is not None and _uses_dns(net) else None),
    }  # fmt: skip


def network_json(ctx: Context, net: NetworkRecord) -> dict[str, Any]:
    """Docker's network inspect object."""
    containers = {}
    for ep in _live_endpoints(ctx, net) if net.driver == "bridge" else []:
        v4, v6 = net.subnet(False), net.subnet(True)
        containers[ep.container] = {
            "Name": ep.name, "EndpointID": ep.container[:32] + net.id[:32], "MacAddress": ep.mac,
            "IPv4Address": f"{ep.ipv4}/{v4.subnet.split('/')[1]}" if ep.ipv4 and v4 else "",
            "IPv6Address": f"{ep.ipv6}/{v6.subnet.split('/')[1]}" if ep.ipv6 and v6 else "",
        }  # fmt: skip
    options = dict(net.options)
    if net.bridge:
        options.setdefault("com.docker.network.bridge.name", net.bridge)
    return {
        "Name": net.name, "Id": net.id, "Created": net.created,
        "Scope": "local", "Driver": net.driver, "EnableIPv6": net.ipv6,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [
            {"Subnet": s.subnet, "Gateway": s.gateway, **({"IPRange": s.ip_range} if s.ip_range else {})}
            for s in net.subnets]},
        "Internal": net.internal, "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
        "ConfigOnly": False, "Containers": containers, "Options": options, "Labels": dict(net.labels),
    }  # fmt: skip


def published(ctx: Context, container_id: str) -> list[PortBinding]:
    """`port`: the container's published ports while it runs."""
    return [p for e in store(ctx).endpoints_of(container_id) for p in e.ports]


def port_requests(record: ContainerRecord, options: RunOptions) -> list[PortBinding]:
    """The ports a start must reserve: -p, and with -P every exposed port on a random host port.
    Only a container with networks of its own publishes (Docker drops -p with --network host)."""
    from ketch.network import ports

    if not attachments(record):
        return []
    wanted = [b for spec in options.publish for b in ports.parse(spec)]
    if options.publish_all:
        keys = list(record.config.get("ExposedPorts") or {})
        have = {b.key for b in wanted}
        wanted += [b for b in ports.exposed(keys) if b.key not in have]
    return wanted
