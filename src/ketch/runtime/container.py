"""Containers and their lifecycle: creating -> created -> running -> stopped, kept in a state dir.

One directory per container under the runtime root holds state.json (written atomically) and,
until `start`, exec.fifo. The status is derived from the kernel each time it is asked: a
container whose init is gone is stopped, whatever the file last said.
"""

from __future__ import annotations

import fcntl
import os
import time

from ketch import jsonio
from ketch.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, SetupFailed
from ketch.files import atomic_write
from ketch.oci.runtime import Spec, state_json, validate
from ketch.record import Record, field
from ketch.runtime import signals
from ketch.runtime.cgroups import Cgroup, container_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")
STATE = "state.json"
FIFO = "exec.fifo"


class StateRecord(Record, frozen=False):
    """What a state dir remembers about its container."""

    id: str
    bundle: str
    rootfs: str
    status: str  # "creating" until init is ready, then "created"; the rest is derived
    created: str
    cgroup_path: str
    cgroup_dirs: dict[str, str]
    config: dict[str, Any]
    pid: int = 0
    pid_start: int = 0
    annotations: dict[str, str] = field(default_factory=dict)
    owner: str = ""


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks, or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def check_id(container_id: str) -> None:
    if not container_id or not _ID_CHARS.issuperset(container_id) or container_id in (".", ".."):
        raise InvalidArgument(
            f"invalid container id {container_id!r}: use letters, digits, '_', '+', '-', '.'"
        )


def load_spec(bundle: str) -> tuple[Spec, dict[str, Any]]:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = jsonio.loads(f.read())
    except FileNotFoundError as exc:
        raise NotFound(f"config.json not found in bundle {bundle}") from exc
    except ValueError as exc:
        raise InvalidArgument(f"{path}: not valid JSON: {exc}") from exc
    spec = Spec.from_json(raw)
    validate(spec)
    return spec, raw


class Container:
    def __init__(self, root: str, record: StateRecord) -> None:
        self.root = root
        self.record = record
        self.dir = os.path.join(root, record.id)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def spec(self) -> Spec:
        return Spec.from_json(self.record.config)

    @property
    def cgroup(self) -> Cgroup:
        return Cgroup(self.record.cgroup_path, dict(self.record.cgroup_dirs))

    def save(self) -> None:
        # Not fsynced: the state describes live processes, which a host crash ends anyway (and the
        # runtime root is normally a tmpfs). A crash may leave it empty: load() then reports it
        # unreadable and `delete --force` removes what is left.
        atomic_write(
            os.path.join(self.dir, STATE), jsonio.dumps(self.record.to_dict()).encode(), durable=False
        )

    def init_alive(self) -> bool:
        rec = self.record
        return bool(rec.pid) and start_time(rec.pid) == rec.pid_start

    def status(self) -> str:
        if self.record.status == "creating":
            return "creating" if self.init_alive() or not self.record.pid else "stopped"
        if not self.init_alive():
            return "stopped"
        if self.cgroup.is_frozen():
            return "paused"
        return "created" if os.path.exists(os.path.join(self.dir, FIFO)) else "running"

    def state(self) -> dict[str, Any]:
        status = self.status()
        out = state_json(self.id, status, self.record.pid if status != "stopped" else 0, self.record.bundle,
                         self.record.annotations)  # fmt: skip
        out.update(rootfs=self.record.rootfs, created=self.record.created, owner=self.record.owner)
        return out

    def hook_state(self, status: str) -> dict[str, Any]:
        """The state hooks read on stdin (pre-start hooks see "created", as runtime-tools expects)."""
        return state_json(self.id, status, self.record.pid, self.record.bundle, self.record.annotations)

    # --- transitions -------------------------------------------------------------------------

    def start(self) -> None:
        status = self.status()
        if status != "created":
            raise Conflict(f"cannot start a container that is {status}")
        fifo = os.path.join(self.dir, FIFO)
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:  # ENXIO: nobody holds the read end, the init is gone
            raise Conflict("container init exited before start") from exc
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
            os.unlink(fifo)
        self._run_hooks("poststart", "running")

    def signal(self, sig: int, all_processes: bool = False) -> None:
        status = self.status()
        if status not in ("created", "running", "paused"):
            raise Conflict(f"cannot signal a container that is {status}")
        if all_processes:
            self.cgroup.kill_all(sig)
            return
        pidfd = os.pidfd_open(self.record.pid)
        try:
            if self.init_alive():
                signals.pidfd_send(pidfd, sig)
        finally:
            os.close(pidfd)

    def delete(self, force: bool = False) -> None:
        status = self.status()
        if status in ("creating", "created", "running", "paused") and not force:
            raise Conflict(f"cannot delete container {self.id} that is not stopped: {status}")
        if status != "stopped":
            self._kill_all()
        self.cgroup.remove()
        if status != "creating":
            self._run_hooks("poststop", "stopped")
        remove_tree(self.dir)

    def _run_hooks(self, kind: str, status: str) -> None:
        """poststart and poststop hooks: a failure is a warning, the lifecycle goes on (spec)."""
        if not (self.record.config.get("hooks") or {}).get(kind):
            return
        from ketch.runtime import hooks

        try:
            hooks.run(self.spec.hooks[kind], kind, self.hook_state(status))
        except SetupFailed as exc:
            import sys

            sys.stderr.write(f"ketch-oci: warning: {exc}\n")

    def _kill_all(self) -> None:
        cg = self.cgroup
        if cg.is_frozen():
            cg.kill_all()
            cg.freeze(False)
        if self.init_alive():
            os.kill(self.record.pid, signals.SIGKILL)
        cg.kill_all()
        deadline = time.monotonic() + 10
        while self.init_alive() and time.monotonic() < deadline:
            time.sleep(0.002)

    def pause(self) -> None:
        status = self.status()
        if status != "running":
            raise Conflict(f"cannot pause a container that is {status}")
        self.cgroup.freeze(True)

    def resume(self) -> None:
        status = self.status()
        if status != "paused":
            raise Conflict(f"cannot resume a container that is {status}")
        self.cgroup.freeze(False)

    def update(self, resources: dict[str, Any]) -> list[str]:
        """Change the limits of a live container; returns warnings."""
        status = self.status()
        if status not in ("created", "running", "paused"):
            raise Conflict(f"cannot update a container that is {status}")
        return self.cgroup.apply(resources, live=True)

    def stats(self) -> dict[str, Any]:
        """runc's `events --stats` document for this container."""
        if not self.cgroup.exists():
            raise Conflict(f"container {self.id} has no cgroup")
        return {"type": "stats", "id": self.id, "data": self.cgroup.stats()}

    def oom_killed(self) -> bool:
        """Whether the OOM killer took a process of this container (Docker's State.OOMKilled)."""
        return self.cgroup.oom_kills() > 0

    def processes(self) -> list[int]:
        return sorted(self.cgroup.pids())


class Runtime:
    """The state root: finds, creates and lists containers."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _dir(self, container_id: str) -> str:
        check_id(container_id)
        return os.path.join(self.root, container_id)

    def load(self, container_id: str) -> Container:
        path = os.path.join(self._dir(container_id), STATE)
        try:
            with open(path, "rb") as f:
                data = jsonio.loads(f.read())
        except FileNotFoundError as exc:
            raise NotFound(f"container {container_id} does not exist") from exc
        except ValueError as exc:
            raise NotFound(f"container {container_id}: its state file is unreadable ({exc})") from exc
        return Container(self.root, StateRecord(**data))

    def list(self) -> list[Container]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            try:
                found.append(self.load(name))
            except (NotFound, InvalidArgument, ValueError, TypeError):
                continue  # a create in progress, or not a container directory
        return found

    def lock(self, container_id: str) -> Lock:
        """Serialise commands on one container (flock on its directory)."""
        return Lock(self._dir(container_id), container_id)

    def reserve(self, container_id: str) -> str:
        path = self._dir(container_id)
        os.makedirs(self.root, 0o711, exist_ok=True)
        try:
            os.mkdir(path, 0o711)
        except FileExistsError as exc:
            raise AlreadyExists(f"container with id {container_id} already exists") from exc
        return path

    def force_delete_partial(self, container_id: str) -> None:
        """delete --force of a state dir without a readable state.json (a create killed early, or
        a host crash that emptied it): the directory, and the cgroup at the default path if any
        (a spec's own cgroupsPath went with the state). Nothing to do without the directory: it
        is made before any cgroup."""
        if not os.path.isdir(self._dir(container_id)):
            return
        cgroup = Cgroup.at(container_path("", container_id))
        if cgroup.exists():
            cgroup.kill_all()
            cgroup.remove()
        remove_tree(self._dir(container_id))


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def connect_console(path: str) -> socket.socket:
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise InvalidArgument(f"--console-socket {path}: {exc.strerror}") from exc
    return sock


def cgroup_for(spec: Spec, container_id: str) -> Cgroup:
    return Cgroup.at(container_path(spec.linux.cgroups_path, container_id))


class Lock:
    """An exclusive flock on a directory, held for a `with` block."""

    def __init__(self, path: str, name: str) -> None:
        self.path, self.name, self.fd = path, name, -1

    def __enter__(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise NotFound(f"container {self.name} does not exist") from exc
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *_exc: object) -> None:
        os.close(self.fd)


def remove_tree(path: str) -> None:
    """rm -rf for a state directory (shutil costs an import on every command)."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(path)
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            remove_tree(entry.path)
        else:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
