"""A container's cgroup on v1, v2 and hybrid hosts: create, join, list, freeze, remove.

The host's hierarchies are found by reading mountinfo, so tests can point at any root.
Resource limits beyond creation are the cgroup drivers' work (issue: cgroups on every host).
"""

from __future__ import annotations

import errno
import os
import time

from ketch.errors import InvalidArgument, SetupFailed, Unsupported
from ketch.record import Record
from ketch.runtime.signals import SIGKILL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


DEFAULT_PARENT = "/ketch"  # where containers without a cgroupsPath go


def hierarchies(mountinfo: str = "/proc/self/mountinfo") -> dict[str, str]:
    """Map of hierarchy name -> mount point: "" alone on pure v2; "memory", "unified", ... on v1/hybrid."""
    found: dict[str, str] = {}
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, point = fields[sep + 1], fields[4]
            if fstype in ("cgroup", "cgroup2") and fields[3] == "/":
                found[os.path.basename(point)] = point
    if len(found) == 1 and next(iter(found.values())) and _is_v2_root(next(iter(found.values()))):
        return {"": next(iter(found.values()))}
    return found


def _is_v2_root(point: str) -> bool:
    return os.path.exists(os.path.join(point, "cgroup.controllers")) and not os.path.exists(
        os.path.join(point, "cgroup.clone_children")
    )


def container_path(cgroups_path: str, container_id: str) -> str:
    """The cgroup path inside each hierarchy for the spec's cgroupsPath."""
    if not cgroups_path:
        return f"{DEFAULT_PARENT}/{container_id}"
    if ":" in cgroups_path and not cgroups_path.startswith("/"):
        raise InvalidArgument(
            f"linux.cgroupsPath: {cgroups_path!r} is a systemd slice path; the systemd driver is not supported"
        )
    path = "/" + os.path.normpath("/" + cgroups_path).strip("/")  # normpath keeps a leading "//"
    if path == "/":
        raise InvalidArgument("linux.cgroupsPath: must not be the root cgroup")
    return path


class Joining(Record):
    """A forked child's way into a container's cgroups that skips the attach grace period.

    Writing a pid to cgroup.procs takes the kernel's cgroup_threadgroup_rwsem for writing; the
    first writer after a quiet spell waits for an RCU grace period (5-25 ms here) with
    cgroup_mutex held. Two ways in do not take it: a child born into a cgroup v2 directory
    (clone3 CLONE_INTO_CGROUP), and a single thread moving itself ("0" written to a v1 `tasks`
    file). The child is single-threaded, so the latter moves the whole process.
    """

    born_into: str = ""  # the cgroup v2 directory (pure v2, or hybrid's unified)
    tasks: tuple[str, ...] = ()  # v1 `tasks` files the child writes "0" to, before anything else

    def join_self(self) -> None:
        """In the child: move into every v1 hierarchy's cgroup."""
        for path in self.tasks:
            try:
                with open(path, "w") as f:
                    f.write("0")
            except OSError as exc:
                raise SetupFailed(
                    f"cannot join cgroup {os.path.dirname(path)}: {exc.strerror}", exc.errno
                ) from exc


def add_process(d: str, pid: int) -> None:
    try:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(pid))
    except OSError as exc:
        raise SetupFailed(f"cannot join cgroup {d}: {exc.strerror}", exc.errno) from exc


class Cgroup(Record):
    """One container's directory in every hierarchy of the host."""

    path: str
    dirs: dict[str, str]

    @classmethod
    def at(cls, path: str, mounts: dict[str, str] | None = None) -> Cgroup:
        mounts = hierarchies() if mounts is None else mounts
        return cls(path, {name: point + path for name, point in mounts.items()})

    def create(self) -> None:
        for name, d in self.dirs.items():
            try:
                if self.is_v2:
                    _enable_controllers(d[: len(d) - len(self.path)], self.path)
                _mkdirs(d, inherit_cpuset="cpuset" in name.split(","))
            except OSError as exc:
                raise SetupFailed(f"cannot create cgroup {d}: {exc.strerror}", exc.errno) from exc

    @property
    def is_v2(self) -> bool:
        return list(self.dirs) == [""]

    def dir_of(self, controller: str, field: str) -> str:
        """The directory of the hierarchy that holds `controller` ("cpu" is in "cpu,cpuacct")."""
        if self.is_v2:
            return self.dirs[""]
        for name, d in self.dirs.items():
            if controller in name.split(","):
                return d
        raise Unsupported(f"{field}: the {controller} cgroup controller is not available on this host")

    def apply(self, resources: dict[str, Any], live: bool = False) -> list[str]:
        """Write the spec's resources (`live`: into a running container); returns warnings."""
        from ketch.runtime import resources as res

        writes = res.v2_writes(resources) if self.is_v2 else res.v1_writes(resources)
        program = b""
        if self.is_v2 and resources.get("devices"):
            if live:
                raise Unsupported(
                    "linux.resources.devices: device rules cannot change while running on cgroup v2"
                )
            from ketch.runtime import devicefilter

            rules = devicefilter.rules_from_spec(resources["devices"], res.DEFAULT_DEVICE_RULES)
            program = devicefilter.program(rules)
        retry = []
        for w in writes:
            try:
                self._write(w)
            except InvalidArgument:
                if not w.file.startswith("memory."):
                    raise
                retry.append(w)  # a memory limit above memsw (or below usage) may pass once the rest is set
        for w in retry:
            self._write(w)
        if program:
            self._attach_device_program(program)
        return []

    def _attach_device_program(self, program: bytes) -> None:
        """cgroup v2 has no devices controller: an eBPF program attached to the cgroup decides."""
        from ketch.linux import bpf

        try:
            fd = bpf.load_device_program(program)
            try:
                bpf.attach_device_program(fd, self.dirs[""])
            finally:
                os.close(fd)
        except OSError as exc:
            raise SetupFailed(f"linux.resources.devices: {exc.strerror or exc}", exc.errno) from exc

    def _write(self, w: Any) -> None:
        path = os.path.join(self.dir_of(w.controller, w.field), w.file)
        try:
            if not os.path.exists(path):  # a file the kernel does not offer: never create it
                raise FileNotFoundError(2, "No such file", path)
            with open(path, "w") as f:
                f.write(w.value)
        except FileNotFoundError as exc:
            raise Unsupported(f"{w.field}: {w.file} is not available on this host") from exc
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ERANGE, errno.EBUSY):
                raise InvalidArgument(f"{w.field}: the kernel refused {w.value!r} for {w.file}") from exc
            raise SetupFailed(f"{w.field}: writing {w.file}: {exc.strerror}", exc.errno) from exc

    def joining(self) -> Joining:
        """How a forked child enters this cgroup: born into the v2 directory, moving itself in v1."""
        born, tasks = "", []
        for d in self.dirs.values():
            if os.path.exists(os.path.join(d, "cgroup.controllers")):  # only cgroup2 has it
                born = d
            else:
                tasks.append(os.path.join(d, "tasks"))
        return Joining(born, tuple(tasks))

    def add(self, pid: int) -> None:
        """Move `pid` in from outside (a cgroup.procs write: the kernel's attach grace period)."""
        for d in self.dirs.values():
            add_process(d, pid)

    def pids(self) -> list[int]:
        for name in ("pids", "memory", "freezer", "", "unified", *self.dirs):
            d = self.dirs.get(name)
            if d and os.path.isdir(d):
                return _read_pids(d)
        return []

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self.dirs.values())

    def kill_all(self, sig: int = SIGKILL) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def remove(self, timeout: float = 5.0) -> None:
        """rmdir every directory, retrying while the last processes leave."""
        deadline = time.monotonic() + timeout
        for d in self.dirs.values():
            while True:
                try:
                    _rmdir_tree(d)
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise SetupFailed(f"cannot remove cgroup {d}: {exc.strerror}", exc.errno) from exc
                    self.kill_all()
                    time.sleep(0.01)
            if self.path.startswith(DEFAULT_PARENT + "/"):
                _remove_if_empty(d[: len(d) - len(self.path)] + DEFAULT_PARENT)

    # --- usage -------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Usage and limits in runc's `events --stats` shape (see cgstats)."""
        from ketch.runtime import cgstats

        return cgstats.v2(self._read) if self.is_v2 else cgstats.v1(self._read)

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer took in this cgroup."""
        from ketch.runtime import cgstats

        events = self._read("", "memory.events") if self.is_v2 else self._read("memory", "memory.oom_control")
        return cgstats._kv(events).get("oom_kill", 0)

    def _read(self, controller: str, file: str) -> str | None:
        try:
            with open(os.path.join(self.dir_of(controller, file), file)) as f:
                return f.read()
        except (OSError, Unsupported):
            return None

    # --- freezer ---------------------------------------------------------------------------------

    def _freezer(self) -> tuple[str, str, str, str]:
        if "freezer" in self.dirs:
            return os.path.join(self.dirs["freezer"], "freezer.state"), "FROZEN", "THAWED", "freezer.state"
        d = self.dirs.get("") or self.dirs.get("unified", "")
        return os.path.join(d, "cgroup.freeze"), "1", "0", "cgroup.events"

    def freeze(self, frozen: bool) -> None:
        path, on, off, _ = self._freezer()
        with open(path, "w") as f:
            f.write(on if frozen else off)
        deadline = time.monotonic() + 5
        while self.is_frozen() != frozen and time.monotonic() < deadline:
            time.sleep(0.001)

    def is_frozen(self) -> bool:
        path, on, _, events = self._freezer()
        try:
            if events == "freezer.state":
                with open(path) as f:
                    return f.read().strip() == on
            with open(os.path.join(os.path.dirname(path), events)) as f:
                return "frozen 1" in f.read()
        except OSError:
            return False


def _mkdirs(path: str, inherit_cpuset: bool) -> None:
    parent = os.path.dirname(path)
    for attempt in range(3):  # a concurrent delete may remove an empty parent under our feet
        if not os.path.isdir(parent):
            _mkdirs(parent, inherit_cpuset)
        try:
            os.mkdir(path)
            break
        except FileExistsError:
            return
        except FileNotFoundError:
            if attempt == 2:
                raise
    if inherit_cpuset:  # a v1 cpuset starts empty and refuses tasks until given cpus and mems
        for key in ("cpuset.cpus", "cpuset.mems"):
            with open(os.path.join(parent, key)) as src, open(os.path.join(path, key), "w") as dst:
                dst.write(src.read().strip())


def _enable_controllers(root: str, path: str) -> None:
    """On v2 a controller works in a cgroup only if every ancestor lists it in cgroup.subtree_control."""
    d = root
    for part in ["", *path.strip("/").split("/")[:-1]]:
        d = os.path.join(d, part) if part else d
        if not os.path.isdir(d):
            os.mkdir(d)
        try:
            with open(os.path.join(d, "cgroup.controllers")) as f:
                available = f.read().split()
            with open(os.path.join(d, "cgroup.subtree_control")) as f:
                enabled = set(f.read().split())
        except FileNotFoundError:  # not a cgroup2 directory (a test's fixture tree)
            continue
        wanted = [c for c in available if c not in enabled]
        if wanted:
            with open(os.path.join(d, "cgroup.subtree_control"), "w") as f:
                f.write(" ".join("+" + c for c in wanted))


def _remove_if_empty(d: str) -> None:
    """Our default parent goes with its last container (a busy or non-empty one stays)."""
    try:
        os.rmdir(d)
    except OSError:
        pass


def _read_pids(d: str) -> list[int]:
    try:
        with open(os.path.join(d, "cgroup.procs")) as f:
            own = [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []
    for entry in os.scandir(d):
        if entry.is_dir(follow_symlinks=False):
            own.extend(_read_pids(entry.path))
    return own


def _rmdir_tree(d: str) -> None:
    try:
        entries = list(os.scandir(d))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _rmdir_tree(entry.path)
    try:
        os.rmdir(d)
    except FileNotFoundError:
        pass
