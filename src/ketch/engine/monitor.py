"""The monitor: one process per running container, conmon's role.

It is forked from the supervisor (so its code pages are shared with every other monitor), then
it starts the container with the runtime library in-process, which makes the container's init
its child (it is a subreaper). It owns the container's stdio: output goes to the json-file log
and to attached clients; stdin comes from a client. When the init exits it records the exit
code, OOM kill and finish time, unmounts the rootfs, applies the restart policy, and removes
the container when it was run with --rm.

    client (ketch run) ──request──▶ supervisor ──fork──▶ monitor ──runtime.create──▶ init
           ◀──────────────── output, STARTED, EXIT frames ─────┘
"""

from __future__ import annotations

import os
import select
import time

from ketch.clock import rfc3339
from ketch.engine import stream
from ketch.errors import KetchError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any, NoReturn

    from ketch.engine.containers import ContainerRecord, ContainerStore, State
    from ketch.engine.context import Context

_BACKOFF_START, _BACKOFF_MAX = 0.1, 60.0  # Docker's restart back-off: 100 ms doubling, at most 1 min
_LINGER_MS = 500  # after the init exits, how long output may stay quiet before we stop reading


class _Stdio:
    """The monitor's ends of the container's stdio (a pty master, or pipes)."""

    def __init__(self) -> None:
        self.out = self.err = self.stdin = -1
        self.master = -1


class Monitor:
    def __init__(self, ctx: Context, container_id: str) -> None:
        self.ctx = ctx
        self.store: ContainerStore = ctx.containers()
        self.record: ContainerRecord = self.store.load(container_id)
        self.id = container_id
        self.clients: list[int] = []
        self.stdin_client = -1
        self.log: Any = None
        self.listener: socket.socket | None = None
        self.port_sockets: list[socket.socket] = []
        self.started = False  # the record is reloaded at each restart, not at the first start

    # --- entry point ------------------------------------------------------------------------------

    def run(self, client: int, attach: bool) -> NoReturn:
        """Start the container, report to `client`, then watch it until it is gone for good."""
        code = 1
        try:
            code = self._serve(client, attach)
        except BaseException as exc:  # a monitor must never die with a traceback nobody reads
            self._fail(client, exc)
        finally:
            _trace_imports()
            os._exit(code)

    def _serve(self, client: int, attach: bool) -> int:
        from ketch.engine.logs import open_writer
        from ketch.runtime import lifecycle

        lifecycle.become_subreaper()
        self.log = open_writer(self.record, self.store.path(self.id, f"{self.id}-json.log"))
        self._listen()
        io = self._start()
        if attach:
            self.clients.append(client)
            if self.record.config.get("OpenStdin"):
                self.stdin_client = client
        stream.send_json(client, stream.STARTED, {"pid": self.pid})
        if not self._auto_remove:  # an --rm container's record is not kept through a crash
            self.store.sync_state(self.id)
        if not attach:
            os.close(client)
        while True:
            exit_code = self._watch(io)
            if not self._restart(exit_code):
                break
            io = self._start()
            self.store.sync_state(self.id)
        return 0

    def _fail(self, client: int, exc: BaseException) -> None:
        message = str(exc) if isinstance(exc, KetchError) else f"{type(exc).__name__}: {exc}"
        try:
            self.store.update_state(self.id, status="exited" if self._ever_started() else "created",
                                    error=message, pid=0, monitor=0)  # fmt: skip
        except Exception:
            pass
        errno = getattr(exc, "errno", 0) or 0
        for fd in {client, *self.clients}:
            try:
                stream.send_json(fd, stream.ERROR, {"message": message, "errno": errno})
            except OSError:
                pass

    def _ever_started(self) -> bool:
        try:
            return self.store.raw_state(self.id).started_at != "0001-01-01T00:00:00Z"
        except KetchError:
            return False

    # --- starting -----------------------------------------------------------------------------------

    def _start(self) -> _Stdio:
        """Start the container from a short-lived setup child, and adopt its init.

        The setup (spec, seccomp, runtime.create) allocates megabytes of Python objects; done
        in the monitor they would stay in its private pages for the container's whole life. The
        child does it and exits; the init, orphaned when the runtime's intermediate process
        exits, comes to us because we are a subreaper.
        """
        from ketch.runtime.container import start_time

        if self.started:
            self.record = self.store.load(self.id)  # `network connect` may have changed it since
        self.started = True
        config = self.record.config
        ports = self._reserve_ports()
        io, console, theirs = self._plumb(bool(config.get("Tty")), bool(config.get("OpenStdin")))
        result = self._in_setup_child(lambda: self._setup(console, theirs, ports))
        for fd in set(theirs):
            os.close(fd)
        if console is not None:
            from ketch.runtime.channel import recv_fd

            console.close()
            io.master = recv_fd(self._console_peer)
            self._console_peer.close()
        self.pid = pid = int(result["pid"])
        self.health_pid = 0
        if result.get("health"):
            from ketch.engine import health

            self.health_pid = health.start(self.ctx, self.record, health.Check(**result["health"]))
        self.store.update_state(  # fsynced once the client has its answer (sync_state)
            self.id, durable=False, status="running", pid=pid, pid_start=start_time(pid) or 0, monitor=os.getpid(),
            monitor_start=start_time(os.getpid()) or 0, started_at=rfc3339(), exit_code=0, error="",
            oom_killed=False,
        )  # fmt: skip
        return io

    def _in_setup_child(self, work: Any) -> dict[str, Any]:
        """Run `work()` in a forked child; its JSON result, or its error raised here."""
        from ketch import jsonio
        from ketch.engine.lifecycle import start_error

        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        child = os.fork()
        if child == 0:
            os.close(read_end)
            code = 0
            try:
                doc = {"ok": work()}
            except BaseException as exc:
                message = str(exc) if isinstance(exc, KetchError) else f"{type(exc).__name__}: {exc}"
                doc, code = {"message": message, "errno": getattr(exc, "errno", 0) or 0}, 1
            os.write(write_end, jsonio.dumps(doc).encode())
            _trace_imports()
            os._exit(code)
        os.close(write_end)
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
        os.close(read_end)
        os.waitpid(child, 0)
        payload = b"".join(chunks)
        doc = jsonio.loads(payload) if payload else {"message": "the setup process died", "errno": 0}
        if "ok" not in doc:
            raise start_error(payload or b"the setup process died")
        result: dict[str, Any] = doc["ok"]
        return result

    def _reserve_ports(self) -> tuple[Any, ...]:
        """Bind the container's published host ports; the sockets stay open (in this monitor) for
        as long as the container runs, so nothing else can take them."""
        self._close_ports()
        asked = self.record.host_config["Ketch"]
        if not asked.get("publish") and not asked.get("publish_all"):
            return ()  # most containers: no options record built, so no pages of ours touched
        from ketch.engine import networks
        from ketch.engine.create import options_from_json
        from ketch.network import ports

        wanted = networks.port_requests(self.record, options_from_json(asked))
        if not wanted:
            return ()
        bindings, self.port_sockets = ports.reserve(wanted)
        return tuple(bindings)

    def _close_ports(self) -> None:
        for sock in self.port_sockets:
            sock.close()
        self.port_sockets = []

    def _setup(
        self, console: socket.socket | None, theirs: list[int], ports: tuple[Any, ...]
    ) -> dict[str, Any]:
        """In the setup child: write the bundle, create the container, wire its network, start it."""
        from ketch.engine import bundle, networks
        from ketch.runtime import lifecycle
        from ketch.runtime.container import Runtime, start_time
        from ketch.runtime.plan import CreateOptions

        monitor = os.getppid()
        prepared = bundle.prepare(self.ctx, self.record, ports, (monitor, start_time(monitor) or 0))
        try:
            rt = Runtime(self.ctx.runtime_root)
            self._forget_runtime_state(rt)
            for target, fd in enumerate(theirs):
                os.dup2(fd, target)
            ctr = lifecycle.create(
                rt, self.id, prepared.path, CreateOptions(), lifecycle.Stdio(), [], console
            )
            try:
                networks.plumb(self.ctx, prepared.wiring, ctr.record.pid)
                ctr.start()
            except BaseException:
                ctr.delete(force=True)
                raise
        except BaseException:
            networks.release(self.ctx, self.id, prepared.wiring.endpoints)
            raise
        check = prepared.health
        return {"pid": ctr.record.pid, "health": check.to_dict() if check is not None else None}

    def _plumb(self, terminal: bool, stdin: bool) -> tuple[_Stdio, socket.socket | None, list[int]]:
        """Make the container's stdio; returns our ends, a console socket, and its fds 0, 1, 2."""
        io = _Stdio()
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        if terminal:
            import socket

            console, self._console_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            return io, console, [devnull, devnull, devnull]
        io.out, out_w = os.pipe2(os.O_CLOEXEC)
        io.err, err_w = os.pipe2(os.O_CLOEXEC)
        in_r = devnull
        if stdin:
            in_r, io.stdin = os.pipe2(os.O_CLOEXEC)
        theirs = [in_r, out_w, err_w]
        if in_r != devnull:
            os.close(devnull)
        return io, None, theirs

    def _forget_runtime_state(self, rt: Any) -> None:
        """A previous run (restart, or a crash) may have left the runtime's record: delete it."""
        from ketch.errors import NotFound

        try:
            rt.load(self.id).delete(force=True)
        except NotFound:
            rt.force_delete_partial(self.id)  # a state dir without a readable state, if any

    # --- watching ------------------------------------------------------------------------------------

    def _listen(self) -> None:
        import socket

        path = self.ctx.attach_socket(self.id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(16)

    def _watch(self, io: _Stdio) -> int:
        """Copy output to the log and clients until the init exits and its output ends; its exit code."""
        pidfd = os.pidfd_open(self.pid)
        poller = select.poll()
        sources = {
            fd: name
            for fd, name in ((io.out, "stdout"), (io.err, "stderr"), (io.master, "stdout"))
            if fd >= 0
        }
        for fd in (*sources, pidfd, self._listener_fd(), *self.clients):
            poller.register(fd, select.POLLIN)
        readers = {fd: stream.Reader() for fd in self.clients}
        exited = False
        while sources or not exited:
            events = poller.poll(_LINGER_MS if exited else None)
            if not events:
                break  # the init is gone and its output has been quiet: whoever holds the pipe is not ours
            for fd, _event in events:
                if fd == pidfd:
                    exited = True
                    poller.unregister(pidfd)
                elif fd in sources:
                    self._output(fd, sources, poller)
                elif fd == self._listener_fd():
                    self._accept(poller, readers)
                else:
                    self._from_client(fd, io, poller, readers)
        os.close(pidfd)
        for fd in (*sources, io.stdin):
            if fd >= 0:
                os.close(fd)
        io.stdin = -1
        return self._reap()

    def _listener_fd(self) -> int:
        return self.listener.fileno() if self.listener is not None else -1

    def _output(self, fd: int, sources: dict[int, str], poller: select.poll) -> None:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the pty's last holder closed it
            data = b""
        if not data:
            poller.unregister(fd)
            os.close(fd)
            del sources[fd]
            return
        name = sources[fd]
        self.log.write(name, data)
        kind = stream.STDOUT if name == "stdout" else stream.STDERR
        for client in list(self.clients):
            try:
                stream.send(client, kind, data)
            except OSError:
                self._drop(client, poller)

    def _accept(self, poller: select.poll, readers: dict[int, stream.Reader]) -> None:
        assert self.listener is not None
        conn, _ = self.listener.accept()
        fd = conn.detach()
        self.clients.append(fd)
        readers[fd] = stream.Reader()
        poller.register(fd, select.POLLIN)
        if self.stdin_client < 0 and self.record.config.get("OpenStdin"):
            self.stdin_client = fd

    def _from_client(
        self, fd: int, io: _Stdio, poller: select.poll, readers: dict[int, stream.Reader]
    ) -> None:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            self._drop(fd, poller)
            return
        for kind, payload in readers.setdefault(fd, stream.Reader()).feed(data):
            if kind == stream.STDIN and fd == self.stdin_client:
                target = io.master if io.master >= 0 else io.stdin
                if target >= 0:
                    os.write(target, payload)
            elif kind == stream.CLOSE_STDIN and io.stdin >= 0 and fd == self.stdin_client:
                os.close(io.stdin)
                io.stdin = -1
            elif kind == stream.RESIZE and io.master >= 0:
                self._resize(io.master, payload)

    @staticmethod
    def _resize(master: int, payload: bytes) -> None:
        import fcntl
        import struct
        import termios

        rows, cols = (int(x) for x in payload.decode().split())
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def _drop(self, fd: int, poller: select.poll) -> None:
        if fd in self.clients:
            self.clients.remove(fd)
            try:
                poller.unregister(fd)
            except KeyError:
                pass
            os.close(fd)

    def _reap(self) -> int:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return 255
            if pid == self.pid:
                return (
                    os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
                )

    # --- after the exit ------------------------------------------------------------------------------

    def _stop_health(self) -> None:
        if getattr(self, "health_pid", 0):
            try:
                os.kill(self.health_pid, 9)
                os.waitpid(self.health_pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.health_pid = 0

    def _finish(self, exit_code: int) -> State:
        from ketch.engine import bundle, networks
        from ketch.runtime.container import Runtime

        self._stop_health()
        oom = False
        try:
            ctr = Runtime(self.ctx.runtime_root).load(self.id)
            oom = ctr.oom_killed()
            ctr.delete(force=True)
        except KetchError:
            pass
        try:
            networks.release(self.ctx, self.id)
        except KetchError:
            pass  # a stale endpoint is reclaimed by the next allocation that needs it
        self._close_ports()
        bundle.release(self.ctx, self.record)
        self.log.flush()
        # the monitor stays recorded until _goodbye: a "restarting" state needs a live monitor behind it.
        # An --rm container is removed next (and has no restart policy): its exit need not survive a crash.
        return self.store.update_state(self.id, durable=not self._auto_remove, status="exited",
                                       exit_code=exit_code, pid=0, finished_at=rfc3339(), oom_killed=oom)  # fmt: skip

    def _restart(self, exit_code: int) -> bool:
        """Record the exit; True when the restart policy brings the container back."""
        state = self._finish(exit_code)
        policy, limit = _policy(self.record)
        again = not state.manually_stopped and (
            policy == "always" or policy == "unless-stopped" or
            (policy == "on-failure" and exit_code != 0 and (not limit or state.restart_count < limit))
        )  # fmt: skip
        if again:
            delay = min(_BACKOFF_MAX, _BACKOFF_START * 2 ** min(state.restart_count, 10))
            self.store.update_state(self.id, status="restarting", restart_count=state.restart_count + 1)
            time.sleep(delay)
            if self.store.raw_state(self.id).manually_stopped:
                self.store.update_state(self.id, status="exited")
                again = False
        if not again:
            self._goodbye(exit_code)
        return again

    @property
    def _auto_remove(self) -> bool:
        return bool(self.record.host_config.get("AutoRemove"))

    def _goodbye(self, exit_code: int) -> None:
        if self._auto_remove:
            from ketch.engine import lifecycle

            lifecycle.remove_container(self.ctx, self.record, volumes=True)
        else:  # not fsynced: after a crash, a dead monitor's pid is recognised as dead (pid and start time)
            self.store.update_state(self.id, durable=False, monitor=0)
        for client in self.clients:
            try:
                stream.send(client, stream.EXIT, str(exit_code).encode())
            except OSError:
                pass
        if self.listener is not None:
            try:
                os.unlink(self.ctx.attach_socket(self.id))
            except FileNotFoundError:
                pass


def _policy(record: ContainerRecord) -> tuple[str, int]:
    policy = record.host_config.get("RestartPolicy") or {}
    return policy.get("Name") or "no", int(policy.get("MaximumRetryCount") or 0)


def _trace_imports() -> None:
    """With KETCH_MONITOR_TRACE=FILE, write down the modules this monitor (or its setup child)
    imported after the fork to FILE.PID (each costs every monitor private memory, or every start
    time; the supervisor should preload them)."""
    import sys

    path = os.environ.get("KETCH_MONITOR_TRACE")
    if path:
        from ketch.engine.supervisor import PRELOADED

        with open(f"{path}.{os.getpid()}", "w") as f:
            f.write("\n".join(sorted(set(sys.modules) - PRELOADED)))
