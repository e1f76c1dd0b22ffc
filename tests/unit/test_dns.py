"""Unit tests for ketch.network.dns: wire format, local answers, forwarding, TCP (loopback, no root)."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from ketch.errors import CorruptContent, InvalidArgument, SetupFailed
from ketch.network.dns import (
    AAAA,
    MAX_MESSAGE,
    NOERROR,
    NOTIMP,
    PTR,
    SERVFAIL,
    A,
    DnsServer,
    build_query,
    encode_name,
    host_upstreams,
    parse_query,
    parse_response,
    reverse_address,
    reverse_name,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

LO = "127.0.0.1"
QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
MANY = [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(40)]  # 40 A records: more than 512 bytes


class FakeResolver:
    """Owns a few names; records what it was asked."""

    def __init__(self, names: dict[str, tuple[list[str], list[str]]] | None = None) -> None:
        self.names = (
            names
            if names is not None
            else {
                "web.net1": (["10.0.0.2", "10.0.0.3"], ["fd00::2", "fd00::3"]),
                "db": (["10.0.0.4"], []),
                "many": (MANY, []),
            }
        )
        self.ptrs = {"10.0.0.2": "web.net1", "fd00::2": "web.net1"}
        self.ups: list[tuple[str, int]] = []
        self.asked: list[tuple[str, str, str]] = []
        self.broken = False

    def local(self, server_ip: str, client_ip: str, name: str) -> tuple[list[str], list[str]] | None:
        if self.broken:
            raise RuntimeError("resolver bug")
        self.asked.append((server_ip, client_ip, name))
        return self.names.get(name)

    def reverse(self, server_ip: str, client_ip: str, address: str) -> str | None:
        return self.ptrs.get(address)

    def upstreams(self, server_ip: str, client_ip: str) -> list[tuple[str, int]]:
        return list(self.ups)


def make_server(resolver: FakeResolver, timeout: float = 0.3) -> DnsServer:
    server = DnsServer(resolver, port=0, timeout=timeout)
    server.add_address(LO)
    return server


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture
def server(resolver: FakeResolver) -> Iterator[DnsServer]:
    with make_server(resolver) as srv:
        yield srv


@pytest.fixture
def upstream() -> Iterator[DnsServer]:
    """Another DnsServer that owns example.test, standing in for the host's resolver."""
    with make_server(FakeResolver({"example.test": (["192.0.2.7"], [])})) as srv:
        yield srv


@pytest.fixture
def silent() -> Iterator[socket.socket]:
    """A UDP socket that never answers (an upstream that is down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LO, 0))
        sock.setblocking(False)
        yield sock


def udp(servers: list[DnsServer], data: bytes, port: int, wait: float = 3.0) -> bytes | None:
    """Send one datagram and drive the servers until an answer comes (None after `wait`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.setblocking(False)
        client.sendto(data, (LO, port))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for srv in servers:
                srv.serve(0.01)
            try:
                return client.recv(MAX_MESSAGE)
            except BlockingIOError:
                pass
    return None


def ask(
    servers: list[DnsServer], name: str, qtype: int = A, id: int = 0x1234, **kw: int
) -> tuple[bytes, int]:
    """Query the first server over UDP; the parsed answer and its raw flags."""
    answer = udp(servers, build_query(name, qtype, id, **kw), servers[0].port)
    assert answer is not None, "no answer"
    return answer, struct.unpack_from("!H", answer, 2)[0]


def tcp(servers: list[DnsServer], messages: list[bytes], port: int, wait: float = 3.0) -> list[bytes]:
    """Send length-prefixed messages in small pieces over one connection; collect as many answers."""
    with socket.create_connection((LO, port), timeout=1) as client:
        client.setblocking(False)
        stream = b"".join(struct.pack("!H", len(m)) + m for m in messages)
        for i in range(0, len(stream), 7):  # partial writes on purpose
            client.send(stream[i : i + 7])
            for srv in servers:
                srv.serve(0)
        buf, answers = b"", []
        deadline = time.monotonic() + wait
        while len(answers) < len(messages) and time.monotonic() < deadline:
            for srv in servers:
                srv.serve(0.01)
            try:
                buf += client.recv(MAX_MESSAGE)
            except BlockingIOError:
                continue
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack_from("!H", buf)[0]:
                size = struct.unpack_from("!H", buf)[0]
                answers.append(buf[2 : 2 + size])
                buf = buf[2 + size :]
    return answers


# --- wire format -----------------------------------------------------------------------------------


def test_query_round_trip() -> None:
    q = parse_query(build_query("Web.Net1.", AAAA, 0xBEEF, edns=4096))
    assert (q.id, q.name, q.qtype, q.qclass, q.edns) == (0xBEEF, "web.net1", AAAA, 1, 4096)
    assert q.labels == [b"Web", b"Net1"]
    assert q.flags & RD


def test_encode_name_rejects_bad_names() -> None:
    assert encode_name(".") == b"\x00"
    assert encode_name("a.b") == b"\x01a\x01b\x00"
    for bad in ("a..b", "x" * 64, "é.com", ".".join(["abcdefgh"] * 32)):
        with pytest.raises(InvalidArgument):
            encode_name(bad)


def test_reverse_names() -> None:
    assert reverse_name("10.0.0.2") == "2.0.0.10.in-addr.arpa"
    assert reverse_address("2.0.0.10.in-addr.arpa") == "10.0.0.2"
    assert reverse_address(reverse_name("fd00::2")) == "fd00::2"
    for other in (
        "0.10.in-addr.arpa",
        "1.2.3.256.in-addr.arpa",
        "01.2.3.4.in-addr.arpa",
        "web.net1",
        "x.ip6.arpa",
    ):
        assert reverse_address(other) is None


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x12\x34",
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00",  # a question announced, none there
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab",  # label runs past the end
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00",  # truncated type/class
        b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01",  # two questions
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00\x00\x01\x00\x01\x00\x00\x29",  # cut OPT
        b"\x12\x34\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01",  # a response
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\xc0\x0c\x00\x01\x00\x01",  # pointer loop
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # points at itself
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x20\x00\x01\x00\x01" + b"\x00" * 20,  # forward
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x41a\x00\x00\x01\x00\x01",  # reserved label bits
    ],
)
def test_malformed_queries_are_rejected(packet: bytes) -> None:
    with pytest.raises(CorruptContent):
        parse_query(packet)


def test_compression_pointer_chain_backwards_is_accepted() -> None:
    # answer 1 names "a.web" by pointing at the question, answer 2 points into answer 1's name
    question = b"\x03web\x00\x00\x01\x00\x01"
    rr1 = b"\x01a\xc0\x0c" + struct.pack("!HHIH", A, 1, 5, 4) + bytes([10, 0, 0, 9])
    rr2 = b"\xc0\x15" + struct.pack("!HHIH", A, 1, 5, 4) + bytes([10, 0, 0, 8])
    msg = parse_response(struct.pack("!6H", 7, QR, 1, 2, 0, 0) + question + rr1 + rr2)
    assert msg.answers == [("a.web", A, 5, "10.0.0.9"), ("a.web", A, 5, "10.0.0.8")]


# --- local answers -----------------------------------------------------------------------------------


def test_a_and_aaaa_local_answers(server: DnsServer, resolver: FakeResolver) -> None:
    raw, flags = ask([server], "web.net1", A, id=0xFFFF)
    msg = parse_response(raw)
    assert msg.id == 0xFFFF and msg.rcode == NOERROR
    assert flags & (QR | AA | RD | RA) == QR | AA | RD | RA and not flags & TC
    assert [(n, t, ttl, v) for n, t, ttl, v in msg.answers] == [
        ("web.net1", A, 600, "10.0.0.2"),
        ("web.net1", A, 600, "10.0.0.3"),
    ]
    msg = parse_response(ask([server], "web.net1", AAAA, id=0)[0])
    assert msg.id == 0 and [a[3] for a in msg.answers] == ["fd00::2", "fd00::3"]
    assert resolver.asked[0] == (LO, LO, "web.net1")
    assert server.errors == 0


def test_nodata_and_case_insensitive(server: DnsServer) -> None:
    raw, flags = ask([server], "db", AAAA)
    msg = parse_response(raw)
    assert msg.rcode == NOERROR and msg.answers == [] and flags & AA
    raw, _ = ask([server], "WeB.NeT1", A)
    msg = parse_response(raw)
    assert [a[3] for a in msg.answers] == ["10.0.0.2", "10.0.0.3"]
    assert raw[12:22] == b"\x03WeB\x04NeT1\x00"  # the question echoed as sent
    msg = parse_response(ask([server], "db", 16)[0])  # TXT: known name, no such records
    assert msg.rcode == NOERROR and msg.answers == []


def test_ptr_local_answer(server: DnsServer) -> None:
    msg = parse_response(ask([server], reverse_name("10.0.0.2"), PTR)[0])
    assert msg.answers == [("2.0.0.10.in-addr.arpa", PTR, 600, "web.net1")]
    msg = parse_response(ask([server], reverse_name("fd00::2").upper(), PTR)[0])
    assert msg.answers[0][3] == "web.net1"


def test_truncation_without_edns_and_full_answer_with_it(server: DnsServer) -> None:
    raw, flags = ask([server], "many", A)
    assert flags & TC and parse_response(raw).answers == [] and len(raw) <= 512
    raw, flags = ask([server], "many", A, edns=4096)
    msg = parse_response(raw)
    assert not flags & TC and [a[3] for a in msg.answers] == MANY and msg.edns is not None


def test_not_a_query_opcode_is_notimp(server: DnsServer) -> None:
    packet = bytearray(build_query("db", A, 5))
    packet[2] |= 0x10  # opcode 2 (STATUS)
    answer = udp([server], bytes(packet), server.port)
    assert answer is not None and parse_response(answer).rcode == NOTIMP


def test_resolver_failure_is_servfail_and_counted(server: DnsServer, resolver: FakeResolver) -> None:
    resolver.broken = True
    assert parse_response(ask([server], "db")[0]).rcode == SERVFAIL
    assert server.errors == 1 and "resolver bug" in server.last_error


def test_malformed_packets_are_ignored(server: DnsServer) -> None:
    loop = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\xc0\x0c\x00\x01\x00\x01"
    for junk in (b"", b"\xff" * 3, loop, b"\x00" * 12 + b"\x3f" * 500):
        assert udp([server], junk, server.port, wait=0.2) is None
    assert server.errors == 4
    assert parse_response(ask([server], "db")[0]).answers[0][3] == "10.0.0.4"


# --- forwarding --------------------------------------------------------------------------------------


def test_forward_udp_restores_the_id(server: DnsServer, resolver: FakeResolver, upstream: DnsServer) -> None:
    resolver.ups = [(LO, upstream.port)]
    raw, flags = ask([server, upstream], "Example.Test", A, id=0x4242)
    msg = parse_response(raw)
    assert msg.id == 0x4242 and msg.answers[0][3] == "192.0.2.7" and flags & AA
    assert not server._forwards and server.errors == 0


def test_forward_checks_the_reply_source_and_id(
    server: DnsServer, resolver: FakeResolver, silent: socket.socket
) -> None:
    resolver.ups = [silent.getsockname()]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.setblocking(False)
        client.sendto(build_query("out.there", A, 77), (LO, server.port))
        server.serve(0.5)
        forwarded, source = silent.recvfrom(MAX_MESSAGE)
        assert parse_query(forwarded).name == "out.there"
        fake = bytearray(forwarded)
        fake[2] |= 0x80
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as spoofer:
            spoofer.sendto(bytes(fake), source)  # right ID, wrong peer
        wrong_id = bytearray(fake)
        wrong_id[0] ^= 0xFF
        silent.sendto(bytes(wrong_id), source)  # right peer, wrong ID
        for _ in range(3):
            server.serve(0.05)
        with pytest.raises(BlockingIOError):
            client.recv(MAX_MESSAGE)
        assert server.errors == 2
        silent.sendto(bytes(fake), source)
        server.serve(0.5)
        time.sleep(0.01)
        assert struct.unpack_from("!H", client.recv(MAX_MESSAGE))[0] == 77


def test_timeout_tries_the_next_upstream(
    server: DnsServer, resolver: FakeResolver, silent: socket.socket, upstream: DnsServer
) -> None:
    resolver.ups = [silent.getsockname(), (LO, upstream.port)]
    start = time.monotonic()
    msg = parse_response(ask([server, upstream], "example.test", A, id=9)[0])
    assert msg.id == 9 and msg.answers[0][3] == "192.0.2.7"
    assert 0.25 < time.monotonic() - start < 2
    assert parse_query(silent.recv(MAX_MESSAGE)).name == "example.test"


def test_all_upstreams_silent_is_servfail(
    server: DnsServer, resolver: FakeResolver, silent: socket.socket
) -> None:
    resolver.ups = [silent.getsockname(), silent.getsockname()]
    start = time.monotonic()
    raw, flags = ask([server], "nowhere.test", A, id=3)
    assert parse_response(raw).rcode == SERVFAIL and parse_response(raw).id == 3 and not flags & AA
    assert 0.55 < time.monotonic() - start < 2.5
    silent.recv(MAX_MESSAGE)
    silent.recv(MAX_MESSAGE)  # both attempts arrived
    assert not server._forwards


def test_no_upstreams_is_servfail(server: DnsServer) -> None:
    assert parse_response(ask([server], "nowhere.test")[0]).rcode == SERVFAIL


def test_never_forwards_to_itself(server: DnsServer, resolver: FakeResolver) -> None:
    resolver.ups = [(LO, server.port)]
    assert parse_response(ask([server], "loop.test")[0]).rcode == SERVFAIL


# --- TCP ---------------------------------------------------------------------------------------------


def test_tcp_local_answers_with_partial_reads(server: DnsServer) -> None:
    answers = tcp([server], [build_query("web.net1", A, 1), build_query("many", A, 2)], server.port)
    first, second = (parse_response(a) for a in answers)
    assert (first.id, [a[3] for a in first.answers]) == (1, ["10.0.0.2", "10.0.0.3"])
    assert (second.id, [a[3] for a in second.answers]) == (2, MANY)  # no truncation over TCP


def test_tcp_forward(server: DnsServer, resolver: FakeResolver, upstream: DnsServer) -> None:
    resolver.ups = [(LO, upstream.port)]
    (answer,) = tcp([server, upstream], [build_query("example.test", A, 0xABCD)], server.port)
    msg = parse_response(answer)
    assert msg.id == 0xABCD and msg.answers[0][3] == "192.0.2.7"
    assert server.errors == 0


def test_tcp_half_closed_client_still_gets_its_answer(
    server: DnsServer, resolver: FakeResolver, upstream: DnsServer
) -> None:
    resolver.ups = [(LO, upstream.port)]
    query = build_query("example.test", A, 0x77)
    with socket.create_connection((LO, server.port), timeout=1) as client:
        client.sendall(struct.pack("!H", len(query)) + query)
        client.shutdown(socket.SHUT_WR)
        client.setblocking(False)
        data = b""
        for _ in range(200):
            server.serve(0.01)
            upstream.serve(0.01)
            try:
                chunk = client.recv(MAX_MESSAGE)
            except BlockingIOError:
                continue
            if not chunk:
                break
            data += chunk
    assert parse_response(data[2:]).answers[0][3] == "192.0.2.7"
    assert not server._clients and server.errors == 0


def test_tcp_forward_refused_then_servfail(server: DnsServer, resolver: FakeResolver) -> None:
    with socket.socket() as closed:
        closed.bind((LO, 0))  # bound, not listening: connections are refused
        resolver.ups = [closed.getsockname()]
        (answer,) = tcp([server], [build_query("x.test", A, 4)], server.port)
    assert parse_response(answer).rcode == SERVFAIL and server.errors == 1


def test_idle_tcp_client_is_dropped(resolver: FakeResolver) -> None:
    with DnsServer(resolver, port=0, idle=0.1) as server:
        server.add_address(LO)
        with socket.create_connection((LO, server.port), timeout=1) as client:
            server.serve(0.05)
            assert len(server._clients) == 1
            for _ in range(10):
                server.serve(0.05)
            assert not server._clients
            assert client.recv(10) == b""


# --- addresses ---------------------------------------------------------------------------------------


def test_remove_address_stops_answering(server: DnsServer) -> None:
    port = server.port
    assert server.addresses() == [LO]
    server.remove_address(LO)
    assert server.addresses() == []
    assert udp([server], build_query("db", A), port, wait=0.2) is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LO, port), timeout=1).close()


def test_add_address_twice_is_a_no_op_and_bad_ip_refused(server: DnsServer) -> None:
    server.add_address(LO)
    assert server.addresses() == [LO]
    with pytest.raises(InvalidArgument):
        server.add_address("not-an-ip")


def test_port_in_use_is_setup_failed(server: DnsServer) -> None:
    with socket.socket() as busy:
        busy.bind((LO, 0))
        busy.listen()
        other = DnsServer(FakeResolver(), port=busy.getsockname()[1])
        with pytest.raises(SetupFailed):
            other.add_address(LO)
        other.close()


def test_freebind_binds_an_absent_address(resolver: FakeResolver) -> None:
    with DnsServer(resolver, port=0) as server:
        try:
            server.add_address("198.51.100.1")  # TEST-NET-2: on no interface here
        except SetupFailed as exc:
            pytest.skip(f"the kernel refused IP_FREEBIND for an absent address: {exc}")
        assert server.addresses() == ["198.51.100.1"]
        server.add_address(LO)  # the same port works alongside
        assert sorted(server.addresses()) == ["127.0.0.1", "198.51.100.1"]


def test_ipv6_loopback(resolver: FakeResolver) -> None:
    with DnsServer(resolver, port=0) as server:
        try:
            server.add_address("::1")
        except SetupFailed as exc:
            pytest.skip(f"no IPv6 loopback: {exc}")
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
            client.settimeout(0.01)
            client.sendto(build_query("web.net1", AAAA, 6), ("::1", server.port))
            for _ in range(100):
                server.serve(0.01)
                try:
                    msg = parse_response(client.recv(MAX_MESSAGE))
                    break
                except TimeoutError:
                    pass
        assert [a[3] for a in msg.answers] == ["fd00::2", "fd00::3"]
        assert resolver.asked[-1][:2] == ("::1", "::1")


def test_serve_forever_stops_and_does_housekeeping(server: DnsServer) -> None:
    ticks: list[float] = []
    server.serve_forever(stop=lambda: len(ticks) >= 3, tick=0.01, housekeeping=lambda: ticks.append(1.0))
    assert len(ticks) == 3


def test_host_upstreams(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# comment\nsearch example.com\nnameserver 10.0.0.1\n;nameserver 9.9.9.9\n"
        "nameserver fd00::53 # trailing\nnameserver bogus\nnameserver 10.0.0.1\nnameserver\n"
    )
    assert host_upstreams(str(conf)) == [("10.0.0.1", 53), ("fd00::53", 53)]
    assert host_upstreams(str(tmp_path / "missing")) == []
