"""The parent side of create and exec: fork, drive the child through the sync protocol, get its pid.

See runtime/init.py for the diagram. The parent must be single-threaded when it forks.
"""

from __future__ import annotations

import os

from ketch.errors import SetupFailed
from ketch.oci.runtime import IDMapping
from ketch.runtime import init
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


def _fork(
    ns: NamespacePlan, body: Callable[[Channel, dict[str, Any]], None], p: ProcessPlan
) -> tuple[int, Channel]:
    parent, kid = Channel.pair()
    pid = os.fork()
    if pid == 0:  # C: never returns
        parent.close()
        init.child(ns, kid, lambda state: body(kid, state), p)
    kid.close()
    return pid, parent


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
        join_cgroup: Callable[[int], None],
        p: ProcessPlan,
        maps: tuple[tuple[IDMapping, ...], tuple[IDMapping, ...]] = ((), ()),
    ) -> None:
        self.ns = ns
        self.child_pid, self.chan = _fork(ns, body, p)
        self.pid = 0
        try:
            join_cgroup(self.child_pid)
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

    def proceed(self, state: dict[str, Any]) -> None:
        self.chan.send("continue", state=state)

    def abort(self) -> None:
        for pid in (self.pid, self.child_pid):
            if pid:
                _kill(pid)
        if self.pid and self.pid != self.child_pid:
            _reap(self.pid)  # only reaped when we are its subreaper; harmless otherwise
        self.chan.close()


def start_init(
    plan: InitPlan,
    join_cgroup: Callable[[int], None],
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

    shake = Handshake(plan.namespaces, body, join_cgroup, plan.process, maps)
    try:
        shake.proceed(state_for(shake.pid, "created"))
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
    join_cgroup: Callable[[int], None],
    console: socket.socket | None,
    preserve_fds: int,
) -> int:
    """Fork a process into a running container's namespaces and cgroup; returns its pid once exec'd."""

    def body(chan: Channel, state: dict[str, Any]) -> None:
        init.exec_init(p, chan, console, preserve_fds)

    shake = Handshake(ns, body, join_cgroup, p)
    try:
        shake.proceed({})
        shake.chan.expect("ready")
        shake.chan.close()
    except BaseException:
        shake.abort()
        raise
    return shake.pid
