"""The runtime's verbs that fork: create, exec and run (create + start + wait + delete)."""

from __future__ import annotations

import os

from ketch.errors import Conflict
from ketch.files import atomic_write
from ketch.linux import syscalls as sc
from ketch.oci.runtime import Process
from ketch.record import Record
from ketch.runtime import plan, signals, spawn
from ketch.runtime.container import (
    FIFO,
    Container,
    Runtime,
    StateRecord,
    cgroup_for,
    connect_console,
    load_spec,
    now_rfc3339,
    remove_tree,
    start_time,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from typing import Any


class Stdio(Record):
    """Where the container's terminal goes: a console socket path, or the caller proxies it."""

    console_socket: str = ""
    pid_file: str = ""


def write_pid_file(path: str, pid: int) -> None:
    if path:
        atomic_write(
            os.path.abspath(path), str(pid).encode(), durable=False
        )  # a live pid: no use after a crash


def create(
    rt: Runtime, container_id: str, bundle: str, opts: plan.CreateOptions, io: Stdio,
    warnings: list[str], console: socket.socket | None = None,
) -> Container:  # fmt: skip
    """Set the container up to the point where only `start` is missing."""
    bundle = os.path.abspath(bundle)
    spec, raw = load_spec(bundle)
    directory = rt.reserve(container_id)
    cgroup = cgroup_for(spec, container_id)
    rec = StateRecord(
        id=container_id, bundle=bundle, rootfs="", status="creating", created=now_rfc3339(),
        cgroup_path=cgroup.path, cgroup_dirs=cgroup.dirs, config=raw, annotations=spec.annotations,
        owner="",
    )  # fmt: skip
    ctr = Container(rt.root, rec)
    fifo_fd = -1
    try:
        ctr.save()
        fifo = os.path.join(directory, FIFO)
        opts = plan.CreateOptions(opts.no_pivot, opts.new_keyring, opts.preserve_fds,
                                  console=bool(io.console_socket) or console is not None)  # fmt: skip
        os.mkfifo(fifo, 0o622)
        fifo_fd = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)
        ip = plan.init_plan(
            spec, container_id, bundle, fifo_fd, cgroup.dirs, opts, warnings, _seccomp_json(raw)
        )
        rec.rootfs = ip.rootfs
        cgroup.create()
        warnings.extend(cgroup.apply(spec.linux.resources))
        if console is None and io.console_socket:
            console = connect_console(io.console_socket)

        def run_hooks(state: dict[str, Any]) -> None:
            if spec.hooks["prestart"] or spec.hooks["createRuntime"]:
                from ketch.runtime import hooks

                hooks.run(spec.hooks["prestart"], "prestart", state)
                hooks.run(spec.hooks["createRuntime"], "createRuntime", state)

        def state_for(pid: int, status: str) -> dict[str, Any]:
            rec.pid = pid
            return ctr.hook_state(status)

        pid = spawn.start_init(ip, cgroup.joining(), (spec.linux.uid_mappings, spec.linux.gid_mappings), console,
                               state_for, run_hooks)  # fmt: skip
        rec.pid, rec.pid_start, rec.status = pid, start_time(pid) or 0, "created"
        ctr.save()
        write_pid_file(io.pid_file, pid)
    except BaseException:
        _undo_create(ctr)
        raise
    finally:
        if console is not None:
            console.close()
        if fifo_fd >= 0:
            os.close(fifo_fd)
    return ctr


def _seccomp_json(config: dict[str, Any]) -> str:
    """The config's seccomp section as JSON text (C-encoded, ~0.1 ms): a key for compiled filters."""
    from ketch import jsonio

    section = (config.get("linux") or {}).get("seccomp") if isinstance(config, dict) else None
    return jsonio.dumps(section) if isinstance(section, dict) else ""


def _undo_create(ctr: Container) -> None:
    if ctr.record.pid and start_time(ctr.record.pid) is not None:
        try:
            os.kill(ctr.record.pid, signals.SIGKILL)
        except ProcessLookupError:
            pass
    ctr.record.status = "creating"
    try:
        ctr.delete(force=True)
    except Exception:
        remove_tree(ctr.dir)


def exec_process(
    ctr: Container, proc: Process, io: Stdio, preserve_fds: int, warnings: list[str],
    console: socket.socket | None = None,
) -> int:  # fmt: skip
    """Start `proc` inside the running container; returns its pid (the caller may wait for it)."""
    status = ctr.status()
    if status not in ("running", "created"):
        raise Conflict(f"cannot exec in a container that is {status}")
    spec = ctr.spec
    if proc.terminal and not io.console_socket and console is None:
        from ketch.errors import InvalidArgument

        raise InvalidArgument("process.terminal is true but no --console-socket was given")
    p = plan.exec_plan(proc, spec, warnings, _seccomp_json(ctr.record.config))
    ns = plan.exec_namespaces(spec.linux, ctr.record.pid)
    if console is None and io.console_socket:
        console = connect_console(io.console_socket)
    try:
        pid = spawn.start_exec(ns, p, ctr.cgroup.joining(), console, preserve_fds)
    finally:
        if console is not None:
            console.close()
    write_pid_file(io.pid_file, pid)
    return pid


def become_subreaper() -> None:
    """Orphans of our children (the container's init after the intermediate exits) come to us."""
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)


def wait_exit(pid: int, forward: bool = True) -> int:
    """Wait for `pid`, forwarding the signals we get to it; returns a shell-style exit status."""
    if forward:
        for sig in signals.FORWARDED:
            signals.handle(sig, lambda s, _f: _forward(pid, s))
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if got == pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _forward(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Detached(Exception):
    """The terminal proxy stopped on the caller's word; the process goes on."""


def proxy_terminal(master: int, pid: int, typed: Callable[[bytes], tuple[bytes, bool]] | None = None) -> int:
    """Copy our stdin to the pty and the pty to our stdout until the process exits (its exit
    status). `typed` sees our stdin first: it returns what goes on and whether to stop there
    (Detached is raised; the process goes on and `master` stays open)."""
    import select
    import termios
    import tty

    saved = None
    if os.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0)
    try:
        fds = [master, 0]
        while True:
            ready, _, _ = select.select(fds, [], [])
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                os.write(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if not data:
                    fds.remove(0)
                    continue
                stop = False
                if typed is not None:
                    data, stop = typed(data)
                os.write(master, data)
                if stop:
                    raise Detached
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
    return wait_exit(pid, forward=False)
