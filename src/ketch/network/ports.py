"""Published ports: Docker's `-p` syntax, parsed (pure), and host ports reserved with sockets.

    -p [ip:][host_port[-end]:]container_port[-end][/tcp|udp|sctp]

A host port is reserved by binding a socket to it (never listening: the firewall's DNAT takes
the traffic before any socket sees it). The container's monitor holds those sockets for as long
as the container runs, as conmon does, so a second container, or any other program, asking for
the same port gets "port is already allocated" instead of a silent clash.
"""

from __future__ import annotations

from ketch.errors import Conflict, InvalidArgument
from ketch.record import Record, replace

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Iterable

PROTOCOLS = ("tcp", "udp", "sctp")


class PortBinding(Record):
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""  # "" for every address of the host
    host_port: int = 0  # 0 until reserved: a random port
    host_port_end: int = 0  # a host range to choose from, for one container port ("8000-8010:80")

    @property
    def key(self) -> str:
        """Docker's port key, "80/tcp"."""
        return f"{self.container_port}/{self.protocol}"


def parse(spec: str) -> list[PortBinding]:
    """One -p value, as bindings (a range gives one per port)."""
    text, _, protocol = spec.partition("/")
    protocol = protocol.lower() or "tcp"
    if protocol not in PROTOCOLS:
        raise InvalidArgument(f"invalid proto: {protocol}")
    host_ip, host, container = _split(text, spec)
    c_first, c_last = _range(container, spec)
    if not host:
        return [PortBinding(p, protocol, host_ip) for p in range(c_first, c_last + 1)]
    h_first, h_last = _range(host, spec)
    if c_first == c_last and h_first != h_last:
        return [PortBinding(c_first, protocol, host_ip, h_first, h_last)]
    if h_last - h_first != c_last - c_first:
        raise InvalidArgument(f"invalid ranges specified for container and host Ports: {spec}")
    return [
        PortBinding(c, protocol, host_ip, h)
        for c, h in zip(range(c_first, c_last + 1), range(h_first, h_last + 1), strict=True)
    ]


def _split(text: str, spec: str) -> tuple[str, str, str]:
    """(host ip, host part, container part) of "ip:host:container", "[v6]:host:container"..."""
    host_ip = ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise InvalidArgument(f"invalid IP address in port spec: {spec}")
        host_ip, text = text[1:end], text[end + 2 :]
        parts = text.split(":")
        if len(parts) != 2:
            raise InvalidArgument(f"invalid port format: {spec}")
        return _check_ip(host_ip, spec), parts[0], parts[1]
    parts = text.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3:
        return _check_ip(parts[0], spec) if parts[0] else "", parts[1], parts[2]
    raise InvalidArgument(f"invalid port format: {spec}")


def _check_ip(text: str, spec: str) -> str:
    import socket

    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, text))
        except OSError:
            continue
    raise InvalidArgument(f"invalid IP address: {text} (in {spec})")


def _range(text: str, spec: str) -> tuple[int, int]:
    first, dash, last = text.partition("-")
    try:
        a, b = int(first), int(last) if dash else int(first)
    except ValueError:
        raise InvalidArgument(f"invalid port format: {spec}") from None
    if not (0 < a <= 65535 and 0 < b <= 65535) or b < a:
        raise InvalidArgument(f"invalid port range: {text} (in {spec})")
    return a, b


def exposed(ports: Iterable[str]) -> list[PortBinding]:
    """-P: a random host port for each exposed "80/tcp" (the image's EXPOSE and --expose)."""
    out = []
    for key in ports:
        number, _, protocol = key.partition("/")
        first, last = _range(number, key)
        out += [PortBinding(p, protocol or "tcp") for p in range(first, last + 1)]
    return out


def reserve(bindings: Iterable[PortBinding]) -> tuple[list[PortBinding], list[socket.socket]]:
    """Bind a socket to each binding's host port (a random one when 0); the bindings with their
    ports, and the sockets that hold them. On a clash nothing stays bound."""
    done: list[PortBinding] = []
    held: list[socket.socket] = []
    try:
        for b in bindings:
            sock = _bind(b)
            held.append(sock)
            done.append(replace(b, host_port=sock.getsockname()[1], host_port_end=0))
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return done, held


def _bind(b: PortBinding) -> socket.socket:
    import errno
    import socket

    family = socket.AF_INET6 if ":" in b.host_ip else socket.AF_INET
    kind = socket.SOCK_DGRAM if b.protocol == "udp" else socket.SOCK_STREAM
    ip = b.host_ip or "0.0.0.0"
    candidates = range(b.host_port, (b.host_port_end or b.host_port) + 1)
    error: OSError | None = None
    for port in candidates:
        sock = socket.socket(family, kind, socket.IPPROTO_SCTP if b.protocol == "sctp" else 0)
        try:
            sock.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: an address the host may add later
            sock.bind((ip, port))
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    if error is not None and error.errno == errno.EADDRINUSE:
        where = f"{ip}:{b.host_port}" + (f"-{b.host_port_end}" if b.host_port_end else "")
        raise Conflict(f"Bind for {where} failed: port is already allocated") from None
    raise Conflict(f"cannot bind {ip}:{b.host_port}/{b.protocol}: {error}") from None


def docker_ports(
    bindings: Iterable[PortBinding], exposed_keys: Iterable[str] = ()
) -> dict[str, list[dict[str, str]] | None]:
    """NetworkSettings.Ports: each published port with where it is bound; exposed ones map to None."""
    out: dict[str, list[dict[str, str]] | None] = {key: None for key in exposed_keys}
    for b in bindings:
        entries = out.get(b.key) or []
        entries.append({"HostIp": b.host_ip or "0.0.0.0", "HostPort": str(b.host_port)})
        out[b.key] = entries
    return out
