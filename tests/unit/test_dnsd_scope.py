"""The embedded resolver answers a container with the names of the networks it is on, only."""

from __future__ import annotations

from pathlib import Path

from ketch.network.dnsd import Resolver
from ketch.network.store import Endpoint, NetworkStore


def endpoint(network: str, container: str, name: str, ipv4: str, aliases: tuple[str, ...] = ()) -> Endpoint:
    return Endpoint(
        network, container * 64, name, "eth0", "veth0", "02:42:00:00:00:00", ipv4=ipv4, aliases=aliases
    )


def test_scope_is_the_clients_networks(tmp_path: Path) -> None:
    store = NetworkStore(str(tmp_path / "root"), str(tmp_path / "run"))
    for ep in (endpoint("neta", "a", "web", "10.1.0.2", ("www",)), endpoint("neta", "b", "client", "10.1.0.3"),
               endpoint("netb", "c", "db", "10.2.0.2"), endpoint("netb", "b", "client", "10.2.0.3"),
               endpoint("netc", "d", "secret", "10.3.0.2")):  # fmt: skip
        with store.endpoint_lock(ep.network):
            store.put_endpoint(ep)
    resolver = Resolver(store)
    resolver.networks = {
        "10.1.0.1": ("neta", "a-net"),
        "10.2.0.1": ("netb", "b-net"),
        "10.3.0.1": ("netc", "c"),
    }
    assert resolver.local("10.1.0.1", "10.1.0.3", "web") == (["10.1.0.2"], [])
    assert resolver.local("10.1.0.1", "10.1.0.3", "www.a-net") == (["10.1.0.2"], [])
    assert resolver.local("10.1.0.1", "10.1.0.3", "a" * 12) == (["10.1.0.2"], [])
    assert resolver.local("10.1.0.1", "10.1.0.3", "db") == (["10.2.0.2"], [])  # the client is on netb too
    assert resolver.local("10.1.0.1", "10.1.0.3", "secret") is None  # netc is not the client's
    assert resolver.local("10.3.0.1", "10.1.0.3", "secret") is None  # nor through netc's gateway
    assert resolver.reverse("10.1.0.1", "10.1.0.3", "10.1.0.2") == "web.a-net"
    assert resolver.reverse("10.1.0.1", "10.1.0.3", "10.2.0.2") == "db.b-net"
    assert resolver.reverse("10.3.0.1", "10.1.0.3", "10.3.0.2") is None
