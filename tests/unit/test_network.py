"""Pure networking logic: IPAM, port specs, firewall rules rendered as data, iproute2 commands."""

from __future__ import annotations

import pytest

from ketch.errors import Conflict, InvalidArgument
from ketch.network import bridge, firewall, ipam, ports
from ketch.network.ports import PortBinding
from ketch.network.store import Endpoint, NetworkRecord, Subnet

# --- IPAM ----------------------------------------------------------------------------------------------


def test_allocation_is_sequential_skips_the_gateway_and_wraps() -> None:
    assert ipam.allocate("10.0.0.0/24", "10.0.0.1", "", []) == "10.0.0.2"
    assert ipam.allocate("10.0.0.0/24", "10.0.0.1", "", ["10.0.0.2"], last="10.0.0.2") == "10.0.0.3"
    # after the last one handed out, even when a lower one is free again
    assert ipam.allocate("10.0.0.0/24", "10.0.0.1", "", [], last="10.0.0.7") == "10.0.0.8"
    # the broadcast address is never handed out; it wraps to the start
    assert ipam.allocate("10.0.0.0/24", "10.0.0.1", "", [], last="10.0.0.254") == "10.0.0.2"


def test_allocation_honours_the_range_and_reports_exhaustion() -> None:
    assert ipam.allocate("10.0.0.0/24", "10.0.0.1", "10.0.0.128/25", []) == "10.0.0.128"
    used = [f"10.0.0.{i}" for i in range(2, 7)]
    with pytest.raises(Conflict, match="no available IPv4 addresses"):
        ipam.allocate("10.0.0.0/29", "10.0.0.1", "", used)
    assert ipam.allocate("fd00::/64", "fd00::1", "", []) == "fd00::2"


def test_requested_addresses_are_checked() -> None:
    assert ipam.check_requested("10.0.0.0/24", "10.0.0.1", "10.0.0.9", []) == "10.0.0.9"
    with pytest.raises(InvalidArgument, match="not in subnet"):
        ipam.check_requested("10.0.0.0/24", "10.0.0.1", "10.0.1.9", [])
    with pytest.raises(InvalidArgument, match="reserved"):
        ipam.check_requested("10.0.0.0/24", "10.0.0.1", "10.0.0.1", [])
    with pytest.raises(Conflict, match="already in use"):
        ipam.check_requested("10.0.0.0/24", "10.0.0.1", "10.0.0.9", ["10.0.0.9"])
    with pytest.raises(InvalidArgument):
        ipam.check_requested("10.0.0.0/24", "10.0.0.1", "nonsense", [])


def test_subnets_come_from_pools_clear_of_what_is_taken() -> None:
    pools = [("10.90.0.0/15", 24)]
    assert ipam.choose_subnet(pools, []) == "10.90.0.0/24"
    assert ipam.choose_subnet(pools, ["10.90.0.0/24", "10.90.1.128/25"]) == "10.90.2.0/24"
    assert ipam.choose_subnet(pools, ["10.90.0.0/16"]) == "10.91.0.0/24"
    with pytest.raises(Conflict, match="fully subnetted"):
        ipam.choose_subnet([("10.0.0.0/24", 24)], ["10.0.0.0/8"])


def test_network_configs_are_checked() -> None:
    ipam.check_config("10.1.0.0/16", "10.1.0.254", "10.1.2.0/24")
    for subnet, gateway, ip_range, message in [
        ("10.1.0.1/16", "", "", "invalid subnet"),
        ("10.1.0.0/16", "10.2.0.1", "", "not in subnet"),
        ("10.1.0.0/16", "", "10.2.0.0/24", "not in subnet"),
        ("10.1.0.0/16", "", "fd00::/64", "not in subnet"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            ipam.check_config(subnet, gateway, ip_range)
    assert ipam.overlaps("10.1.0.0/16", "10.1.5.0/24") and not ipam.overlaps("10.1.0.0/16", "fd00::/64")


def test_macs_and_routes(tmp_path: object) -> None:
    assert ipam.mac_for("10.87.0.2") == "02:42:0a:57:00:02"
    mac = ipam.random_mac()
    assert len(mac) == 17 and int(mac[:2], 16) & 0x03 == 0x02
    from pathlib import Path

    table = Path(str(tmp_path)) / "route"
    table.write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "ketch0\t0000570A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
    )
    assert ipam.host_routes(str(table)) == ["192.0.2.0/24", "10.87.0.0/16"]
    assert ipam.host_routes(str(table), ignore=["ketch0"]) == ["192.0.2.0/24"]


# --- port specs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", [PortBinding(80)]),
        ("8080:80", [PortBinding(80, host_port=8080)]),
        ("127.0.0.1:8080:80/udp", [PortBinding(80, "udp", "127.0.0.1", 8080)]),
        ("127.0.0.1::80", [PortBinding(80, host_ip="127.0.0.1")]),
        ("[::1]:8080:80", [PortBinding(80, host_ip="::1", host_port=8080)]),
        ("8000-8001:80-81", [PortBinding(80, host_port=8000), PortBinding(81, host_port=8001)]),
        ("8000-8010:80", [PortBinding(80, host_port=8000, host_port_end=8010)]),
        ("80-81", [PortBinding(80), PortBinding(81)]),
        ("53/SCTP", [PortBinding(53, "sctp")]),
    ],
)
def test_port_specs(spec: str, expected: list[PortBinding]) -> None:
    assert ports.parse(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0", "invalid port range"),
        ("70000:80", "invalid port range"),
        ("x:80", "invalid port format"),
        ("80/icmp", "invalid proto"),
        ("1.2.3.4.5:80:80", "invalid IP address"),
        ("8000-8002:80-81", "invalid ranges"),
        ("a:b:c:d", "invalid port format"),
        ("[::1:80:80", "invalid IP address"),
    ],
)
def test_bad_port_specs(spec: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        ports.parse(spec)


def test_exposed_ports_and_dockers_port_map() -> None:
    assert ports.exposed(["80/tcp", "53/udp"]) == [PortBinding(80), PortBinding(53, "udp")]
    bound = [PortBinding(80, host_port=8080), PortBinding(80, host_ip="127.0.0.1", host_port=9090)]
    assert ports.docker_ports(bound, ["80/tcp", "443/tcp"]) == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": "9090"}],
        "443/tcp": None,
    }


def test_reserving_a_port_holds_it_until_released() -> None:
    (bound,), held = ports.reserve([PortBinding(80, host_ip="127.0.0.1")])
    try:
        assert bound.host_port > 0
        with pytest.raises(Conflict, match="port is already allocated"):
            ports.reserve([PortBinding(80, host_ip="127.0.0.1", host_port=bound.host_port)])
        # a range moves on to the next free port
        (other,), more = ports.reserve(
            [
                PortBinding(
                    81, host_ip="127.0.0.1", host_port=bound.host_port, host_port_end=bound.host_port + 20
                )
            ]
        )
        assert other.host_port != bound.host_port and other.host_port_end == 0
        for sock in more:
            sock.close()
    finally:
        for sock in held:
            sock.close()


# --- firewall rules ---------------------------------------------------------------------------------------

NET = NetworkRecord("n1", "web", "t", "ketch-n1", (Subnet("10.90.0.0/24", "10.90.0.1"),))
INTERNAL = NetworkRecord("n2", "back", "t", "ketch-n2", (Subnet("10.90.1.0/24", "10.90.1.1"),), internal=True)
EP = Endpoint("n1", "c" * 64, "web1", "eth0", "vethc", "02:42:0a:5a:00:02", ipv4="10.90.0.2",
              ports=(PortBinding(80, host_port=8080), PortBinding(53, "udp", "127.0.0.1", 5353)))  # fmt: skip


def test_rules_for_a_network_and_its_published_ports() -> None:
    lines = [r.line() for r in firewall.render(4, [NET], [EP], "KT")]
    assert "-A KT-POSTROUTING -s 10.90.0.0/24 ! -o ketch-n1 -j MASQUERADE" in lines
    assert "-A KT-FORWARD -i ketch-n1 -o ketch-n1 -j ACCEPT" in lines
    assert "-A KT-FORWARD -i ketch-n1 -o ketch+ -j DROP" in lines
    assert "-A KT-DNAT -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.90.0.2:80" in lines
    assert "-A KT-DNAT -d 127.0.0.1 -p udp -m udp --dport 5353 -j DNAT --to-destination 10.90.0.2:53" in lines
    assert not [r for r in firewall.render(6, [NET], [EP], "KT")]  # no IPv6 subnet, no IPv6 rules


def test_an_internal_network_neither_masquerades_nor_forwards_out() -> None:
    lines = [r.line() for r in firewall.render(4, [INTERNAL], [], "KT")]
    assert not any("! -o ketch-n2 -j MASQUERADE" in line for line in lines)
    assert "-A KT-FORWARD -i ketch-n2 -j DROP" in lines and "-A KT-FORWARD -o ketch-n2 -j DROP" in lines


def test_restore_text_replaces_chains_and_adds_only_missing_jumps() -> None:
    rules = firewall.render(4, [NET], [], "KT")
    present = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j KT-FORWARD\nCOMMIT\n"
    text = firewall.restore_text(rules, present, prefix="KT")
    assert text.startswith("*nat\n:KT-POSTROUTING - [0:0]\n:KT-DNAT - [0:0]\n")
    assert "-A POSTROUTING -j KT-POSTROUTING" in text
    assert "-A PREROUTING -m addrtype --dst-type LOCAL -j KT-DNAT" in text
    assert "-I FORWARD -j KT-FORWARD" not in text  # already there
    removal = firewall.restore_text([], present, remove=True, prefix="KT")
    assert "-D FORWARD -j KT-FORWARD" in removal and "-X KT-FORWARD" in removal
    assert "-D POSTROUTING" not in removal  # never there


# --- iproute2 commands -----------------------------------------------------------------------------------


def test_attach_commands_for_both_namespaces() -> None:
    six = NetworkRecord("n3", "six", "t", "ketch-n3",
                        (Subnet("10.90.2.0/24", "10.90.2.1"), Subnet("fd00::/64", "fd00::1")), ipv6=True)  # fmt: skip
    ep = Endpoint(
        "n3", "d" * 64, "x", "eth1", "vethd1", "02:42:0a:5a:02:02", ipv4="10.90.2.2", ipv6="fd00::2"
    )
    host, inside = bridge.attach_commands(ep, six, 4242, default_route=True)
    assert host[0] == "link add vethd1 mtu 1500 type veth peer name eth1 address 02:42:0a:5a:02:02 netns 4242"
    assert "link set vethd1 master ketch-n3 up" in host
    assert inside == ["link set lo up", "addr add 10.90.2.2/24 dev eth1", "addr add fd00::2/64 dev eth1 nodad",
                      "link set eth1 up", "route add default via 10.90.2.1 dev eth1",
                      "route add ::/0 via fd00::1 dev eth1"]  # fmt: skip
    _, quiet = bridge.attach_commands(ep, six, 4242, default_route=False)
    assert not [c for c in quiet if c.startswith("route")]
    assert bridge.bridge_commands(six) == ["link add ketch-n3 type bridge", "addr add 10.90.2.1/24 dev ketch-n3",
                                           "addr add fd00::1/64 dev ketch-n3 nodad", "link set ketch-n3 up"]  # fmt: skip
