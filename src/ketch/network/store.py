"""Network records (persistent) and endpoints (runtime), on disk.

    <root>/networks/<id>.json                 a network: name, driver, subnets, options
    <root>/networks/lock                      held while a network is created or removed
    <runroot>/networks/<id>/<container>.json  an endpoint: a running container's address(es)
    <runroot>/networks/<id>/lock              held while addresses are handed out or given back
    <runroot>/networks/<id>/last              the last address handed out (sequential IPAM)

Endpoints live on the runtime root (a tmpfs): they exist exactly as long as the container runs,
and a reboot, which also takes the bridges, veths and rules away, leaves none behind. The set
of endpoint files *is* the allocation: an address is taken when its endpoint file has been
renamed into place under the network's lock, so two containers never share one, whatever
crashes when.
"""

from __future__ import annotations

import os

from ketch import jsonio
from ketch.errors import AlreadyExists, InvalidArgument, NotFound
from ketch.files import FileLock, atomic_write
from ketch.network.ports import PortBinding
from ketch.record import Record, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

DEFAULT = "bridge"  # the default network's name, as Docker's
PREDEFINED = ("bridge", "host", "none")
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class Subnet(Record):
    subnet: str
    gateway: str
    ip_range: str = ""

    @property
    def ipv6(self) -> bool:
        return ":" in self.subnet


class NetworkRecord(Record):
    id: str
    name: str
    created: str
    bridge: str  # the Linux bridge device
    subnets: tuple[Subnet, ...]
    driver: str = "bridge"
    internal: bool = False
    ipv6: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def default(self) -> bool:
        return self.name == DEFAULT

    def subnet(self, ipv6: bool = False) -> Subnet | None:
        return next((s for s in self.subnets if s.ipv6 == ipv6), None)

    def to_json(self) -> dict[str, Any]:
        out = self.to_dict()
        out["subnets"] = [s.to_dict() for s in self.subnets]
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> NetworkRecord:
        return cls(**{**doc, "subnets": tuple(Subnet(**s) for s in doc["subnets"])})


class Endpoint(Record):
    network: str  # network id
    container: str  # container id
    name: str  # the container's name (what DNS answers for)
    interface: str  # inside the container: eth0, eth1...
    veth: str  # the host's end
    mac: str
    ipv4: str = ""
    ipv6: str = ""
    aliases: tuple[str, ...] = ()
    ports: tuple[PortBinding, ...] = ()
    dns: tuple[str, ...] = ()  # --dns: where the embedded resolver forwards this container's queries
    monitor: int = 0  # the pid (and start time) of the process that holds the endpoint: while it
    monitor_start: int = 0  # lives, the address is taken even if the container is between runs

    def to_json(self) -> dict[str, Any]:
        out = self.to_dict()
        out["aliases"] = list(self.aliases)
        out["dns"] = list(self.dns)
        out["ports"] = [p.to_dict() for p in self.ports]
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Endpoint:
        return cls(**{**doc, "aliases": tuple(doc.get("aliases", ())), "dns": tuple(doc.get("dns", ())),
                      "ports": tuple(PortBinding(**p) for p in doc.get("ports", ()))})  # fmt: skip


def check_name(name: str) -> str:
    if not name or name[0] in "_.-" or not set(name) <= NAME_CHARS:
        raise InvalidArgument(f'invalid network name "{name}": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed')
    return name


def _read_endpoint(path: str) -> Endpoint | None:
    """An endpoint file; None when it is gone (the container stopped meanwhile) or unreadable."""
    try:
        with open(path, "rb") as f:
            return Endpoint.from_json(jsonio.loads(f.read()))
    except (FileNotFoundError, NotADirectoryError, ValueError, KeyError, TypeError):
        return None


class NetworkStore:
    def __init__(self, root: str, runroot: str) -> None:
        self.dir = os.path.join(root, "networks")
        self.rundir = os.path.join(runroot, "networks")

    # --- networks ---------------------------------------------------------------------------------

    def lock(self) -> FileLock:
        os.makedirs(self.dir, exist_ok=True)
        return FileLock(os.path.join(self.dir, "lock"))

    def all(self) -> list[NetworkRecord]:
        try:
            names = sorted(n for n in os.listdir(self.dir) if n.endswith(".json"))
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            try:
                out.append(self._read(os.path.join(self.dir, n)))
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                continue  # removed meanwhile, or a torn file from before atomic writes: skip it
        return out

    def _read(self, path: str) -> NetworkRecord:
        with open(path, "rb") as f:
            return NetworkRecord.from_json(jsonio.loads(f.read()))

    def get(self, ref: str) -> NetworkRecord:
        """By name, full id or unambiguous id prefix (Docker's order: id, name, then prefix)."""
        nets = self.all()
        exact = [n for n in nets if n.id == ref] or [n for n in nets if n.name == ref]
        if exact:
            return exact[0]
        found = [n for n in nets if ref and n.id.startswith(ref)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InvalidArgument(
                f"network {ref} is ambiguous ({len(found)} matches found based on ID prefix)"
            )
        raise NotFound(f"network {ref} not found")

    def find(self, ref: str) -> NetworkRecord | None:
        try:
            return self.get(ref)
        except NotFound:
            return None

    def add(self, record: NetworkRecord) -> None:
        """Store a new network; call with lock() held."""
        if any(n.name == record.name for n in self.all()):
            raise AlreadyExists(f"network with name {record.name} already exists")
        atomic_write(
            os.path.join(self.dir, f"{record.id}.json"), jsonio.dumps(record.to_json()).encode(), 0o600
        )

    def remove(self, record: NetworkRecord) -> None:
        try:
            os.unlink(os.path.join(self.dir, f"{record.id}.json"))
        except FileNotFoundError:
            pass
        import shutil

        shutil.rmtree(os.path.join(self.rundir, record.id), ignore_errors=True)

    # --- endpoints ----------------------------------------------------------------------------------

    def _epdir(self, network_id: str) -> str:
        return os.path.join(self.rundir, network_id)

    def endpoint_lock(self, network_id: str) -> FileLock:
        os.makedirs(self._epdir(network_id), exist_ok=True)
        return FileLock(os.path.join(self._epdir(network_id), "lock"))

    def endpoints(self, network_id: str) -> list[Endpoint]:
        directory = self._epdir(network_id)
        try:
            names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
        except FileNotFoundError:
            return []
        found = (_read_endpoint(os.path.join(directory, n)) for n in names)
        return [ep for ep in found if ep is not None]

    def endpoints_of(self, container_id: str) -> Iterator[Endpoint]:
        """The container's endpoints on every network (read without locks)."""
        try:
            networks = os.listdir(self.rundir)
        except FileNotFoundError:
            return
        for network_id in networks:
            ep = _read_endpoint(os.path.join(self.rundir, network_id, f"{container_id}.json"))
            if ep is not None:
                yield ep

    def put_endpoint(self, endpoint: Endpoint) -> None:
        """Record an endpoint; call with endpoint_lock() held. Not fsynced: it lives on a tmpfs."""
        path = os.path.join(self._epdir(endpoint.network), f"{endpoint.container}.json")
        atomic_write(path, jsonio.dumps(endpoint.to_json()).encode(), 0o600, durable=False)

    def drop_endpoint(self, network_id: str, container_id: str) -> bool:
        try:
            os.unlink(os.path.join(self._epdir(network_id), f"{container_id}.json"))
            return True
        except FileNotFoundError:
            return False

    def last(self, network_id: str, family: int) -> str:
        try:
            with open(os.path.join(self._epdir(network_id), f"last{family}")) as f:
                return f.read().strip()
        except FileNotFoundError:
            return ""

    def set_last(self, network_id: str, family: int, address: str) -> None:
        path = os.path.join(self._epdir(network_id), f"last{family}")
        atomic_write(path, address.encode(), 0o600, durable=False)
