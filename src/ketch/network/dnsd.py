"""The embedded DNS daemon: one process per runtime root, serving every user-defined network.

It listens on port 53 of each user network's gateway (podman's aardvark-dns does the same;
Docker answers on 127.0.0.11 inside each container, which needs a per-container NAT rule), and
answers a container's name, its aliases and its short id with the addresses of the endpoints
on *that* network, from the endpoint files under <runroot>/networks/ (re-read when their
directory changes). Every other name goes to the container's --dns servers or the host's
resolvers (which the daemon, in the host's namespace, can reach even on loopback).

    python -m ketch.network.dnsd ROOT RUNROOT

`ensure()` starts it on demand and waits until it serves an address; SIGHUP makes it rescan
the networks; it exits when no user network is left. Its state: <runroot>/networks/dns.json
({"pid", "addresses"}), rewritten after every rescan.
"""

from __future__ import annotations

import os
import signal
import sys

from ketch import jsonio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.network.store import Endpoint, NetworkStore

_WAIT = 5.0  # how long ensure() waits for the daemon to serve an address


def _state_path(runroot: str) -> str:
    return os.path.join(runroot, "networks", "dns.json")


def _state(runroot: str) -> dict[str, Any]:
    """The running daemon's state file ({} when none runs)."""
    try:
        with open(_state_path(runroot), "rb") as f:
            doc: dict[str, Any] = jsonio.loads(f.read())
    except (FileNotFoundError, ValueError):
        return {}
    pid = doc.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return {}
    return doc


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"ketch.network.dnsd" in f.read()
    except OSError:
        return False


def ensure(root: str, runroot: str, address: str) -> None:
    """Make sure the daemon serves `address`: start it, or make it rescan, and wait. A daemon
    that is on its way out (its last network just went) is replaced."""
    if address in _addresses(_state(runroot)):
        return
    import time

    from ketch.errors import Unavailable
    from ketch.files import FileLock

    os.makedirs(os.path.join(runroot, "networks"), exist_ok=True)
    with FileLock(os.path.join(runroot, "networks", "dns.lock")):
        spawned: Any = None
        kicked = 0
        deadline = time.monotonic() + _WAIT
        while time.monotonic() < deadline:
            state = _state(runroot)
            if address in _addresses(state):
                return
            pid = state.get("pid")
            if isinstance(pid, int) and pid != kicked:
                os.kill(pid, signal.SIGHUP)
                kicked = pid
            elif not state and (spawned is None or spawned.poll() is not None):
                spawned = _spawn(root, runroot)
            time.sleep(0.005)
    raise Unavailable(f"the embedded DNS server did not start serving {address}")


def _addresses(state: dict[str, Any]) -> list[str]:
    found = state.get("addresses")
    return found if isinstance(found, list) else []


def _spawn(root: str, runroot: str) -> Any:
    import subprocess

    return subprocess.Popen(
        [sys.executable, "-m", "ketch.network.dnsd", root, runroot], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
    )  # fmt: skip


def reload(runroot: str) -> None:
    state = _state(runroot)
    if state:
        try:
            os.kill(int(state["pid"]), signal.SIGHUP)
        except ProcessLookupError:
            pass


def stop(runroot: str) -> None:
    """Stop the daemon (tests, teardown) and wait until it is gone."""
    import time

    state = _state(runroot)
    if not state:
        return
    pid = int(state["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


# --- the daemon --------------------------------------------------------------------------------------


class _Wake(Exception):
    """Raised by the signal handlers to end a blocking poll."""


class Resolver:
    """Answers from the endpoint files of the network whose gateway a query arrived on."""

    def __init__(self, store: NetworkStore) -> None:
        self.store = store
        self.networks: dict[str, tuple[str, str]] = {}  # gateway -> (network id, network name)
        self._cache: dict[str, tuple[float, list[Endpoint]]] = {}

    def rescan(self) -> set[str]:
        """The gateways to serve: user-defined bridge networks whose bridge is up."""
        from ketch.network import bridge
        from ketch.network.store import DEFAULT

        self.networks = {}
        for net in self.store.all():
            if net.driver == "bridge" and net.name != DEFAULT and net.bridge and bridge.exists(net.bridge):
                for s in net.subnets:
                    self.networks[s.gateway] = (net.id, net.name)
        return set(self.networks)

    def _endpoints(self, network_id: str) -> list[Endpoint]:
        directory = os.path.join(self.store.rundir, network_id)
        try:
            mtime = os.stat(directory).st_mtime
        except FileNotFoundError:
            return []
        cached = self._cache.get(network_id)
        if cached is None or cached[0] != mtime:
            cached = (mtime, self.store.endpoints(network_id))
            self._cache[network_id] = cached
        return cached[1]

    def _scope(self, server_ip: str, client_ip: str) -> list[tuple[str, str]]:
        """The networks whose names a client may resolve: every user network its container is on
        (as Docker's resolver answers). A client that is not on the network the query came in on
        (another network's container reaching this gateway through the host) learns none."""
        found = self.networks.get(server_ip)
        if found is None:
            return []
        served = {net_id: name for net_id, name in self.networks.values()}
        client = next((e for e in self._endpoints(found[0]) if client_ip in (e.ipv4, e.ipv6)), None)
        if client is None:
            return []
        scope = [found] + [(e.network, served[e.network]) for e in self.store.endpoints_of(client.container)
                           if e.network in served and e.network != found[0]]  # fmt: skip
        return scope

    def local(self, server_ip: str, client_ip: str, name: str) -> tuple[list[str], list[str]] | None:
        v4: list[str] = []
        v6: list[str] = []
        for network_id, network_name in self._scope(server_ip, client_ip):
            short = name.lower().removesuffix("." + network_name.lower())
            for ep in self._endpoints(network_id):
                names = {ep.name.lower(), ep.container[:12], ep.container, *(a.lower() for a in ep.aliases)}
                if short in names:
                    v4 += [ep.ipv4] if ep.ipv4 else []
                    v6 += [ep.ipv6] if ep.ipv6 else []
            if v4 or v6:
                break
        return (v4, v6) if v4 or v6 else None

    def reverse(self, server_ip: str, client_ip: str, address: str) -> str | None:
        for network_id, network_name in self._scope(server_ip, client_ip):
            for ep in self._endpoints(network_id):
                if address in (ep.ipv4, ep.ipv6):
                    return f"{ep.name}.{network_name}"
        return None

    def upstreams(self, server_ip: str, client_ip: str) -> list[tuple[str, int]]:
        from ketch.network.dns import host_upstreams

        found = self.networks.get(server_ip)
        if found is not None:
            for ep in self._endpoints(found[0]):
                if client_ip in (ep.ipv4, ep.ipv6) and ep.dns:
                    return [(d, 53) for d in ep.dns]
        return host_upstreams()


def main(root: str, runroot: str) -> int:
    from ketch.files import atomic_write
    from ketch.network.dns import DnsServer
    from ketch.network.store import NetworkStore

    os.makedirs(os.path.join(runroot, "networks"), exist_ok=True)
    import fcntl

    alone = os.open(
        os.path.join(runroot, "networks", "dns.pid.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    try:
        fcntl.flock(alone, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held for the daemon's life
    except BlockingIOError:
        return 0  # another daemon serves this runroot
    from ketch.errors import KetchError

    resolver = Resolver(NetworkStore(root, runroot))
    server = DnsServer(resolver)
    flags = {"rescan": True, "stop": False}

    def on_hup(_signum: int, _frame: object) -> None:
        flags["rescan"] = True
        raise _Wake  # out of the poll (PEP 475 would otherwise resume it)

    def on_term(_signum: int, _frame: object) -> None:
        flags["stop"] = True
        raise _Wake

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def housekeeping() -> None:
        if not flags["rescan"]:
            return
        flags["rescan"] = False
        wanted = resolver.rescan()
        if not wanted:
            flags["stop"] = True
        for address in set(server.addresses()) - wanted:
            server.remove_address(address)
        for address in wanted - set(server.addresses()):
            try:
                server.add_address(address)
            except KetchError:
                continue
        doc = {"pid": os.getpid(), "addresses": sorted(server.addresses())}
        atomic_write(_state_path(runroot), jsonio.dumps(doc).encode(), 0o644, durable=False)

    signals = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
    try:
        while not flags["stop"]:
            try:
                signal.pthread_sigmask(signal.SIG_BLOCK, signals)
                housekeeping()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)  # a pending signal lands here
                server.serve(None)
            except _Wake:
                continue
    finally:
        server.close()
        try:
            os.unlink(_state_path(runroot))
        except FileNotFoundError:
            pass
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.stderr.write("usage: python -m ketch.network.dnsd ROOT RUNROOT\n")
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
