"""The sync channel between the runtime and the processes it forks: JSON lines over two pipes.

A child reports a failure as {"type": "error", "message", "errno"}; the parent raises it as
SetupFailed, the way CPython's subprocess carries an exec failure back across fork. Each
message is one write(2) of less than PIPE_BUF bytes, so the two children that share the
write end (the intermediate process and the init) never interleave.
"""

from __future__ import annotations

import os
import struct

from ketch import jsonio
from ketch.errors import SetupFailed

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any

_MAX = 4000  # below PIPE_BUF (4096): a write of this size is atomic


class Channel:
    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd
        self.buffer = b""
        self.gate = -1  # a pipe whose EOF must come before our first message (hold_until_eof)

    def hold_until_eof(self, fd: int) -> None:
        """Send nothing until `fd` reads EOF: the init waits so for its parent's "pid" message to go
        first, without waiting before work that does not talk."""
        self.gate = fd

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        """Two ends; both pipes are close-on-exec, so nothing of them reaches the container."""
        up_r, up_w = os.pipe()
        down_r, down_w = os.pipe()
        return cls(up_r, down_w), cls(down_r, up_w)

    def send(self, kind: str, **fields: Any) -> None:
        line = (jsonio.dumps({"type": kind, **fields}) + "\n").encode()
        if len(line) > _MAX:
            raise SetupFailed(f"setup protocol: message {kind!r} is too long")
        if self.gate >= 0:
            gate, self.gate = self.gate, -1
            while os.read(gate, 1):
                pass
            os.close(gate)
        os.write(self.wfd, line)

    def recv(self) -> dict[str, Any]:
        """The next message; an error report is raised, a closed peer is an error too."""
        while b"\n" not in self.buffer:
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                raise SetupFailed("container process exited during setup")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        msg: dict[str, Any] = jsonio.loads(line)
        if msg["type"] == "error":
            raise SetupFailed(msg["message"], msg.get("errno", 0))
        return msg

    def expect(self, kind: str) -> dict[str, Any]:
        msg = self.recv()
        if msg["type"] != kind:
            raise SetupFailed(f"setup protocol: expected {kind!r}, got {msg['type']!r}")
        return msg

    def send_error(self, exc: BaseException) -> None:
        err = getattr(exc, "errno", 0) or 0
        message = str(exc)
        if isinstance(exc, OSError) and exc.strerror:
            message = exc.strerror if not exc.filename else f"{exc.strerror}: {exc.filename}"
            if len(exc.args) > 1 and isinstance(exc.args[1], str) and ":" in exc.args[1]:
                message = exc.args[1]
        try:
            self.send("error", message=message[:3000], errno=err)
        except OSError:
            pass

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass


def send_fd(sock: socket.socket, name: str, fd: int) -> None:
    """Pass `fd` with SCM_RIGHTS and `name` as the payload, as runc does on --console-socket."""
    import socket  # already loaded: the caller holds a socket (the child cannot import after pivot_root)

    sock.sendmsg([name.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])


def recv_fd(sock: socket.socket) -> int:
    import socket

    size = struct.calcsize("i")
    _, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(size))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fd: int = struct.unpack("i", data[:size])[0]
            return fd
    raise SetupFailed("no file descriptor received on the console socket")
