"""Bridge networking for real: bridges, veth pairs, iptables rules and the embedded DNS server.

Traffic only goes over loopback, a veth pair the test makes (holding the host's other
address), and a network namespace the test makes (standing for the outside world). The engine
fixture checks at the end that no bridge, rule or DNS server of the engine is left.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from enginefix import IMAGE, Engine, engine_fixture  # noqa: F401

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("iptables") is None, reason="needs iptables"),
]

TAG = os.urandom(3).hex()
HOST_ADDRESS = "198.18.0.1"  # on a device of the test's: "the host's other address"
OUTSIDE_HOST, OUTSIDE_PEER = "198.51.100.1", "198.51.100.2"


def httpd(text: str) -> str:
    return f"mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www"


def fetch(host: str, port: int = 80, wait: int = 3) -> str:
    """A shell line fetching / over HTTP with busybox nc (busybox-static's wget crashes)."""
    return f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w {wait} {host} {port} | tail -n 1"


def http_get(host: str, port: int, timeout: float = 3) -> str:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.decode().rsplit("\n", 2)[-2].strip() if data.endswith(b"\n") else data.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def wait_listening(engine: Engine, name: str, port: int = 80) -> None:
    deadline = time.monotonic() + 15
    hexport = f":{port:04X}"
    while True:
        proc = engine("exec", name, "cat", "/proc/net/tcp", "/proc/net/tcp6", check=False)
        if any(
            hexport in line.split()[1] and line.split()[3] == "0A" for line in proc.stdout.splitlines()[1:]
        ):
            return
        assert time.monotonic() < deadline, f"{name} never listened on {port}"
        time.sleep(0.05)


def serve(engine: Engine, name: str, text: str, *flags: str) -> None:
    engine("run", "-d", "--name", name, *flags, IMAGE, "sh", "-c", httpd(text))
    wait_listening(engine, name)


def address_of(engine: Engine, name: str, network: str = "") -> str:
    settings = engine.inspect(name)["NetworkSettings"]
    return str(settings["Networks"][network]["IPAddress"] if network else settings["IPAddress"])


def in_container(engine: Engine, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return engine("run", "--rm", *args, check=check)


@pytest.fixture(scope="module")
def dummy() -> Iterator[str]:
    """A device holding HOST_ADDRESS: an address of the host that is not loopback (a veth pair:
    this kernel may lack the dummy driver)."""
    name = f"ktdum{TAG}"
    ip("link", "add", name, "type", "veth", "peer", "name", f"ktdup{TAG}")
    try:
        ip("addr", "add", f"{HOST_ADDRESS}/32", "dev", name)
        ip("link", "set", name, "up")
        ip("link", "set", f"ktdup{TAG}", "up")
        yield HOST_ADDRESS
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


@pytest.fixture(scope="module")
def outside() -> Iterator[tuple[str, int]]:
    """A network namespace standing for the outside world, reached through the host's routing,
    with a server that answers each connection with the address it came from."""
    ns, veth = f"ktout{TAG}", f"ktout{TAG}"
    ip("netns", "add", ns)
    server = None
    try:
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("addr", "add", f"{OUTSIDE_HOST}/24", "dev", veth)
        ip("link", "set", veth, "up")
        ip("-n", ns, "addr", "add", f"{OUTSIDE_PEER}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        code = ("import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                "s.bind(('0.0.0.0',9000))\ns.listen(8)\nprint('ready',flush=True)\nwhile True:\n"
                " c,a=s.accept()\n c.sendall(a[0].encode()+b'\\n')\n c.close()\n")  # fmt: skip
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code], stdout=subprocess.PIPE
        )
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        yield OUTSIDE_PEER, 9000
    finally:
        if server is not None:
            server.kill()
            server.wait()
            if server.stdout is not None:
                server.stdout.close()
        subprocess.run(["ip", "link", "del", veth], check=False)
        subprocess.run(["ip", "netns", "del", ns], check=False)


# --- the default bridge ------------------------------------------------------------------------------


def test_default_bridge_gives_an_address_a_route_and_files(engine: Engine) -> None:
    out = in_container(engine, "--hostname", "box", "--add-host", "gw:host-gateway", "--dns", "192.0.2.53",
                       "--dns-search", "example.test", "--dns-option", "ndots:2", IMAGE, "sh", "-c",
                       "busybox ip -4 addr show eth0; busybox ip route; cat /etc/hosts /etc/resolv.conf").stdout  # fmt: skip
    networks = json.loads(engine("network", "inspect", "bridge").stdout)[0]
    subnet, gateway = networks["IPAM"]["Config"][0]["Subnet"], networks["IPAM"]["Config"][0]["Gateway"]
    prefix = subnet.split("/")[1]
    mine = next(line.split()[1] for line in out.splitlines() if line.strip().startswith("inet "))
    assert mine.endswith(f"/{prefix}") and mine.rsplit(".", 1)[0] == gateway.rsplit(".", 1)[0]
    assert f"default via {gateway} dev eth0" in out
    assert f"{mine.split('/')[0]}\tbox" in out
    assert f"{gateway}\tgw" in out  # host-gateway is the default bridge's gateway
    assert "nameserver 192.0.2.53" in out and "search example.test" in out and "options ndots:2" in out


def test_outbound_traffic_is_masqueraded(engine: Engine, outside: tuple[str, int]) -> None:
    host, port = outside
    out = in_container(engine, IMAGE, "sh", "-c", f"busybox nc -w 3 {host} {port}").stdout
    assert out.strip() == OUTSIDE_HOST  # the server saw the host's address, not the container's


def test_published_port_answers_on_loopback_and_the_hosts_address(engine: Engine, dummy: str) -> None:
    port = free_port()
    serve(engine, "pub", "published", "-p", f"{port}:80")
    try:
        assert http_get("127.0.0.1", port) == "published"
        assert http_get(dummy, port) == "published"
        assert engine("port", "pub").stdout.strip() == f"80/tcp -> 0.0.0.0:{port}"
        assert engine("port", "pub", "80").stdout.strip() == f"0.0.0.0:{port}"
        assert f"0.0.0.0:{port}->80/tcp" in engine("ps", "--filter", "name=pub").stdout
        ports = engine.inspect("pub")["NetworkSettings"]["Ports"]
        assert ports == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}
        # hairpin: another container, and the container itself, through the host's address
        assert in_container(engine, IMAGE, "sh", "-c", fetch(dummy, port)).stdout.strip() == "published"
        assert engine("exec", "pub", "sh", "-c", fetch(dummy, port)).stdout.strip() == "published"
    finally:
        engine("rm", "-f", "pub")
    rules = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout
    assert f"--dport {port} " not in rules
    with pytest.raises(OSError):
        http_get("127.0.0.1", port, timeout=1)


def test_a_taken_port_is_refused_and_nothing_is_left(engine: Engine) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", port))
        taken.listen(1)
        proc = engine("run", "--name", "clash", "-p", f"{port}:80", IMAGE, "true", check=False)
    assert proc.returncode == 125
    assert "port is already allocated" in proc.stderr and proc.stderr.count("\n") == 1
    assert engine.inspect("clash")["State"]["Status"] == "created"
    engine("rm", "clash")
    # and a port held by a running ketch container is taken too
    serve(engine, "holder", "one", "-p", f"{port}:80")
    try:
        proc = engine("run", "--rm", "-p", f"{port}:80", IMAGE, "true", check=False)
        assert proc.returncode == 125 and "port is already allocated" in proc.stderr
        assert http_get("127.0.0.1", port) == "one"
    finally:
        engine("rm", "-f", "holder")


def test_publish_all_takes_random_ports_for_exposed_ones(engine: Engine) -> None:
    serve(engine, "all", "random", "--expose", "80", "-P")
    try:
        line = engine("port", "all").stdout.strip()
        assert line.startswith("80/tcp -> 0.0.0.0:")
        assert http_get("127.0.0.1", int(line.rsplit(":", 1)[1])) == "random"
    finally:
        engine("rm", "-f", "all")


def test_concurrent_starts_never_share_an_address(engine: Engine) -> None:
    names = [f"par{i}" for i in range(6)]
    procs = [subprocess.Popen([*engine_cmd(engine), "run", "-d", "--name", n, IMAGE, "sleep", "60"],
                              env=engine.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for n in names]  # fmt: skip
    try:
        for p in procs:
            _out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
        addresses = [address_of(engine, n) for n in names]
        assert all(addresses) and len(set(addresses)) == len(names)
    finally:
        engine("rm", "-f", *names, check=False)


def engine_cmd(engine: Engine) -> list[str]:
    from enginefix import KETCH

    return [KETCH, *engine.flags]


# --- user-defined networks -----------------------------------------------------------------------------


def test_containers_on_a_user_network_talk_by_name_alias_and_id(engine: Engine) -> None:
    engine("network", "create", "talk")
    try:
        serve(
            engine,
            "srv",
            "by-name",
            "--network",
            "talk",
            "--network-alias",
            "web",
            "--mac-address",
            "02:42:aa:bb:cc:dd",
        )
        assert (
            engine.inspect("srv")["NetworkSettings"]["Networks"]["talk"]["MacAddress"] == "02:42:aa:bb:cc:dd"
        )
        assert "02:42:aa:bb:cc:dd" in engine("exec", "srv", "cat", "/sys/class/net/eth0/address").stdout
        short = engine.inspect("srv")["Id"][:12]
        script = " && ".join([fetch("srv"), fetch("web"), fetch(short), "cat /etc/resolv.conf"])
        out = in_container(engine, "--network", "talk", IMAGE, "sh", "-c", script).stdout
        assert out.splitlines()[:3] == ["by-name"] * 3
        gateway = json.loads(engine("network", "inspect", "talk").stdout)[0]["IPAM"]["Config"][0]["Gateway"]
        assert f"nameserver {gateway}" in out
        doc = json.loads(engine("network", "inspect", "talk").stdout)[0]
        assert [c["Name"] for c in doc["Containers"].values()] == ["srv"]
        settings = engine.inspect("srv")["NetworkSettings"]["Networks"]["talk"]
        assert settings["Aliases"] == ["web"] and settings["IPAddress"] and settings["Gateway"] == gateway
        # the default bridge has no embedded resolver: its containers get the host's (Docker's behaviour)
        assert f"nameserver {gateway}" not in in_container(engine, IMAGE, "cat", "/etc/resolv.conf").stdout
        # networks are isolated from each other
        assert (
            in_container(engine, IMAGE, "sh", "-c", fetch(address_of(engine, "srv", "talk"), wait=1)).stdout
            == ""
        )
    finally:
        engine("rm", "-f", "srv", check=False)
        engine("network", "rm", "talk")


def test_other_names_are_forwarded_to_the_containers_dns_servers(engine: Engine) -> None:
    from ketch.network.dns import DnsServer

    class Upstream:
        def local(self, server_ip: str, client_ip: str, name: str) -> tuple[list[str], list[str]] | None:
            return (["198.51.100.77"], []) if name == "outside.test" else None

        def reverse(self, server_ip: str, client_ip: str, address: str) -> str | None:
            return None

        def upstreams(self, server_ip: str, client_ip: str) -> list[tuple[str, int]]:
            return []

    upstream = DnsServer(Upstream(), port=53)
    try:
        upstream.add_address("127.0.0.153")
    except Exception as exc:  # port 53 of 127.0.0.153 taken on this host
        upstream.close()
        pytest.skip(f"cannot serve DNS on 127.0.0.153:53: {exc}")
    stop = threading.Event()
    thread = threading.Thread(target=upstream.serve_forever, kwargs={"stop": stop.is_set, "tick": 0.1})
    thread.start()
    try:
        engine("network", "create", "fwd")
        out = in_container(engine, "--network", "fwd", "--dns", "127.0.0.153", IMAGE,
                           "busybox", "nslookup", "outside.test").stdout  # fmt: skip
        assert "198.51.100.77" in out
    finally:
        stop.set()
        thread.join()
        upstream.close()
        engine("network", "rm", "fwd", check=False)


def test_network_container_mode_shares_the_namespace(engine: Engine) -> None:
    engine("network", "create", "share")
    try:
        serve(engine, "owner", "shared", "--network", "share", "--hostname", "owner-host")
        script = f"busybox ip -4 addr show eth0; hostname; {fetch('127.0.0.1')}"
        out = in_container(engine, "--network", "container:owner", IMAGE, "sh", "-c", script).stdout
        assert address_of(engine, "owner", "share") in out
        assert out.splitlines()[-2:] == ["owner-host", "shared"]
        bad = in_container(engine, "--network", "container:owner", "-p", "80:80", IMAGE, "true", check=False)
        assert bad.returncode == 125 and "conflicting options" in bad.stderr
    finally:
        engine("rm", "-f", "owner", check=False)
        engine("network", "rm", "share")


def test_connect_and_disconnect_a_running_container(engine: Engine) -> None:
    engine("network", "create", "left")
    engine("network", "create", "--subnet", "10.254.77.0/24", "right")
    try:
        serve(engine, "target", "reached", "--network", "right")
        engine("run", "-d", "--name", "client", "--network", "left", IMAGE, "sleep", "300")
        target = address_of(engine, "target", "right")
        assert engine("exec", "client", "sh", "-c", fetch(target, wait=1)).stdout == ""
        engine("network", "connect", "--alias", "cli", "--ip", "10.254.77.9", "right", "client")
        assert address_of(engine, "client", "right") == "10.254.77.9"
        assert engine("exec", "client", "sh", "-c", fetch(target)).stdout.strip() == "reached"
        assert engine("exec", "client", "sh", "-c", fetch("target")).stdout.strip() == "reached"  # by name
        assert set(engine.inspect("client")["NetworkSettings"]["Networks"]) == {"left", "right"}
        engine("network", "disconnect", "right", "client")
        assert engine("exec", "client", "sh", "-c", fetch(target, wait=1)).stdout == ""
        assert set(engine.inspect("client")["NetworkSettings"]["Networks"]) == {"left"}
        assert "eth1" not in engine("exec", "client", "cat", "/proc/net/dev").stdout
    finally:
        engine("rm", "-f", "target", "client", check=False)
        engine("network", "rm", "left", "right")


def test_user_network_with_ipv6(engine: Engine) -> None:
    engine("network", "create", "--ipv6", "--subnet", "fd42:6b74::/64", "six")
    try:
        engine("run", "-d", "--name", "v6a", "--network", "six", IMAGE, "sleep", "300")
        settings = engine.inspect("v6a")["NetworkSettings"]["Networks"]["six"]
        assert settings["GlobalIPv6Address"].startswith("fd42:6b74::") and settings["IPAddress"]
        out = in_container(engine, "--network", "six", IMAGE, "busybox", "ping", "-6", "-c", "1", "-W", "3",
                           settings["GlobalIPv6Address"]).stdout  # fmt: skip
        assert "1 packets received" in out
    finally:
        engine("rm", "-f", "v6a", check=False)
        engine("network", "rm", "six")


def test_a_dead_containers_address_is_reclaimed(engine: Engine) -> None:
    engine("network", "create", "--subnet", "10.251.7.0/24", "crash")
    try:
        engine(
            "run",
            "-d",
            "--name",
            "victim",
            "--network",
            "crash",
            "--ip",
            "10.251.7.50",
            IMAGE,
            "sleep",
            "300",
        )
        state = json.loads(
            Path(engine.root, "containers", engine.inspect("victim")["Id"], "state.json").read_text()
        )
        os.kill(state["monitor"], 9)  # a crash: the monitor dies, then the container
        os.kill(state["pid"], 9)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{state['pid']}").exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        engine(
            "run", "-d", "--name", "heir", "--network", "crash", "--ip", "10.251.7.50", IMAGE, "sleep", "300"
        )
        assert address_of(engine, "heir", "crash") == "10.251.7.50"
    finally:
        engine("rm", "-f", "victim", "heir", check=False)
        engine("network", "rm", "crash")


def test_restart_brings_the_network_back(engine: Engine) -> None:
    engine("network", "create", "again")
    try:
        serve(engine, "phoenix", "back", "--network", "again")
        engine("restart", "-t", "1", "phoenix")
        wait_listening(engine, "phoenix")
        assert (
            in_container(engine, "--network", "again", IMAGE, "sh", "-c", fetch("phoenix")).stdout.strip()
            == "back"
        )
    finally:
        engine("rm", "-f", "phoenix", check=False)
        engine("network", "rm", "again")


# --- the network verbs and bad input ---------------------------------------------------------------------


def test_network_verbs(engine: Engine) -> None:
    created = engine("network", "create", "--subnet", "10.252.0.0/24", "--gateway", "10.252.0.254",
                     "--ip-range", "10.252.0.128/25", "--label", "team=a", "--internal", "verbs").stdout.strip()  # fmt: skip
    try:
        assert len(created) == 64
        ls = engine("network", "ls").stdout.splitlines()
        assert ls[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
        assert {line.split()[1] for line in ls[1:]} >= {"bridge", "host", "none", "verbs"}
        assert engine("network", "ls", "-q", "--filter", "label=team=a").stdout.split() == [created[:12]]
        doc = json.loads(engine("network", "inspect", "verbs").stdout)[0]
        assert doc["IPAM"]["Config"] == [
            {"Subnet": "10.252.0.0/24", "Gateway": "10.252.0.254", "IPRange": "10.252.0.128/25"}
        ]
        assert doc["Internal"] is True and doc["Labels"] == {"team": "a"} and doc["Driver"] == "bridge"
        out = in_container(
            engine, "--network", "verbs", IMAGE, "busybox", "ip", "-4", "addr", "show", "eth0"
        ).stdout
        assert "inet 10.252.0.128/24" in out  # the first of the range
        assert (
            "default"
            not in in_container(engine, "--network", "verbs", IMAGE, "busybox", "ip", "route").stdout
        )
    finally:
        engine("network", "rm", "verbs")
    assert "verbs" not in engine("network", "ls").stdout


def test_bad_network_input_is_one_clear_line(engine: Engine) -> None:
    engine("network", "create", "--subnet", "10.253.0.0/16", "first")
    try:
        proc = engine("network", "create", "--subnet", "10.253.5.0/24", "second", check=False)
        assert proc.returncode == 1 and "overlaps" in proc.stderr and proc.stderr.count("\n") == 1
        assert "second" not in engine("network", "ls").stdout
        proc = engine("network", "create", "first", check=False)
        assert proc.returncode == 1 and "already exists" in proc.stderr
        proc = engine("run", "--rm", "--network", "nowhere", IMAGE, "true", check=False)
        assert proc.returncode == 125 and "network nowhere not found" in proc.stderr
        proc = engine("run", "--rm", "--ip", "10.87.0.9", IMAGE, "true", check=False)
        assert proc.returncode == 125 and "user defined networks" in proc.stderr
        proc = engine("run", "--rm", "-p", "99999:80", IMAGE, "true", check=False)
        assert proc.returncode == 125 and "invalid" in proc.stderr
        proc = engine("network", "rm", "bridge", check=False)
        assert proc.returncode == 1 and "pre-defined" in proc.stderr
        engine("run", "-d", "--name", "user", "--network", "first", IMAGE, "sleep", "300")
        proc = engine("network", "rm", "first", check=False)
        assert proc.returncode == 1 and "active endpoints" in proc.stderr
    finally:
        engine("rm", "-f", "user", check=False)
        engine("network", "rm", "first")
