"""The child side of create and exec: enter namespaces, build the rootfs, become the container process.

    ketch-oci (parent)                child C (forked)                 init I (C's child)
    ------------------                ----------------                 ------------------
    fork (born in the v2 cgroup) ─▶  joins the v1 cgroups, non-dumpable
    send go ─────────────────────▶   setns(paths); unshare(new)
    write uid/gid maps  ◀──── map    (only with a new user namespace)
    send mapped ─────────────────▶   fork ─────────────────────────▶  (pid 1 of a new pid ns)
    record pid    ◀────────── pid    _exit(0)
    send continue (state) ───────────────────────────────────────▶   (only if it runs hooks itself)
                                                                     mounts, /dev
    prestart, createRuntime hooks ◀─────────────────────────── hooks (only if there are such hooks)
    send hooks-done ─────────────────────────────────────────────▶   createContainer hooks, pivot_root,
                                                                     masked/readonly paths, user, caps
    write state.json ◀─────────────────────────────────────── ready
    exit; `start` writes exec.fifo ─────────────────────────────▶   fifo read: startContainer hooks, execve

Without a user or a time namespace, or joins beyond network, ipc and uts (spawn._direct), there
is no C: one clone3 makes I in its new namespaces and v2 cgroup, and I joins the v1 cgroups and
the namespaces to join, unshares its cgroup namespace and goes on from "continue" (born()); the
parent has its pid from clone3.

Every step that can fail reports over the channel, so `create` fails with the reason and
nothing of the container survives. Children never return into the caller: they _exit.
Nothing may be imported lazily on these paths: after pivot_root (or setns into the mount
namespace) the host's Python library is out of reach, so modules load before the fork.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
import termios

from ketch.linux import syscalls as sc
from ketch.oci.runtime import Device, Hook
from ketch.record import Record, field
from ketch.runtime import process, rootfs
from ketch.runtime.cgroups import Joining
from ketch.runtime.channel import Channel, send_fd
from ketch.runtime.process import ProcessPlan
from ketch.runtime.rootfs import MountOp

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from typing import Any

# order of setns(2) calls; user first so the others are joined with its privileges
JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


class NamespacePlan(Record):
    joins: tuple[tuple[str, str], ...] = ()  # (kind, /proc/.../ns/x path) to setns into
    new_flags: int = 0  # CLONE_NEW* to unshare
    new_user: bool = False
    enter_pid: bool = False  # a pid namespace is new or joined: fork once more to be inside it
    time_offsets: tuple[tuple[str, int, int], ...] = ()  # for a new time namespace

    @property
    def has_mount(self) -> bool:
        """A mount namespace of its own (new or joined): without one, no mount is made, only chroot."""
        return bool(self.new_flags & sc.CLONE_NEWNS) or any(kind == "mount" for kind, _ in self.joins)


class InitPlan(Record):
    """Everything the container's init does, decided by the parent before it forks."""

    container_id: str
    rootfs: str
    namespaces: NamespacePlan
    process: ProcessPlan
    fifo_fd: (
        int  # exec.fifo, opened O_RDWR by the parent (so no open blocks, and no user namespace blocks it)
    )
    mounts: tuple[MountOp, ...] = ()
    devices: tuple[Device, ...] = ()
    cgroup_dirs: dict[str, str] = field(default_factory=dict)
    propagation: str = ""
    readonly_root: bool = False
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    sysctl: dict[str, str] = field(default_factory=dict)
    hostname: str = ""
    domainname: str = ""
    personality: int | None = None
    no_pivot: bool = False
    new_keyring: bool = True
    preserve_fds: int = 0
    create_container_hooks: tuple[Hook, ...] = ()
    start_container_hooks: tuple[Hook, ...] = ()
    runtime_hooks: bool = False  # prestart or createRuntime hooks: the parent runs them mid-setup

    @property
    def needs_state(self) -> bool:
        """Whether the init runs hooks of its own, which are given the container's state."""
        return bool(self.create_container_hooks or self.start_container_hooks)


def child(
    ns: NamespacePlan, chan: Channel, then: Callable[[dict[str, Any]], None], p: ProcessPlan, joining: Joining,
    wait_for_state: bool = True,
) -> None:  # fmt: skip
    """Run in C: join the cgroups, enter the namespaces, fork into the pid namespace, hand over to
    `then` in there (once the parent sends the state, if `wait_for_state`)."""
    try:
        _leave_host(p, joining)
        chan.expect("go")
        _enter(ns, chan)
        if ns.enter_pid:
            gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
            pid = os.fork()
            if pid:
                chan.send("pid", pid=pid)
                os._exit(0)  # closes gate_w: the init may talk now
            os.close(gate_w)
            chan.hold_until_eof(gate_r)
        else:
            chan.send("pid", pid=os.getpid())
        _hand_over(chan, then, wait_for_state)
    except BaseException as exc:
        chan.send_error(exc)
        os._exit(1)
    os._exit(0)


def born(
    ns: NamespacePlan, chan: Channel, then: Callable[[dict[str, Any]], None], p: ProcessPlan, joining: Joining,
    wait_for_state: bool = True,
) -> None:  # fmt: skip
    """Run in I when clone3 made it directly, pid 1 of its new namespaces: join the cgroups, then
    a cgroup namespace rooted there, and hand over to `then` (see spawn._direct)."""
    try:
        _leave_host(p, joining)
        _join(ns.joins)  # network, ipc, uts only: nothing born depends on them
        if ns.new_flags & sc.CLONE_NEWCGROUP:
            sc.unshare(sc.CLONE_NEWCGROUP)  # after the join: its root is the container's cgroup
        _hand_over(chan, then, wait_for_state)
    except BaseException as exc:
        chan.send_error(exc)
        os._exit(1)
    os._exit(0)


def _leave_host(p: ProcessPlan, joining: Joining) -> None:
    """A child's first steps: into the container's cgroups (whatever it forks, and its cgroup
    namespace, start from there), its oom score set while still dumpable (inside a user namespace
    /proc/self is no longer ours), then non-dumpable."""
    joining.join_self()
    process.set_oom_score_adj(p)
    sc.prctl(sc.PR_SET_DUMPABLE, 0)


def _hand_over(chan: Channel, then: Callable[[dict[str, Any]], None], wait_for_state: bool) -> None:
    then(chan.expect("continue").get("state", {}) if wait_for_state else {})


def _join(joins: tuple[tuple[str, str], ...]) -> None:
    fds = [(kind, os.open(path, os.O_RDONLY | os.O_CLOEXEC)) for kind, path in joins]
    for kind, fd in sorted(fds, key=lambda kf: JOIN_ORDER.index(kf[0])):
        try:
            sc.setns(fd, sc.NAMESPACE_FLAGS[kind])
        except OSError as exc:
            raise OSError(exc.errno, f"cannot join {kind} namespace: {exc.strerror}") from exc
        os.close(fd)


def _enter(ns: NamespacePlan, chan: Channel) -> None:
    _join(ns.joins)
    if ns.new_flags:
        sc.unshare(ns.new_flags)
    if ns.time_offsets:  # before any process enters the new time namespace
        with open("/proc/self/timens_offsets", "w") as f:
            f.write("".join(f"{clock} {secs} {nsecs}\n" for clock, secs, nsecs in ns.time_offsets))
    if ns.new_user:
        chan.send("map")
        chan.expect("mapped")
    if ns.new_user or any(kind == "user" for kind, _ in ns.joins):
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)


def container_init(
    plan: InitPlan, chan: Channel, console: socket.socket | None, state: dict[str, Any]
) -> None:
    """Run in I, pid 1 of the container: build its world, wait for `start`, exec the program."""
    os.setsid()
    if plan.new_keyring:
        _join_keyring(plan.container_id)
    if plan.namespaces.has_mount:
        _prepare_rootfs(plan)
    if plan.runtime_hooks:
        chan.send("hooks")
        chan.expect("hooks-done")
    _run_hooks(plan.create_container_hooks, "createContainer", state)
    if not plan.namespaces.has_mount:
        os.chroot(plan.rootfs)  # sharing the host's mount table: mount nothing, only change root
        os.chdir("/")
    elif plan.no_pivot:
        rootfs.chroot_into(plan.rootfs)
    else:
        rootfs.pivot(plan.rootfs)
    if console is not None:
        _setup_console(console, plan.process, mount_console=plan.namespaces.has_mount)
    if plan.namespaces.has_mount:
        _finish_rootfs(plan)
    else:
        _set_names(plan)
    sc.cloexec_from(3 + plan.preserve_fds)  # before seccomp, which may deny close_range(2)
    path = process.finalize(plan.process, setgroups_allowed=_setgroups_allowed())
    chan.send("ready")
    chan.close()
    _wait_for_start(plan.fifo_fd)
    _after_start(plan.process, path, plan.start_container_hooks, state)


def exec_init(p: ProcessPlan, chan: Channel, console: socket.socket | None, preserve_fds: int) -> None:
    """Run in the exec'd process, already inside every namespace of the container."""
    if p.terminal:
        os.setsid()
    if console is not None:
        _setup_console(console, p, mount_console=False)
    sc.cloexec_from(3 + preserve_fds)
    path = process.finalize(p, setgroups_allowed=_setgroups_allowed())
    chan.send("ready")
    chan.close()
    _after_start(p, path, (), {})


def _after_start(p: ProcessPlan, path: str, hooks: tuple[Hook, ...], state: dict[str, Any]) -> None:
    """Past the point of reporting to the parent: failures go to stderr and the exit status."""
    try:
        _run_hooks(hooks, "startContainer", state)
        process.execute(p, path)
    except BaseException as exc:
        sys.stderr.write(f"ketch-oci: {exc}\n")
        sys.stderr.flush()
        os._exit(127 if isinstance(exc, FileNotFoundError) else 126 if isinstance(exc, OSError) else 1)


def _join_keyring(container_id: str) -> None:
    try:
        sc.join_session_keyring(container_id)
    except OSError as exc:
        if exc.errno not in (1, 38):  # EPERM in some user namespaces, ENOSYS without keys
            raise


def _setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() != "deny"
    except OSError:
        return True


def _prepare_rootfs(plan: InitPlan) -> None:
    rootfs.make_private(plan.propagation)
    rootfs.private_parent(plan.rootfs)
    rootfs.bind_root(plan.rootfs)
    has_devpts = False
    for op in plan.mounts:
        rootfs.apply_mount(op, plan.rootfs, plan.cgroup_dirs)
        has_devpts = has_devpts or (op.fstype == "devpts" and op.destination.rstrip("/") == "/dev/pts")
    cwd = rootfs.resolve_in_root(plan.rootfs, plan.process.cwd)
    os.makedirs(cwd, 0o755, exist_ok=True)
    in_userns = plan.namespaces.new_user or any(k == "user" for k, _ in plan.namespaces.joins)
    rootfs.setup_dev(plan.rootfs, plan.devices, bind_only=in_userns, has_devpts=has_devpts)


def _set_names(plan: InitPlan) -> None:
    if plan.hostname:
        sc.sethostname(plan.hostname)
    if plan.domainname:
        sc.setdomainname(plan.domainname)
    if plan.personality is not None:
        sc.personality(plan.personality)


def _finish_rootfs(plan: InitPlan) -> None:
    _set_names(plan)
    rootfs.reapply_propagation(plan.propagation)
    rootfs.write_sysctls(plan.sysctl)
    for path in plan.readonly_paths:
        rootfs.readonly_path(path)
    for path in plan.masked_paths:
        rootfs.mask_path(path)
    if plan.readonly_root:
        rootfs.readonly_root()


def _setup_console(console: socket.socket, p: ProcessPlan, mount_console: bool) -> None:
    """A pty from the container's own devpts; the master goes to the console socket, the slave is stdio."""
    master, slave = os.openpty()
    slave_path = os.ttyname(slave)
    if p.console_size:
        rows, cols = p.console_size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    if mount_console:
        if not os.path.exists("/dev/console"):
            os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        sc.mount(slave_path, "/dev/console", None, sc.MS_BIND)
    send_fd(console, "/dev/ptmx", master)
    os.close(master)
    console.close()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def _wait_for_start(fifo: int) -> None:
    """Block until `start` writes to exec.fifo.

    The wait reads rather than opens: the process is non-dumpable and may already be another
    user, so it cannot reopen the fifo through /proc/self/fd as runc's init does.
    """
    while not os.read(fifo, 1):
        pass
    os.close(fifo)


def _run_hooks(hooks: tuple[Hook, ...], kind: str, state: dict[str, Any]) -> None:
    if hooks:
        from ketch.runtime import hooks as hookrun

        hookrun.run(hooks, kind, state)
