"""Embedded DNS for container networks: the role of Docker's 127.0.0.11 resolver and aardvark-dns.

One single-threaded server listens (UDP and TCP) on any number of addresses, say one per network
gateway, and asks a `Resolver` about each query. Names it owns are answered at once (A, AAAA, PTR;
NODATA for other types); everything else is forwarded to the resolver's upstreams, over UDP from a
fresh socket (random source port and ID) or over TCP for TCP clients, trying the next upstream after
`timeout` seconds and answering SERVFAIL after the last. The wire format (RFC 1035, EDNS per RFC 6891)
is written by hand with struct. `serve()` runs one poll round so the caller owns the loop and its
housekeeping; nothing that arrives on the wire makes it raise: failures are counted in `errors`.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from functools import partial

from ketch.errors import CorruptContent, InvalidArgument, SetupFailed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Protocol

    class Resolver(Protocol):
        def local(self, server_ip: str, client_ip: str, name: str) -> tuple[list[str], list[str]] | None:
            """(ipv4 addresses, ipv6 addresses) when `name` (lower case, no trailing dot) is ours on the
            network served at server_ip; None to forward."""

        def reverse(self, server_ip: str, client_ip: str, address: str) -> str | None:
            """The name for a PTR lookup of `address` (an IP string), or None to forward."""

        def upstreams(self, server_ip: str, client_ip: str) -> list[tuple[str, int]]:
            """Where to forward other queries, in order."""


A, NS, CNAME, PTR, AAAA, OPT, ANY = 1, 2, 5, 12, 28, 41, 255
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 1, 2, 3, 4
TTL = 600  # for local answers
UDP_LIMIT = 512  # a UDP answer's size without EDNS (RFC 1035 4.2.1)
EDNS_SIZE = 1232  # the UDP size we advertise in our own OPT record
MAX_MESSAGE = 65535
MAX_TCP_CLIENTS = 256

_QR, _OPCODE, _AA, _TC, _RD, _RA = 0x8000, 0x7800, 0x0400, 0x0200, 0x0100, 0x0080
_HEADER = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
_QUESTION = struct.Struct("!HH")  # type, class
_RR = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_U16 = struct.Struct("!H")
_OPT_RR = b"\x00" + _RR.pack(OPT, EDNS_SIZE, 0, 0)  # root owner, no options
_MAX_JUMPS = 32
_SOL_IP, _IP_FREEBIND, _SOL_IPV6, _IPV6_FREEBIND = 0, 15, 41, 78
_POLLIN, _POLLOUT, _POLLDEAD = select.POLLIN, select.POLLOUT, select.POLLHUP | select.POLLERR


class Message:
    """A parsed message: header, the question, answers as (name, type, ttl, text) and the EDNS size."""

    __slots__ = ("answers", "edns", "flags", "id", "labels", "name", "qclass", "qtype")

    def __init__(self, id: int, flags: int, labels: list[bytes], qtype: int, qclass: int) -> None:
        self.id = id
        self.flags = flags
        self.labels = labels  # the question's labels as sent (their case kept for the echo)
        self.name = _join(labels).lower()
        self.qtype = qtype
        self.qclass = qclass
        self.answers: list[tuple[str, int, int, str]] = []
        self.edns: int | None = None  # the OPT record's UDP payload size; None without one

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    def __repr__(self) -> str:
        return f"Message(id={self.id}, flags={self.flags:#06x}, name={self.name!r}, qtype={self.qtype})"


def _label_text(label: bytes) -> str:
    """A label in presentation form: '.', '\\' and unprintable bytes as \\DDD."""
    return "".join(chr(b) if 0x21 <= b <= 0x7E and b not in (0x2E, 0x5C) else f"\\{b:03d}" for b in label)


def _join(labels: list[bytes]) -> str:
    return ".".join(_label_text(label) for label in labels)


def _read_name(data: bytes, pos: int) -> tuple[list[bytes], int]:
    """The labels of the name at pos and the offset after it.

    Each compression pointer must point before the previous jump's target, so loops cannot form."""
    labels: list[bytes] = []
    end = -1
    floor = pos  # pointers must land strictly below this
    size = 1
    jumps = 0
    while True:
        if pos >= len(data):
            raise CorruptContent("dns: name runs past the end of the message")
        length = data[pos]
        if length >= 0xC0:
            if pos + 1 >= len(data):
                raise CorruptContent("dns: truncated compression pointer")
            target = (length & 0x3F) << 8 | data[pos + 1]
            jumps += 1
            if target >= floor or jumps > _MAX_JUMPS:
                raise CorruptContent("dns: compression pointer loop")
            if end < 0:
                end = pos + 2
            pos = floor = target
            continue
        if length > 63:
            raise CorruptContent(f"dns: bad label length {length:#x}")
        pos += 1
        if length == 0:
            return labels, (end if end >= 0 else pos)
        size += length + 1
        if size > 255 or pos + length > len(data):
            raise CorruptContent("dns: name too long or truncated")
        labels.append(data[pos : pos + length])
        pos += length


def _rdata_text(data: bytes, pos: int, rtype: int, rdlen: int) -> str:
    if rtype == A and rdlen == 4:
        return socket.inet_ntop(socket.AF_INET, data[pos : pos + 4])
    if rtype == AAAA and rdlen == 16:
        return socket.inet_ntop(socket.AF_INET6, data[pos : pos + 16])
    if rtype in (PTR, CNAME, NS):
        return _join(_read_name(data, pos)[0])
    return data[pos : pos + rdlen].hex()


def _parse(data: bytes) -> Message:
    if len(data) < _HEADER.size:
        raise CorruptContent("dns: message shorter than its header")
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if qdcount > 1:
        raise CorruptContent("dns: more than one question")
    labels: list[bytes] = []
    pos, qtype, qclass = _HEADER.size, 0, 0
    if qdcount:
        labels, pos = _read_name(data, pos)
        if pos + _QUESTION.size > len(data):
            raise CorruptContent("dns: truncated question")
        qtype, qclass = _QUESTION.unpack_from(data, pos)
        pos += _QUESTION.size
    msg = Message(ident, flags, labels, qtype, qclass)
    for section, count in enumerate((ancount, nscount, arcount)):
        for _ in range(count):
            owner, pos = _read_name(data, pos)
            if pos + _RR.size > len(data):
                raise CorruptContent("dns: truncated resource record")
            rtype, rclass, ttl, rdlen = _RR.unpack_from(data, pos)
            pos += _RR.size
            if pos + rdlen > len(data):
                raise CorruptContent("dns: truncated record data")
            if rtype == OPT and section == 2:
                msg.edns = max(rclass, UDP_LIMIT)
            elif section == 0:
                msg.answers.append((_join(owner).lower(), rtype, ttl, _rdata_text(data, pos, rtype, rdlen)))
            pos += rdlen
    return msg


def parse_query(data: bytes) -> Message:
    """A query with exactly one question; CorruptContent for anything else."""
    msg = _parse(data)
    if msg.flags & _QR or _HEADER.unpack_from(data)[2] != 1:
        raise CorruptContent("dns: not a query with one question")
    return msg


def parse_response(data: bytes) -> Message:
    """A response (or any message): header, question, answers; CorruptContent if malformed."""
    return _parse(data)


def encode_name(name: str) -> bytes:
    """A plain ASCII domain name in wire form, uncompressed."""
    text = name[:-1] if name.endswith(".") else name
    try:
        labels = [label.encode("ascii") for label in text.split(".")] if text else []
    except UnicodeEncodeError:
        labels = [b""]
    if any(not 0 < len(label) <= 63 for label in labels) or len(text) > 253:
        raise InvalidArgument(f"not a valid domain name: {name!r}")
    return _encode_labels(labels)


def _encode_labels(labels: list[bytes]) -> bytes:
    return b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"


def build_query(name: str, qtype: int = A, id: int = 0, *, rd: bool = True, edns: int | None = None) -> bytes:
    """A standard query for `name`; with `edns`, an OPT record advertising that UDP size."""
    opt = b"\x00" + _RR.pack(OPT, edns, 0, 0) if edns is not None else b""
    header = _HEADER.pack(id & 0xFFFF, _RD if rd else 0, 1, 0, 0, 1 if opt else 0)
    return header + encode_name(name) + _QUESTION.pack(qtype, CLASS_IN) + opt


def _response(
    query: Message, rcode: int, answers: Iterable[tuple[int, bytes]] = (), aa: bool = False, limit: int = 0
) -> bytes:
    """The answer to `query`: question echoed, RD and opcode copied, TC and no answers past `limit`."""
    flags = _QR | _RA | (query.flags & (_OPCODE | _RD)) | (_AA if aa else 0) | rcode
    question = _encode_labels(query.labels) + _QUESTION.pack(query.qtype, query.qclass)
    records = [b"\xc0\x0c" + _RR.pack(rtype, CLASS_IN, TTL, len(rdata)) + rdata for rtype, rdata in answers]
    opt = _OPT_RR if query.edns is not None else b""
    if limit and _HEADER.size + len(question) + sum(map(len, records)) + len(opt) > limit:
        flags |= _TC
        records = []
    header = _HEADER.pack(query.id, flags, 1, len(records), 0, 1 if opt else 0)
    return header + question + b"".join(records) + opt


def reverse_name(address: str) -> str:
    """The PTR name of an address: 4.3.2.1.in-addr.arpa, or the 32 nibbles under ip6.arpa."""
    packed = _pack(address)
    if packed is None:
        raise InvalidArgument(f"not an IP address: {address!r}")
    if len(packed) == 4:
        return ".".join(str(b) for b in reversed(packed)) + ".in-addr.arpa"
    return ".".join(reversed(packed.hex())) + ".ip6.arpa"


def reverse_address(name: str) -> str | None:
    """The address a full PTR name stands for (lower case, no trailing dot); None for any other name."""
    if name.endswith(".in-addr.arpa"):
        parts = name[: -len(".in-addr.arpa")].split(".")
        if len(parts) == 4 and all(
            p.isascii() and p.isdigit() and str(int(p)) == p and int(p) < 256 for p in parts
        ):
            return ".".join(reversed(parts))
    elif name.endswith(".ip6.arpa"):
        nibbles = name[: -len(".ip6.arpa")].split(".")
        if len(nibbles) == 32 and all(len(n) == 1 and n in "0123456789abcdef" for n in nibbles):
            return socket.inet_ntop(socket.AF_INET6, bytes.fromhex("".join(reversed(nibbles))))
    return None


def _pack(ip: str) -> bytes | None:
    """The address in network order (a %scope suffix ignored), None if ip is not an address."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(family, ip.partition("%")[0])
        except (OSError, ValueError):
            pass
    return None


def _family(ip: str) -> socket.AddressFamily:
    packed = _pack(ip)
    if packed is None:
        raise InvalidArgument(f"not an IP address: {ip!r}")
    return socket.AF_INET if len(packed) == 4 else socket.AF_INET6


def _take_message(buf: bytearray) -> bytes | None:
    """Remove and return the first length-prefixed message of a TCP stream buffer, if it is complete."""
    if len(buf) < 2:
        return None
    size = _U16.unpack_from(buf)[0]
    if len(buf) < 2 + size:
        return None
    message = bytes(buf[2 : 2 + size])
    del buf[: 2 + size]
    return message


def host_upstreams(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The `nameserver` lines of a resolv.conf as (ip, 53), in order; [] if none or unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    found: dict[tuple[str, int], None] = {}  # ordered, without duplicates
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver" and _pack(fields[1]) is not None:
            found[(fields[1], 53)] = None
    return list(found)


def _listen(family: socket.AddressFamily, kind: socket.SocketKind, ip: str, port: int) -> socket.socket:
    """A non-blocking socket bound to ip:port with SO_REUSEADDR and FREEBIND (listening if TCP)."""
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            v6 = family == socket.AF_INET6
            sock.setsockopt(_SOL_IPV6 if v6 else _SOL_IP, _IPV6_FREEBIND if v6 else _IP_FREEBIND, 1)
        except OSError:
            pass  # not Linux, or too old a kernel: then the address must exist before binding
        sock.bind((ip, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(64)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Forward:
    """A query on its way to the upstreams (UDP for UDP clients, TCP for TCP ones)."""

    __slots__ = (
        "client",
        "deadline",
        "id",
        "inbuf",
        "outbuf",
        "query",
        "raw",
        "reply",
        "sock",
        "target",
        "tcp",
        "upstreams",
    )

    def __init__(self, query: Message, raw: bytes, reply: Callable[[bytes], None], tcp: bool) -> None:
        self.query, self.raw, self.reply, self.tcp = query, raw, reply, tcp
        self.client: _TcpClient | None = None
        self.upstreams: list[tuple[str, int]] = []
        self.target: tuple[str, int] = ("", 0)
        self.sock: socket.socket | None = None
        self.id = 0
        self.deadline = 0.0
        self.inbuf = bytearray()
        self.outbuf = b""


class _TcpClient:
    """An accepted TCP connection: its buffers, idle deadline and forwards in flight."""

    __slots__ = ("addr", "closed", "deadline", "eof", "inbuf", "outbuf", "pending", "server_ip", "sock")

    def __init__(self, sock: socket.socket, addr: str, server_ip: str, deadline: float) -> None:
        self.sock, self.addr, self.server_ip, self.deadline = sock, addr, server_ip, deadline
        self.inbuf = bytearray()
        self.outbuf = b""
        self.pending = 0
        self.eof = self.closed = False


class DnsServer:
    """A single-threaded DNS server on one port of any number of addresses; see the module docstring.

    `timeout` is the wait for each upstream, `idle` the life of a silent TCP client. TCP forwards
    use non-blocking connects, so one slow upstream never stalls other clients."""

    def __init__(
        self, resolver: Resolver, port: int = 53, *, timeout: float = 2.0, idle: float = 10.0
    ) -> None:
        self.resolver = resolver
        self.port = port  # 0: the first add_address picks a free port (the same for UDP and TCP)
        self.timeout = timeout
        self.idle = idle
        self.errors = 0
        self.last_error = ""
        self._poll = select.poll()
        self._watch: dict[int, Callable[[int], None]] = {}
        self._listeners: dict[str, tuple[socket.socket, socket.socket]] = {}
        self._forwards: dict[int, _Forward] = {}  # the pending table, by upstream socket fd (one per attempt)
        self._clients: dict[int, _TcpClient] = {}  # by fd

    # --- addresses ---------------------------------------------------------------------------------

    def add_address(self, ip: str) -> None:
        """Answer on ip:port over UDP and TCP (no-op if already served); the address need not exist yet."""
        if ip in self._listeners:
            return
        family = _family(ip)
        for _try in range(16 if self.port == 0 else 1):
            try:
                udp = _listen(family, socket.SOCK_DGRAM, ip, self.port)
            except OSError as exc:
                raise SetupFailed(
                    f"dns: cannot bind {ip} port {self.port}/udp: {exc.strerror}", exc.errno
                ) from exc
            port = udp.getsockname()[1]
            try:
                tcp = _listen(family, socket.SOCK_STREAM, ip, port)
                break
            except OSError as exc:
                udp.close()
                if self.port != 0 or exc.errno != errno.EADDRINUSE:
                    raise SetupFailed(
                        f"dns: cannot bind {ip} port {port}/tcp: {exc.strerror}", exc.errno
                    ) from exc
        else:
            raise SetupFailed(f"dns: no port free for both UDP and TCP on {ip}", errno.EADDRINUSE)
        self.port = port
        self._listeners[ip] = (udp, tcp)
        self._watch_fd(udp, _POLLIN, partial(self._on_udp, udp, ip))
        self._watch_fd(tcp, _POLLIN, partial(self._on_accept, tcp, ip))

    def remove_address(self, ip: str) -> None:
        """Stop answering on ip, closing its sockets and its TCP clients."""
        socks = self._listeners.pop(ip, None)
        for sock in socks or ():
            self._unwatch(sock)
        for client in [c for c in self._clients.values() if c.server_ip == ip]:
            self._close_client(client)

    def addresses(self) -> list[str]:
        return list(self._listeners)

    def close(self) -> None:
        """Close every socket: listeners, TCP clients and forwards in flight."""
        for ip in list(self._listeners):
            self.remove_address(ip)
        for client in list(self._clients.values()):
            self._close_client(client)
        for fwd in list(self._forwards.values()):
            self._end_attempt(fwd)

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the loop ----------------------------------------------------------------------------------

    def serve(self, timeout: float | None = None) -> None:
        """Handle what is ready within one poll of at most `timeout` seconds (None: until something is)."""
        deadlines = [f.deadline for f in self._forwards.values()]
        deadlines += [c.deadline for c in self._clients.values()]
        wait = timeout
        if deadlines:
            left = max(0.0, min(deadlines) - time.monotonic())
            wait = left if wait is None else min(wait, left)
        events = self._poll.poll(None if wait is None else max(0, -int(-wait * 1000 // 1)))  # ms, rounded up
        for fd, mask in events:
            handler = self._watch.get(fd)
            if handler is None:
                continue
            try:
                handler(mask)
            except Exception as exc:  # a bug must not take the resolver down: count it, keep serving
                self._error(exc)
        now = time.monotonic()
        for fwd in [f for f in self._forwards.values() if f.deadline <= now]:
            self._error(f"dns: upstream {fwd.target[0]} port {fwd.target[1]} timed out")
            self._attempt(fwd)
        for client in [c for c in self._clients.values() if c.deadline <= now and not c.pending]:
            self._close_client(client)

    def serve_forever(
        self,
        stop: Callable[[], bool] | None = None,
        tick: float = 1.0,
        housekeeping: Callable[[], None] | None = None,
    ) -> None:
        """serve() until stop() is true, calling housekeeping() about every `tick` seconds."""
        due = time.monotonic() + tick
        while stop is None or not stop():
            self.serve(tick)
            if housekeeping is not None and time.monotonic() >= due:
                housekeeping()
                due = time.monotonic() + tick

    # --- queries -----------------------------------------------------------------------------------

    def _query(
        self,
        data: bytes,
        client_ip: str,
        server_ip: str,
        reply: Callable[[bytes], None],
        client: _TcpClient | None,
    ) -> None:
        try:
            query = parse_query(data)
        except CorruptContent as exc:
            self._error(exc)
            return
        if query.flags & _OPCODE:
            reply(_response(query, NOTIMP))
            return
        limit = MAX_MESSAGE if client else max(UDP_LIMIT, query.edns or 0)
        try:
            answer = self._local(query, server_ip, client_ip, limit)
        except Exception as exc:  # the resolver's bug or bad data: SERVFAIL, not a dead server
            self._error(exc)
            answer = _response(query, SERVFAIL)
        if answer is not None:
            reply(answer)
            return
        fwd = _Forward(query, data, reply, tcp=client is not None)
        try:
            upstreams = self.resolver.upstreams(server_ip, client_ip)
        except Exception as exc:
            self._error(exc)
            upstreams = []
        ours = {(_pack(ip), self.port) for ip in self._listeners}
        fwd.upstreams = [(ip, port) for ip, port in upstreams if (_pack(ip), port) not in ours]
        if client is not None:
            fwd.client = client
            client.pending += 1
        self._attempt(fwd)

    def _local(self, query: Message, server_ip: str, client_ip: str, limit: int) -> bytes | None:
        """The answer when the resolver owns the name, else None (to forward)."""
        if query.qclass != CLASS_IN:
            return None
        if query.qtype == PTR:
            address = reverse_address(query.name)
            target = None if address is None else self.resolver.reverse(server_ip, client_ip, address)
            if target is not None:
                return _response(query, NOERROR, [(PTR, encode_name(target))], aa=True, limit=limit)
        found = self.resolver.local(server_ip, client_ip, query.name)
        if found is None:
            return None
        answers: list[tuple[int, bytes]] = []
        if query.qtype in (A, ANY):
            answers += [(A, socket.inet_pton(socket.AF_INET, ip)) for ip in found[0]]
        if query.qtype in (AAAA, ANY):
            answers += [(AAAA, socket.inet_pton(socket.AF_INET6, ip)) for ip in found[1]]
        return _response(query, NOERROR, answers, aa=True, limit=limit)  # no answers: NODATA

    # --- forwarding --------------------------------------------------------------------------------

    def _attempt(self, fwd: _Forward) -> None:
        """Send fwd to its next upstream with a fresh socket and ID; SERVFAIL when none is left."""
        self._end_attempt(fwd)
        while fwd.upstreams and not (fwd.client and fwd.client.closed):
            fwd.target = fwd.upstreams.pop(0)
            fwd.id = int.from_bytes(os.urandom(2), "big")
            message = _U16.pack(fwd.id) + fwd.raw[2:]
            sock = None
            try:
                sock = socket.socket(
                    _family(fwd.target[0]), socket.SOCK_STREAM if fwd.tcp else socket.SOCK_DGRAM
                )
                sock.setblocking(False)
                if fwd.tcp:
                    err = sock.connect_ex(fwd.target)
                    if err not in (0, errno.EINPROGRESS):
                        raise OSError(err, os.strerror(err))
                    fwd.outbuf = _U16.pack(len(message)) + message
                else:
                    sock.sendto(message, fwd.target)
            except (OSError, InvalidArgument) as exc:
                if sock is not None:
                    sock.close()
                self._error(exc)
                continue
            fwd.sock = sock
            fwd.deadline = time.monotonic() + self.timeout
            self._forwards[sock.fileno()] = fwd
            self._watch_fd(sock, _POLLOUT if fwd.tcp else _POLLIN, partial(self._on_upstream, fwd))
            return
        self._finish(fwd, _response(fwd.query, SERVFAIL))

    def _end_attempt(self, fwd: _Forward) -> None:
        if fwd.sock is not None:
            self._forwards.pop(fwd.sock.fileno(), None)
            self._unwatch(fwd.sock)
            fwd.sock = None
        fwd.inbuf.clear()
        fwd.outbuf = b""

    def _finish(self, fwd: _Forward, answer: bytes) -> None:
        self._end_attempt(fwd)
        fwd.reply(answer)
        if fwd.client is not None:
            fwd.client.pending -= 1
            fwd.client.deadline = time.monotonic() + self.idle
            self._settle(fwd.client)

    def _on_upstream(self, fwd: _Forward, mask: int) -> None:
        sock = fwd.sock
        if sock is None:
            return
        try:
            if fwd.tcp and fwd.outbuf:  # connecting, or the query not yet all sent
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                fwd.outbuf = fwd.outbuf[sock.send(fwd.outbuf) :]
                if not fwd.outbuf:
                    self._poll.modify(sock.fileno(), _POLLIN)
                return
            if fwd.tcp:
                chunk = sock.recv(MAX_MESSAGE + 2)
                if not chunk:
                    raise OSError(errno.ECONNRESET, "upstream closed the connection")
                fwd.inbuf += chunk
                answer = _take_message(fwd.inbuf)
                if answer is None:
                    return
            else:
                answer, peer = sock.recvfrom(MAX_MESSAGE)
                if _pack(peer[0]) != _pack(fwd.target[0]) or peer[1] != fwd.target[1]:
                    self._error(f"dns: ignored a reply from {peer[0]} port {peer[1]}")
                    return
        except BlockingIOError:
            return
        except OSError as exc:
            self._error(exc)
            self._attempt(fwd)
            return
        if len(answer) < _HEADER.size or _U16.unpack_from(answer)[0] != fwd.id or not answer[2] & 0x80:
            self._error(f"dns: ignored a bad reply from {fwd.target[0]}")
            if fwd.tcp:  # the stream is out of step: try the next upstream
                self._attempt(fwd)
            return
        self._finish(fwd, fwd.raw[:2] + answer[2:])

    # --- sockets -----------------------------------------------------------------------------------

    def _on_udp(self, sock: socket.socket, server_ip: str, mask: int) -> None:
        for _ in range(64):  # drain, but let other sockets have a turn
            try:
                data, addr = sock.recvfrom(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError as exc:
                self._error(exc)
                return
            self._query(data, addr[0], server_ip, partial(self._send_udp, sock, addr), None)

    def _send_udp(self, sock: socket.socket, addr: tuple[str, int], data: bytes) -> None:
        try:
            sock.sendto(data, addr)
        except OSError as exc:  # the client is gone, or the address was removed meanwhile
            self._error(exc)

    def _on_accept(self, sock: socket.socket, server_ip: str, mask: int) -> None:
        for _ in range(16):
            try:
                conn, addr = sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                self._error(exc)
                return
            if len(self._clients) >= MAX_TCP_CLIENTS:
                self._error("dns: too many TCP clients")
                conn.close()
                continue
            conn.setblocking(False)
            client = _TcpClient(conn, addr[0], server_ip, time.monotonic() + self.idle)
            self._clients[conn.fileno()] = client
            self._watch_fd(conn, _POLLIN, partial(self._on_client, client))

    def _on_client(self, client: _TcpClient, mask: int) -> None:
        if mask & _POLLOUT:
            self._flush(client)
        if client.closed or client.eof:
            if mask & _POLLDEAD:
                self._close_client(client)
            return
        try:
            chunk = client.sock.recv(MAX_MESSAGE + 2)
        except BlockingIOError:
            return
        except OSError as exc:
            self._error(exc)
            self._close_client(client)
            return
        if not chunk:  # half-closed: finish what is in flight, then close
            client.eof = True
            self._settle(client)
            return
        client.deadline = time.monotonic() + self.idle
        client.inbuf += chunk
        while not client.closed and (message := _take_message(client.inbuf)) is not None:
            self._query(message, client.addr, client.server_ip, partial(self._send_tcp, client), client)

    def _send_tcp(self, client: _TcpClient, data: bytes) -> None:
        if client.closed:
            return
        client.outbuf += _U16.pack(len(data)) + data
        if len(client.outbuf) > 16 * MAX_MESSAGE:  # it does not read its answers
            self._error("dns: TCP client not reading")
            self._close_client(client)
            return
        self._flush(client)

    def _flush(self, client: _TcpClient) -> None:
        if client.outbuf and not client.closed:
            try:
                client.outbuf = client.outbuf[client.sock.send(client.outbuf) :]
            except BlockingIOError:
                pass
            except OSError as exc:
                self._error(exc)
                self._close_client(client)
                return
        self._settle(client)

    def _settle(self, client: _TcpClient) -> None:
        """Close a finished half-closed client, or poll for what it still needs."""
        if client.closed:
            return
        if client.eof and not client.pending and not client.outbuf:
            self._close_client(client)
            return
        self._poll.modify(
            client.sock.fileno(), (0 if client.eof else _POLLIN) | (_POLLOUT if client.outbuf else 0)
        )

    def _close_client(self, client: _TcpClient) -> None:
        if not client.closed:
            client.closed = True
            self._clients.pop(client.sock.fileno(), None)
            self._unwatch(client.sock)

    def _watch_fd(self, sock: socket.socket, events: int, handler: Callable[[int], None]) -> None:
        self._watch[sock.fileno()] = handler
        self._poll.register(sock.fileno(), events)

    def _unwatch(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd >= 0 and self._watch.pop(fd, None) is not None:
            self._poll.unregister(fd)
        sock.close()

    def _error(self, exc: BaseException | str) -> None:
        self.errors += 1
        self.last_error = str(exc)
