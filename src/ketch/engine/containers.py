"""Container records on disk: the configuration a container was created with and its state.

    <root>/containers/<id>/container.json   what `create` decided (Docker's Config and HostConfig)
    <root>/containers/<id>/state.json       the lifecycle state, rewritten atomically by whoever
                                            changes it (monitor or CLI), under <id>/lock
    <root>/containers/<id>/<id>-json.log    the log, in Docker's json-file format
    <root>/containers/<id>/config.json      the OCI bundle's spec (written at each start)
    <root>/containers/<id>/rootfs/          where the snapshot is mounted while it runs
    <root>/names/<name> -> <id>             a symlink: creating it claims the name atomically

Status is never trusted blindly: a state that says running is checked against the monitor and
the container's init (by pid and start time), so `ps -a` tells the truth after a monitor crash
or a reboot.
"""

from __future__ import annotations

import os

from ketch import jsonio
from ketch.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from ketch.files import FileLock, atomic_write
from ketch.record import Record, field, replace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
UNKNOWN_EXIT = 255  # Docker's exit code for a container that died while nobody watched


class State(Record):
    status: str = "created"  # created | running | paused | restarting | removing | exited | dead
    pid: int = 0
    pid_start: int = 0  # the init's start time, so a reused pid is not mistaken for it
    monitor: int = 0
    monitor_start: int = 0
    exit_code: int = 0
    error: str = ""
    oom_killed: bool = False
    started_at: str = "0001-01-01T00:00:00Z"
    finished_at: str = "0001-01-01T00:00:00Z"
    restart_count: int = 0
    manually_stopped: bool = False  # `stop`/`kill` keep restart policies from bringing it back
    health: dict[str, Any] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused", "restarting")


class ContainerRecord(Record):
    id: str
    name: str
    created: str
    image: str  # image ID
    image_ref: str  # what the user asked for
    config: dict[
        str, Any
    ]  # Docker's Config: Hostname, User, Env, Cmd, Entrypoint, WorkingDir, Labels, Tty...
    host_config: dict[str, Any]  # Docker's HostConfig, plus ketch's parsed options under "Ketch"
    path: str = ""  # argv[0] as Docker reports it
    args: tuple[str, ...] = ()

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def to_json(self) -> dict[str, Any]:
        out = self.to_dict()
        out["args"] = list(self.args)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ContainerRecord:
        return cls(**{**d, "args": tuple(d.get("args", ()))})


def check_name(name: str) -> str:
    """Docker's rule: [a-zA-Z0-9][a-zA-Z0-9_.-]+ (a leading "/" is accepted and dropped)."""
    name = name.removeprefix("/")
    if len(name) < 2 or not name[0].isalnum() or not NAME_CHARS.issuperset(name) or not name.isascii():
        raise InvalidArgument(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name


class ContainerStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.dir = os.path.join(root, "containers")
        self.names = os.path.join(root, "names")
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs(self.names, exist_ok=True)

    def path(self, container_id: str, *parts: str) -> str:
        return os.path.join(self.dir, container_id, *parts)

    # --- creating and removing ---------------------------------------------------------------------

    def add(self, record: ContainerRecord, durable: bool = True) -> None:
        """Claim the name (atomically), then write the record; a taken name fails with nothing made.
        `durable=False` (an --rm container, gone at its exit anyway) skips the fsyncs: after a
        crash its record may be missing or empty, which listings skip and `container prune` removes."""
        link = os.path.join(self.names, record.name)
        try:
            os.symlink(record.id, link)
        except FileExistsError:
            other = os.readlink(link)
            raise AlreadyExists(
                f'Conflict. The container name "/{record.name}" is already in use by container "{other}". '
                "You have to remove (or rename) that container to be able to reuse that name."
            ) from None
        try:
            os.mkdir(self.path(record.id), 0o700)
            self._write(record.id, "container.json", record.to_json(), durable)
            self._write(record.id, "state.json", State().to_dict(), durable)
        except BaseException:
            os.unlink(link)
            raise

    def update_record(self, record: ContainerRecord) -> None:
        self._write(record.id, "container.json", record.to_json())

    def remove(self, record: ContainerRecord) -> None:
        """Drop the record: the directory first (renamed away), then the name."""
        from ketch.runtime.container import remove_tree

        doomed = self.path(f".removing-{record.id}")
        try:
            os.rename(self.path(record.id), doomed)
        except FileNotFoundError:
            pass
        remove_tree(doomed)
        try:
            if os.readlink(os.path.join(self.names, record.name)) == record.id:
                os.unlink(os.path.join(self.names, record.name))
        except FileNotFoundError:
            pass

    def rename(self, record: ContainerRecord, new: str) -> ContainerRecord:
        new = check_name(new)
        link = os.path.join(self.names, new)
        try:
            os.symlink(record.id, link)
        except FileExistsError:
            raise AlreadyExists(
                f'Error when allocating new name: Conflict. The container name "/{new}" is already in use'
            ) from None
        updated = replace(record, name=new)
        self._write(record.id, "container.json", updated.to_json())
        os.unlink(os.path.join(self.names, record.name))
        return updated

    # --- reading ----------------------------------------------------------------------------------

    def ids(self) -> list[str]:
        return [n for n in os.listdir(self.dir) if len(n) == 64 and not n.startswith(".")]

    def load(self, container_id: str) -> ContainerRecord:
        try:
            with open(self.path(container_id, "container.json"), "rb") as f:
                return ContainerRecord.from_json(jsonio.loads(f.read()))
        except FileNotFoundError:
            raise NotFound(f"No such container: {container_id}") from None

    def find(self, text: str) -> ContainerRecord:
        """By name, full ID or unambiguous ID prefix, as Docker resolves them."""
        name = text.removeprefix("/")
        try:
            return self.load(os.readlink(os.path.join(self.names, name)))
        except (FileNotFoundError, OSError, NotFound):
            pass
        if len(text) == 64 and os.path.isdir(self.path(text)):
            return self.load(text)
        matches = [i for i in self.ids() if i.startswith(text)] if text else []
        if len(matches) > 1:
            raise Conflict(f"multiple IDs found with provided prefix: {text}")
        if not matches:
            raise NotFound(f"No such container: {text}")
        return self.load(matches[0])

    def all(self) -> list[ContainerRecord]:
        out = []
        for container_id in self.ids():
            try:
                out.append(self.load(container_id))
            except (NotFound, ValueError):
                continue  # removed meanwhile, or half-created by a crash: `container prune` cleans it
        return out

    # --- state --------------------------------------------------------------------------------------

    def lock(self, container_id: str) -> FileLock:
        return FileLock(self.path(container_id, "lock"))

    def raw_state(self, container_id: str) -> State:
        try:
            with open(self.path(container_id, "state.json"), "rb") as f:
                doc = jsonio.loads(f.read())
        except FileNotFoundError:
            raise NotFound(f"No such container: {container_id}") from None
        return State(**doc)

    def state(self, container_id: str) -> State:
        """The state, corrected when its monitor or init died unseen (see module docstring)."""
        state = self.raw_state(container_id)
        if not state.running or process_alive(state.monitor, state.monitor_start):
            return state
        if process_alive(state.pid, state.pid_start):
            return state  # the monitor is gone, the container is not: it runs unwatched
        return self._record_unseen_exit(container_id)

    def _record_unseen_exit(self, container_id: str) -> State:
        """The monitor and the init died unseen (a crash, a reboot): write down what we now know."""
        from ketch.clock import rfc3339

        with self.lock(container_id):
            state = self.raw_state(container_id)
            if (
                state.running
                and not process_alive(state.monitor, state.monitor_start)
                and not process_alive(state.pid, state.pid_start)
            ):
                state = replace(state, status="exited", exit_code=UNKNOWN_EXIT, pid=0, monitor=0,
                                finished_at=rfc3339(), error=state.error or "the container's monitor died")  # fmt: skip
                self.save_state(container_id, state)
            return state

    def save_state(self, container_id: str, state: State, durable: bool = True) -> None:
        self._write(container_id, "state.json", state.to_dict(), durable)

    def update_state(self, container_id: str, durable: bool = True, **changes: Any) -> State:
        """Change the state under its lock. `durable=False` leaves the fsync to sync_state()."""
        with self.lock(container_id):
            state = replace(self.raw_state(container_id), **changes)
            self.save_state(container_id, state, durable)
            return state

    def sync_state(self, container_id: str) -> None:
        """Make the last state written durable (after an update_state(durable=False))."""
        fd = os.open(self.path(container_id, "state.json"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write(self, container_id: str, name: str, doc: dict[str, Any], durable: bool = True) -> None:
        atomic_write(self.path(container_id, name), jsonio.dumps(doc).encode(), 0o600, durable)


def process_alive(pid: int, start: int) -> bool:
    """Whether `pid` still runs and is the process that started at `start` (not a reused pid)."""
    if not pid:
        return False
    from ketch.runtime.container import start_time

    return start_time(pid) == start
