"""IP address management, pure: subnets for new networks and addresses for endpoints.

Networks take their subnet from the user (`--subnet`) or from the address pools (Docker's
`default-address-pools`: a base split into subnets of one size), skipping every subnet that
overlaps another network or a route of the host. Endpoints take the next free address after
the last one handed out (Docker's sequential allocator), so an address just released is not
reused at once while a dying namespace may still hold it.
"""

from __future__ import annotations

import ipaddress

from ketch.errors import Conflict, InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    Net = ipaddress.IPv4Network | ipaddress.IPv6Network
    Addr = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_BRIDGE_SUBNET = "10.87.0.0/16"  # ketch0; Docker's docker0 takes 172.17.0.0/16, podman's 10.88.0.0/16
DEFAULT_POOLS = (("10.90.0.0/15", 24),)  # user networks: 10.90.0.0/24 ... 10.91.255.0/24
DEFAULT_IPV6_POOLS = (("fd87:6b65:7463::/48", 64),)


def network(text: str, what: str = "subnet") -> Net:
    """A subnet in CIDR form; host bits must be zero, as Docker insists."""
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise InvalidArgument(f"invalid {what} {text}: {exc}") from None


def address(text: str, what: str = "address") -> Addr:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"invalid {what}: {text}") from None


def overlaps(a: str, b: str) -> bool:
    x, y = ipaddress.ip_network(a), ipaddress.ip_network(b)
    return x.version == y.version and x.overlaps(y)


def choose_subnet(pools: Iterable[tuple[str, int]], taken: Iterable[str]) -> str:
    """The first subnet of the pools that overlaps none of `taken` (networks and host routes)."""
    busy = [ipaddress.ip_network(t, strict=False) for t in taken]
    for base_text, size in pools:
        base = ipaddress.ip_network(base_text)
        if size < base.prefixlen:
            raise InvalidArgument(f"address pool {base_text}: size /{size} is larger than the pool")
        for candidate in base.subnets(new_prefix=size):
            if not any(candidate.version == b.version and candidate.overlaps(b) for b in busy):
                return str(candidate)
    raise Conflict("all predefined address pools have been fully subnetted")


def default_gateway(subnet: str) -> str:
    """The first host address, Docker's choice of gateway."""
    return str(next(iter(_hosts(ipaddress.ip_network(subnet)))))


def check_config(subnet: str, gateway: str, ip_range: str) -> None:
    """A network's IPAM config makes sense: the gateway and the range are inside the subnet."""
    net = network(subnet)
    if gateway and address(gateway, "gateway") not in net:
        raise InvalidArgument(f"gateway {gateway} is not in subnet {subnet}")
    if ip_range:
        pool = network(ip_range, "ip-range")
        if pool.version != net.version or not pool.subnet_of(net):  # type: ignore[arg-type]
            raise InvalidArgument(f"ip-range {ip_range} is not in subnet {subnet}")


def allocate(subnet: str, gateway: str, ip_range: str, used: Iterable[str], last: str = "") -> str:
    """The next free address after `last` in the range (or the subnet), wrapping around once."""
    net = ipaddress.ip_network(subnet)
    pool = ipaddress.ip_network(ip_range) if ip_range else net
    skip = {str(u) for u in used} | {gateway}
    first, end = int(pool.network_address), int(pool.broadcast_address)
    if net.version == 4 and net.prefixlen < 31:
        first, end = max(first, int(net.network_address) + 1), min(end, int(net.broadcast_address) - 1)
    elif net.version == 6:
        first = max(first, int(net.network_address) + 1)  # the subnet-router anycast address
    start = int(ipaddress.ip_address(last)) + 1 if last else first
    if not first <= start <= end:
        start = first
    cls = type(net.network_address)
    for value in _wrapped(start, first, end):
        text = str(cls(value))
        if text not in skip:
            return text
    raise Conflict(f"no available IPv{net.version} addresses on this network's address pools: {subnet}")


def _wrapped(start: int, first: int, end: int) -> Iterable[int]:
    limit = 1 << 20  # a /64 is not walked to its end: a million busy addresses mean none is free
    yield from range(start, min(end, start + limit) + 1)
    yield from range(first, min(start, first + limit))


def check_requested(subnet: str, gateway: str, ip: str, used: Iterable[str]) -> str:
    """`--ip`: inside the subnet, not the gateway, not taken."""
    net, addr = ipaddress.ip_network(subnet), address(ip, "IP address")
    if addr not in net:
        raise InvalidArgument(f"requested IP {ip} is not in subnet {subnet}")
    if ip == gateway or addr == net.network_address or (net.version == 4 and addr == net.broadcast_address):
        raise InvalidArgument(f"requested IP {ip} is reserved in subnet {subnet}")
    if ip in set(used):
        raise Conflict(f"address already in use: {ip}")
    return str(addr)


def mac_for(ipv4: str) -> str:
    """02:42 and the four bytes of the IPv4 address: Docker's classic, stable, locally administered MAC."""
    parts = [int(p) for p in ipv4.split(".")]
    return "02:42:" + ":".join(f"{p:02x}" for p in parts)


def random_mac() -> str:
    import os

    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{b:02x}" for b in raw)


def prefix_of(subnet: str) -> int:
    return int(subnet.rsplit("/", 1)[1])


def host_routes(path: str = "/proc/net/route", ignore: Iterable[str] = ()) -> list[str]:
    """The host's IPv4 routes other than the default one and those of the devices in `ignore`,
    as CIDRs (subnets to stay clear of)."""
    skip = set(ignore)
    routes: list[str] = []
    try:
        with open(path) as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) < 8 or fields[0] in skip:
                    continue
                dest, mask = int(fields[1], 16), int(fields[7], 16)
                if mask == 0:
                    continue
                net = ipaddress.IPv4Network(
                    (int.from_bytes(dest.to_bytes(4, "little"), "big"), bin(mask).count("1")), strict=False
                )
                routes.append(str(net))
    except OSError:
        pass
    return routes


def _hosts(net: Net) -> Iterable[Addr]:
    if net.version == 4 and net.prefixlen >= 31:
        return iter(net)
    return net.hosts()
