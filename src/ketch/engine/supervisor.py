"""The supervisor: a long-lived, single-threaded process that forks one monitor per container.

Why a supervisor: a monitor that is a fresh Python interpreter costs ~7 MB of private memory.
Forked from one parent that has already imported everything a monitor runs, monitors share
those pages copy-on-write (and `gc.freeze()` keeps the collector from dirtying them), so each
costs only what it writes. Monitors are double-forked: they do not depend on the supervisor,
which can die or be restarted (by the next `ketch` command that needs it) without touching a
running container.

Requests arrive on <runroot>/supervisor.sock as one JSON line:
    {"op": "start", "id": "<container id>", "attach": true}
The connection itself is handed to the monitor, which answers on it (see ketch.engine.stream).

A spare monitor waits ahead of need: double-forked already, it takes the next request and its
connection (SCM_RIGHTS over a socketpair) and becomes that container's monitor, and the
supervisor forks the next spare once the start is under way (SPARE_DELAY). The two forks (3-6 ms
for a process of this size) are then off the start's path. A spare whose supervisor goes (EOF on the
socketpair) leaves at once.
"""

from __future__ import annotations

import os
import sys

from ketch import jsonio
from ketch.engine import stream

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any, NoReturn

    from ketch.engine.context import Context

# After handing its spare a start, the supervisor waits this long (unless another request comes)
# before forking the next: a fork of this process takes ~1 ms of a CPU, and done at once it kept
# the just-woken monitor off the CPU for as long (on this 2-core machine).
SPARE_DELAY = 0.02
SPAWN_TIMEOUT = 30.0  # a slow machine (the TCG guest) may need ~10 s to preload and warm up
PRELOADED: set[str] = set()  # modules a monitor inherits; KETCH_MONITOR_TRACE lists what it imports beyond


_PRELOAD = (
    "fcntl", "json", "select", "socket", "struct", "termios", "ketch.clock", "ketch.files", "ketch.jsonio",
    "ketch.engine.containers", "ketch.engine.context", "ketch.engine.images", "ketch.engine.lifecycle",
    "ketch.engine.stream", "ketch.engine.bundle", "ketch.engine.create",
    "ketch.engine.execute", "ketch.engine.health", "ketch.engine.logs", "ketch.engine.monitor",
    "ketch.engine.options", "ketch.engine.seccomp_default", "ketch.engine.specconv", "ketch.engine.users",
    "ketch.image.content", "ketch.image.layers", "ketch.image.snapshots", "ketch.image.store",
    "ketch.linux.seccomp", "ketch.runtime.channel", "ketch.runtime.hooks", "ketch.runtime.lifecycle",
    "ketch.runtime.plan", "ketch.runtime.seccomp", "ketch.runtime.spawn", "ketch.runtime.container",
    "ketch.runtime.signals", "ketch.runtime.capabilities", "ketch.runtime.cgstats", "ketch.oci.runtime",
    "ketch.oci.image", "ipaddress", "subprocess", "ketch.engine.networks", "ketch.network.bridge",
    "ketch.network.firewall", "ketch.network.ipam", "ketch.network.ports", "ketch.network.store",
    "ketch.engine.userns", "ketch.linux.idmap", "ketch.runtime.resources", "_sha256",
    "encodings.ascii", "ketch.runtime.devicefilter", "ketch.linux.bpf",  # the last two: cgroup v2's device rules
)  # fmt: skip


def _preload() -> None:
    """Import what monitors and their setup children run, so that each fork shares it instead of
    importing it again (a monitor that imports on its own pays ~60 ms and private memory for every
    container; a setup child that imported ketch.engine.userns and hashlib paid ~5 ms per start)."""
    from importlib import import_module

    from ketch.runtime import cgroups

    for name in _PRELOAD:
        import_module(name)
    cgroups.hierarchies()
    _precompile_default_seccomp()


def _precompile_default_seccomp() -> None:
    """Docker's default profile compiles in ~20 ms; done once here, every monitor inherits it."""
    from ketch.engine.seccomp_default import DEFAULT_CAPABILITIES, default_profile
    from ketch.errors import KetchError
    from ketch.oci.runtime import Seccomp
    from ketch.runtime import seccomp

    try:
        profile = default_profile(DEFAULT_CAPABILITIES)
        seccomp.program_for(Seccomp.from_json(profile), jsonio.dumps(profile))  # the text a spec carries
    except KetchError:
        pass  # no libseccomp: containers will say so when they start


def serve(ctx: Context) -> NoReturn:
    """The supervisor's main loop (it never returns)."""
    import gc

    from ketch.files import atomic_write

    _preload()
    PRELOADED.update(sys.modules)
    _warm_up(ctx)
    listener = _bind(ctx.supervisor_socket)
    atomic_write(os.path.join(ctx.runroot, "supervisor.pid"), str(os.getpid()).encode())
    gc.collect()
    gc.freeze()  # keep the collector from touching (and so copying) the pages monitors share
    spare = _fork_spare(ctx, listener)
    while True:
        conn, _ = listener.accept()
        try:
            spare = _handle(ctx, listener, conn, spare)
        except Exception as exc:  # one bad request must not take the supervisor down
            try:
                stream.send(conn.fileno(), stream.ERROR, f"supervisor: {exc}".encode())
            except OSError:
                pass
        finally:
            conn.close()
        if spare is None and not _incoming(listener, SPARE_DELAY):
            spare = _fork_spare(ctx, listener)
        _reap_children()


def _incoming(listener: socket.socket, seconds: float) -> bool:
    """Whether a connection arrives within `seconds`."""
    import select

    return bool(select.select([listener], [], [], seconds)[0])


_WARM_ROUNDS = 20  # CPython 3.11 quickens a function on its 8th call and specializes it after


def _warm_up(ctx: Context) -> None:
    """Walk the monitor's everyday paths, on a scratch container, until their code is quickened.

    CPython 3.11 rewrites a function's bytecode in place as it warms up (call counters, then
    specialized instructions), and fills type attribute caches and interned names. Done here,
    that lands in pages every monitor shares; done in each monitor, each copies those pages
    (~0.2 MB of a monitor's private memory came from first calls alone)."""
    from ketch.clock import rfc3339
    from ketch.engine.containers import ContainerRecord, ContainerStore
    from ketch.engine.logs import LogWriter, open_writer
    from ketch.record import replace
    from ketch.runtime.container import remove_tree

    scratch = os.path.join(ctx.runroot, f"warm-up.{os.getpid()}")
    store = ContainerStore(scratch)
    record = ContainerRecord(
        id="0" * 64, name="warm-up", created=rfc3339(), image="", image_ref="",
        config={"Env": ["PATH=/bin"], "Labels": {}}, host_config={"LogConfig": {"Type": "json-file", "Config": {}}},
        path="true",
    )  # fmt: skip
    try:
        store.add(record)
        for _ in range(_WARM_ROUNDS):
            loaded = ContainerStore(scratch).load(record.id)
            store.update_state(record.id, durable=False, status="running", pid=1, started_at=rfc3339())
            state = store.state(record.id)
            jsonio.loads(jsonio.dumps(replace(state, status="exited").to_dict()))
            log = open_writer(loaded, os.devnull)
            assert isinstance(log, LogWriter)  # the scratch record asks for json-file
            log.write("stdout", b"warm\n")
            log.fd, fd = -1, log.fd  # not close(): its flush fsyncs, which /dev/null refuses
            os.close(fd)
            stream.Reader().feed(stream.frame(stream.STDOUT, b"x"))
        store.ids()
    finally:
        remove_tree(scratch)


def _bind(path: str) -> socket.socket:
    """Listen on `path`, replacing a stale socket atomically (bind a temp name, then rename)."""
    import socket

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    sock.bind(tmp)
    sock.listen(128)
    os.rename(tmp, path)
    return sock


def _handle(
    ctx: Context, listener: socket.socket, conn: socket.socket, spare: socket.socket | None
) -> socket.socket | None:
    """Serve one request; returns the spare if it is still unused."""
    conn.settimeout(5)  # recv honours it (os.read on the now non-blocking fd would not)
    request: dict[str, Any] = jsonio.loads(stream.read_line(conn))
    conn.settimeout(None)
    if request.get("op") == "ping":
        stream.send(conn.fileno(), stream.STARTED, b"{}")
        return spare
    if request.get("op") != "start":
        raise ValueError(f"unknown request {request.get('op')!r}")
    container_id, attach = str(request["id"]), bool(request.get("attach"))
    if spare is not None:
        import socket

        try:
            socket.send_fds(
                spare, [jsonio.dumps({"id": container_id, "attach": attach}).encode()], [conn.fileno()]
            )
            return None
        except OSError:  # the spare is gone: fork the monitor here
            pass
        finally:
            spare.close()
    _double_fork(listener, lambda: _become_monitor(ctx, container_id, conn.detach(), attach))
    return None


def _double_fork(listener: socket.socket, then: Any) -> None:
    """Run `then` in a grandchild in its own session; the child leaves at once, so init adopts
    it (and _reap_children collects the child)."""
    if os.fork() == 0:
        try:
            listener.close()
            os.setsid()
            if os.fork() == 0:
                then()
        finally:
            os._exit(0)


def _fork_spare(ctx: Context, listener: socket.socket) -> socket.socket | None:
    """A monitor that waits for its container; our end of its socketpair."""
    import socket

    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError:
        return None

    def wait() -> None:
        ours.close()
        _serve_as_spare(ctx, theirs)

    _double_fork(listener, wait)
    theirs.close()
    return ours


def _serve_as_spare(ctx: Context, sock: socket.socket) -> NoReturn:
    import socket

    try:
        message, fds, _, _ = socket.recv_fds(sock, 4096, 1)
    except OSError:
        os._exit(0)
    sock.close()
    if not fds:  # EOF: the supervisor is gone
        os._exit(0)
    request = jsonio.loads(message)
    _become_monitor(ctx, str(request["id"]), fds[0], bool(request["attach"]))


def _become_monitor(ctx: Context, container_id: str, fd: int, attach: bool) -> NoReturn:
    from ketch.engine.monitor import Monitor

    Monitor(ctx, container_id).run(fd, attach)


def _reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# --- the client side: find or start the supervisor -------------------------------------------------


def connect(ctx: Context) -> socket.socket:
    """A connection to the supervisor, starting one if none answers."""
    sock = _try_connect(ctx.supervisor_socket)
    if sock is not None:
        return sock
    from ketch.files import FileLock

    os.makedirs(ctx.runroot, exist_ok=True)
    with FileLock(os.path.join(ctx.runroot, "supervisor.lock")):
        sock = _try_connect(ctx.supervisor_socket)
        if sock is None:
            _spawn(ctx)
            sock = _wait_for(ctx.supervisor_socket)
    return sock


def _try_connect(path: str) -> socket.socket | None:
    # _socket, not socket: the socket module imports enum, a few ms a `ketch run` need not pay
    import _socket

    sock: socket.socket = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)  # type: ignore[assignment]
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def _spawn(ctx: Context) -> None:
    """Start a supervisor as a fresh interpreter in its own session, detached from our stdio."""
    import subprocess

    argv = [sys.executable, "-m", "ketch.engine.supervisor", ctx.root, ctx.runroot, ctx.driver]
    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)  # fmt: skip


def _wait_for(path: str) -> socket.socket:
    import time

    from ketch.errors import Unavailable

    deadline = time.monotonic() + SPAWN_TIMEOUT
    while time.monotonic() < deadline:
        sock = _try_connect(path)
        if sock is not None:
            return sock
        time.sleep(0.005)
    raise Unavailable(f"the ketch supervisor did not start within {SPAWN_TIMEOUT:.0f} s ({path})")


def stop(ctx: Context) -> None:
    """Stop this runroot's supervisor, if one runs (monitors do not depend on it)."""
    import signal
    import time

    try:
        with open(os.path.join(ctx.runroot, "supervisor.pid")) as f:
            pid = int(f.read().strip() or 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"ketch.engine.supervisor" not in f.read():
                return
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.01)


def main() -> NoReturn:
    from ketch.engine.context import Context

    root, runroot, driver = sys.argv[1:4]
    serve(Context(root, runroot, driver))


if __name__ == "__main__":  # run as `python -m`: hand over to the module proper, not __main__,
    from ketch.engine.supervisor import main as _main  # so monitors see its state (PRELOADED)

    _main()
