"""`exec`: run another process in a running container, from this process (daemonless, no monitor)."""

from __future__ import annotations

from ketch.errors import Conflict, NotFound
from ketch.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.engine.containers import ContainerRecord
    from ketch.engine.context import Context


class ExecOptions(Record):
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    tty: bool = False
    interactive: bool = False
    detach: bool = False
    privileged: bool = False


def process_json(container_process: dict[str, Any], opts: ExecOptions, rootfs: str) -> dict[str, Any]:
    """The container's process (env, user, capabilities...) with the exec's args and flags applied."""
    from ketch.engine import users

    proc = dict(container_process, args=list(opts.args), terminal=opts.tty)
    proc.pop("consoleSize", None)
    if opts.env:
        names = {e.partition("=")[0] for e in opts.env}
        proc["env"] = [e for e in proc.get("env", []) if e.partition("=")[0] not in names] + list(opts.env)
    if opts.workdir:
        proc["cwd"] = opts.workdir
    if opts.user:
        uid, gid, groups, _home = users.resolve_user(rootfs, opts.user)
        proc["user"] = {"uid": uid, "gid": gid, "additionalGids": list(groups)}
    if opts.privileged:
        from ketch.runtime.capabilities import NAMES, last_cap

        everything = list(NAMES[: last_cap() + 1])
        proc["capabilities"] = {k: everything for k in ("bounding", "effective", "permitted")}
    return proc


def execute(ctx: Context, record: ContainerRecord, opts: ExecOptions, typed: Any = None) -> int:
    """Start the process; wait for it (proxying a terminal) unless detached. Its exit code.
    `typed(data) -> (data, stop)` watches the keys typed into a terminal for the detach keys:
    the process then goes on, its terminal drained by a process of its own, and we return 0."""
    from ketch.oci.runtime import Process
    from ketch.runtime import lifecycle
    from ketch.runtime.container import Runtime

    state = ctx.containers().state(record.id)
    if state.status == "paused":
        raise Conflict(f"Container {record.id} is paused, unpause the container before exec")
    if not state.running:
        raise Conflict(f"Container {record.id} is not running")
    try:
        ctr = Runtime(ctx.runtime_root).load(record.id)
    except NotFound:
        raise Conflict(f"Container {record.id} is not running") from None
    rootfs = ctx.containers().path(record.id, "rootfs")
    proc = Process.from_json(process_json(ctr.record.config.get("process") or {}, opts, rootfs))
    console, pty_end = None, None
    if not opts.detach:
        lifecycle.become_subreaper()
        if opts.tty:
            import socket

            console, pty_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with _stdin_closed(not opts.interactive and not opts.tty):  # Docker's exec without -i reads nothing
        pid = lifecycle.exec_process(ctr, proc, lifecycle.Stdio(), 0, [], console)
    if opts.detach:
        return 0
    if pty_end is not None:
        from ketch.runtime.channel import recv_fd

        master = recv_fd(pty_end)
        try:
            return int(lifecycle.proxy_terminal(master, pid, typed if opts.interactive else None))
        except lifecycle.Detached:
            _drain_in_background(master)
            return 0
    return int(lifecycle.wait_exit(pid))


def _drain_in_background(master: int) -> None:
    """Keep reading a detached exec's terminal until it closes, as Docker's daemon does, so
    that its process neither blocks on output nor gets a hangup when we leave."""
    import os

    if os.fork() != 0:
        os.close(master)
        return
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        while os.read(master, 65536):
            pass
    except OSError:
        pass
    finally:
        os._exit(0)


class _stdin_closed:
    """Point fd 0 at /dev/null while the process is spawned (it inherits our stdio)."""

    def __init__(self, active: bool) -> None:
        self.active, self.saved = active, -1

    def __enter__(self) -> None:
        import os

        if self.active:
            null = os.open(os.devnull, os.O_RDONLY)
            self.saved = os.dup(0)
            os.dup2(null, 0)
            os.close(null)

    def __exit__(self, *_exc: object) -> None:
        import os

        if self.saved >= 0:
            os.dup2(self.saved, 0)
            os.close(self.saved)
