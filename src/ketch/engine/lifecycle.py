"""Container verbs that change state: start, stop, kill, wait, remove (create lives in engine.create).

Starting goes through the supervisor (which forks the container's monitor); everything else acts
directly: signals through the runtime library, state through the container store.
"""

from __future__ import annotations

import os
import time

from ketch.engine import stream
from ketch.errors import Conflict, KetchError, NotFound, SetupFailed

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any

    from ketch.engine.containers import ContainerRecord, State
    from ketch.engine.context import Context

_POLL = 0.01


def start_error(payload: bytes) -> SetupFailed:
    """The monitor's ERROR frame ({"message", "errno"}) as an exception."""
    from ketch import jsonio

    try:
        doc = jsonio.loads(payload)
        return SetupFailed(str(doc["message"]), int(doc.get("errno") or 0))
    except (ValueError, KeyError, TypeError):
        return SetupFailed(payload.decode(errors="replace"))


def exit_code_for(exc: KetchError) -> int:
    """Docker's run exit codes: 127 when the command is not found, 126 when it cannot be run, else 125."""
    import errno

    if isinstance(exc, SetupFailed) and str(exc).startswith("exec"):
        if exc.errno == errno.ENOENT:
            return 127
        if exc.errno in (errno.EACCES, errno.ENOEXEC, errno.EPERM, errno.EISDIR):
            return 126
    return 125


class Started:
    """A started container: the init's pid, and the monitor's connection with what was read past STARTED."""

    def __init__(self, sock: socket.socket, reader: stream.Reader, pid: int) -> None:
        self.sock, self.reader, self.pid = sock, reader, pid


def start(ctx: Context, record: ContainerRecord, attach: bool = False) -> Started:
    """Ask the supervisor to start the container (its monitor answers once the init runs)."""
    from ketch import jsonio
    from ketch.engine import supervisor

    store = ctx.containers()
    store.state(record.id)  # records an exit nobody saw, before we take the lock ourselves
    with store.lock(record.id):
        state = store.raw_state(record.id)
        if state.running:
            raise Conflict(f"container {record.short_id} is already running")
        reset = _reset(state)
        if reset != state:  # a fresh container (run) has nothing to reset: no write, no fsync
            store.save_state(record.id, reset)
    sock = supervisor.connect(ctx)
    request = {"op": "start", "id": record.id, "attach": attach}
    sock.sendall(jsonio.dumps(request).encode() + b"\n")
    reader = stream.Reader()
    while True:
        data = sock.recv(65536)
        if not data:
            raise SetupFailed(f"the monitor of {record.short_id} exited before starting it")
        frames = reader.feed(data)
        for i, (kind, payload) in enumerate(frames):
            if kind == stream.ERROR:
                sock.close()
                raise start_error(payload)
            if kind == stream.STARTED:  # frames read behind it wait in the reader's backlog
                reader.backlog = frames[i + 1 :]
                return Started(sock, reader, int(jsonio.loads(payload).get("pid", 0)))


def attach(ctx: Context, record: ContainerRecord) -> Started:
    """Join a running container's output (and stdin) through its monitor's attach socket."""
    import _socket

    state = ctx.containers().state(record.id)
    if not state.running:
        raise Conflict("You cannot attach to a stopped container, start it first")
    sock: Any = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(ctx.attach_socket(record.id))
    except OSError as exc:
        sock.close()
        raise Conflict(f"container {record.short_id} has no monitor to attach to ({exc.strerror})") from None
    return Started(sock, stream.Reader(), state.pid)


def _reset(state: State) -> State:
    from ketch.record import replace

    return replace(state, manually_stopped=False, error="")


def signal(ctx: Context, record: ContainerRecord, sig: int) -> None:
    """Send `sig` to the container's init; Conflict if it is not running."""
    from ketch.runtime.container import Runtime

    state = ctx.containers().state(record.id)
    if not state.running or state.status == "restarting":
        raise Conflict(f"Container {record.id} is not running")
    try:
        Runtime(ctx.runtime_root).load(record.id).signal(sig)
    except NotFound:
        raise Conflict(f"Container {record.id} is not running") from None


def kill(ctx: Context, record: ContainerRecord, sig: int) -> None:
    ctx.containers().update_state(record.id, manually_stopped=True)
    signal(ctx, record, sig)


def stop(ctx: Context, record: ContainerRecord, timeout: float | None = None, sig: int = 0) -> None:
    """Docker's stop: the stop signal, then SIGKILL after the timeout; a stopped container is fine."""
    from ketch.runtime import signals

    store = ctx.containers()
    state = store.update_state(record.id, manually_stopped=True)
    if not state.running:
        return
    if state.status == "restarting":
        wait(ctx, record, None)
        return
    sig = sig or signals.parse_signal(record.config.get("StopSignal") or "SIGTERM")
    timeout = _stop_timeout(record) if timeout is None else timeout
    try:
        signal(ctx, record, sig)
    except Conflict:
        pass
    if wait(ctx, record, timeout) is None:
        try:
            signal(ctx, record, signals.SIGKILL)
        except Conflict:
            pass
        wait(ctx, record, None)


def _stop_timeout(record: ContainerRecord) -> float:
    value = record.config.get("StopTimeout")
    return 10.0 if value is None else float(value)


def wait(ctx: Context, record: ContainerRecord, timeout: float | None) -> int | None:
    """Block until the container is not running; its exit code, or None on timeout."""
    store = ctx.containers()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            state = store.state(record.id)
        except NotFound:
            return 0  # removed (run --rm) while we waited
        if not state.running:
            return state.exit_code
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(_POLL)


def remove_container(
    ctx: Context, record: ContainerRecord, volumes: bool = False, force: bool = False
) -> None:
    """Docker's rm: refuse a running container unless forced (then kill it); drop everything it had."""
    from ketch.runtime import signals

    store = ctx.containers()
    state = store.state(record.id)
    if state.running and os.getpid() != state.monitor:
        if not force:
            raise Conflict(
                f"You cannot remove a running container {record.id}. Stop the container before attempting "
                "removal or force remove"
            )
        store.update_state(record.id, manually_stopped=True)
        try:
            signal(ctx, record, signals.SIGKILL)
        except Conflict:
            pass
        wait(ctx, record, 10)
    _release(ctx, record)
    store.remove(record)
    if volumes:
        _remove_anonymous_volumes(ctx, record)


def _release(ctx: Context, record: ContainerRecord) -> None:
    """The container's runtime state, rootfs mount and snapshot."""
    from ketch.engine import bundle
    from ketch.runtime.container import Runtime

    try:
        Runtime(ctx.runtime_root).load(record.id).delete(force=True)
    except KetchError:
        pass
    bundle.release(ctx, record)
    images = ctx.images()
    try:
        images.snapshots.remove(record.id)
    except NotFound:
        pass


def _remove_anonymous_volumes(ctx: Context, record: ContainerRecord) -> None:
    from ketch.runtime.container import remove_tree

    for name in (record.host_config.get("KetchAnonymousVolumes") or {}).values():
        remove_tree(os.path.join(ctx.root, "volumes", name))
