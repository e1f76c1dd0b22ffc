"""The parent side of create and exec: fork, drive the child through the sync protocol, get its pid.

See runtime/init.py for the diagram. The parent must be single-threaded when it forks.
"""

from __future__ import annotations

import os

from ketch.errors import SetupFailed
from ketch.linux import syscalls as sc
from ketch.oci.runtime import IDMapping
from ketch.runtime import init
from ketch.runtime.cgroups import Joining, add_process
from ketch.runtime.channel import Channel
from ketch.runtime.init import InitPlan, NamespacePlan
from ketch.runtime.process import ProcessPlan
from ketch.runtime.signals import SIGKILL

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from typing import Any


def _write_map(pid: int, kind: str, mappings: tuple[IDMapping, ...]) -> None:
    lines = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)
    try:
        with open(f"/proc/{pid}/{kind}_map", "w") as f:
            f.write(lines)
    except OSError as exc:
        raise SetupFailed(f"cannot write {kind}_map: {exc.strerror}", exc.errno) from exc


_NO_CLONE3 = (1, 22, 38)  # EPERM, EINVAL, ENOSYS: seccomp's refusal, kernels before 5.7
_JOINED_AFTER_BIRTH = ("network", "ipc", "uts")  # namespaces a directly born init joins itself


def _clone(joining: Joining, flags: int) -> int:
    """clone3_fork with `flags`, born into the v2 cgroup when there is one; -1 where the kernel
    (or a seccomp filter) refuses clone3, so that the caller forks the old way."""
    fd = -1
    if joining.born_into:
        try:
            fd = os.open(joining.born_into, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise SetupFailed(f"cannot join cgroup {joining.born_into}: {exc.strerror}", exc.errno) from exc
    elif not flags:
        return -1  # nothing clone3 would do better than fork
    try:
        return sc.clone3_fork(flags, fd)
    except OSError as exc:
        if exc.errno in _NO_CLONE3:
            return -1
        where = f" in cgroup {joining.born_into}" if joining.born_into else ""
        what = "create the container's namespaces" if flags else "join"
        raise SetupFailed(f"cannot {what}{where}: {exc.strerror}", exc.errno) from exc
    finally:
        if fd >= 0:
            os.close(fd)


def _direct(ns: NamespacePlan) -> bool:
    """Whether the init can be born straight into its new namespaces (one clone3, no intermediate
    process): a pid namespace to be born in, no user namespace (its maps come from the parent),
    no time namespace (its offsets must be set before anyone enters it), and nothing to join but
    network, ipc and uts namespaces, which the init joins after its birth as well as before. The
    cgroup namespace is unshared by the init once it has joined its cgroups."""
    return (
        ns.enter_pid and not ns.new_user and not ns.time_offsets and not ns.new_flags & sc.CLONE_NEWTIME
        and all(kind in _JOINED_AFTER_BIRTH for kind, _ in ns.joins)
    )  # fmt: skip


def _fork(
    ns: NamespacePlan, body: Callable[[Channel, dict[str, Any]], None], p: ProcessPlan, joining: Joining,
    wait_for_state: bool,
) -> tuple[int, Channel, bool]:  # fmt: skip
    """Fork into the container's cgroups: born into the v2 one where the kernel can, so that no
    cgroup.procs write (and its grace period) is needed; the child moves itself into the v1 ones.
    Returns the child's pid, our channel end, and whether the child is the init itself (born in
    its namespaces) rather than the intermediate process C."""
    parent, kid = Channel.pair()
    try:
        direct = _direct(ns)
        pid = _clone(joining, ns.new_flags & ~sc.CLONE_NEWCGROUP) if direct else -1
        if pid < 0:
            direct = False
            pid = _clone(joining, 0)
        late = pid < 0 and joining.born_into  # no clone3 here: the parent moves C in, the slow way
        if pid < 0:
            pid = os.fork()
    except BaseException:
        parent.close()
        kid.close()
        raise
    if pid == 0:  # never returns
        parent.close()
        if direct:
            init.born(ns, kid, lambda state: body(kid, state), p, joining, wait_for_state)
        init.child(ns, kid, lambda state: body(kid, state), p, joining, wait_for_state)
    kid.close()
    if late:
        try:
            add_process(joining.born_into, pid)
        except BaseException:
            _kill(pid)
            _reap(pid)
            parent.close()
            raise
    return pid, parent, direct


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, SIGKILL)
    except ProcessLookupError:
        pass


class Handshake:
    """Parent's half of the protocol up to the container's pid, shared by create and exec."""

    def __init__(
        self,
        ns: NamespacePlan,
        body: Callable[[Channel, dict[str, Any]], None],
        joining: Joining,
        p: ProcessPlan,
        maps: tuple[tuple[IDMapping, ...], tuple[IDMapping, ...]] = ((), ()),
        wait_for_state: bool = False,
    ) -> None:
        self.ns = ns
        self.child_pid, self.chan, direct = _fork(ns, body, p, joining, wait_for_state)
        self.pid = self.child_pid if direct else 0  # born as the init: no intermediate to hear from
        if direct:
            return
        try:
            self.chan.send("go")
            msg = self.chan.recv()
            if msg["type"] == "map":
                _write_map(self.child_pid, "uid", maps[0])
                _write_map(self.child_pid, "gid", maps[1])
                self.chan.send("mapped")
                msg = self.chan.recv()
            if msg["type"] != "pid":
                raise SetupFailed(f"setup protocol: expected 'pid', got {msg['type']!r}")
            self.pid = int(msg["pid"])
        except BaseException:
            self.abort()
            raise
        finally:
            if self.ns.enter_pid or not self.pid:
                _reap(self.child_pid)
                if self.pid != self.child_pid:
                    self.child_pid = 0  # reaped: its pid may be reused, abort() must not signal it

    def proceed(self, state: dict[str, Any]) -> None:
        self.chan.send("continue", state=state)

    def abort(self) -> None:
        for pid in dict.fromkeys((self.pid, self.child_pid)):
            if pid:
                _kill(pid)
        if self.pid:
            _reap(self.pid)  # our child, or reaped because we are its subreaper; harmless otherwise
        self.chan.close()


def start_init(
    plan: InitPlan,
    joining: Joining,
    maps: tuple[tuple[IDMapping, ...], tuple[IDMapping, ...]],
    console: socket.socket | None,
    state_for: Callable[[int, str], dict[str, Any]],
    run_hooks: Callable[[dict[str, Any]], None],
) -> int:
    """Fork the container's init and wait until it sits at exec.fifo; returns its pid."""

    if plan.create_container_hooks or plan.start_container_hooks:
        import subprocess  # noqa: F401  (the init runs hooks after pivot_root: load it now)

        from ketch.runtime import hooks  # noqa: F401

    def body(chan: Channel, state: dict[str, Any]) -> None:
        init.container_init(plan, chan, console, state)

    shake = Handshake(plan.namespaces, body, joining, plan.process, maps, plan.needs_state)
    try:
        if plan.needs_state:
            shake.proceed(state_for(shake.pid, "created"))
        if plan.runtime_hooks:
            shake.chan.expect("hooks")
            run_hooks(state_for(shake.pid, "created"))
            shake.chan.send("hooks-done")
        shake.chan.expect("ready")
        shake.chan.close()
    except BaseException:
        shake.abort()
        raise
    return shake.pid


def start_exec(
    ns: NamespacePlan,
    p: ProcessPlan,
    joining: Joining,
    console: socket.socket | None,
    preserve_fds: int,
) -> int:
    """Fork a process into a running container's namespaces and cgroup; returns its pid once exec'd."""

    def body(chan: Channel, state: dict[str, Any]) -> None:
        init.exec_init(p, chan, console, preserve_fds)

    shake = Handshake(ns, body, joining, p)
    try:
        shake.chan.expect("ready")
        shake.chan.close()
    except BaseException:
        shake.abort()
        raise
    return shake.pid
