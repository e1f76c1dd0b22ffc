"""The sync channel between the runtime and the processes it forks: one JSON object per datagram.

A child reports a failure as {"type": "error", "message", "errno"}; the parent raises it as
SetupFailed, the way CPython's subprocess carries an exec failure back across fork.
"""

from __future__ import annotations

import array
import json
import socket
from typing import Any

from ketch.errors import SetupFailed


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return cls(a), cls(b)

    def send(self, kind: str, **fields: Any) -> None:
        self.sock.send(json.dumps({"type": kind, **fields}).encode())

    def recv(self) -> dict[str, Any]:
        """The next message; an error report is raised, a closed peer is an error too."""
        data = self.sock.recv(65536)
        if not data:
            raise SetupFailed("container process exited during setup")
        msg: dict[str, Any] = json.loads(data)
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
            if isinstance(exc.args[1], str) and ":" in exc.args[1]:
                message = exc.args[1]
        try:
            self.send("error", message=message, errno=err)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()


def send_fd(sock: socket.socket, name: str, fd: int) -> None:
    """Pass `fd` with SCM_RIGHTS and `name` as the payload, as runc does on --console-socket."""
    sock.sendmsg([name.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])


def recv_fd(sock: socket.socket) -> int:
    fds = array.array("i")
    _, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: fds.itemsize])
            return fds[0]
    raise SetupFailed("no file descriptor received on the console socket")
