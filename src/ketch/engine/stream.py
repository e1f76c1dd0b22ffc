"""The framing spoken on monitor sockets: a JSON request line, then typed frames both ways.

    frame = type (1 byte) + length (4 bytes, big endian) + payload

Frames from the monitor carry the container's output, the result of a start, and its exit;
frames from a client carry stdin, its end, and terminal resizes.
"""

from __future__ import annotations

import os
import struct

from ketch import jsonio

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any

STDIN, STDOUT, STDERR, STARTED, EXIT, ERROR, CLOSE_STDIN, RESIZE = range(8)
_HEADER = struct.Struct(">BI")


def frame(kind: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


def send(fd: int, kind: int, payload: bytes = b"") -> None:
    data = memoryview(frame(kind, payload))
    while data:
        data = data[os.write(fd, data) :]


def send_json(fd: int, kind: int, doc: dict[str, Any]) -> None:
    send(fd, kind, jsonio.dumps(doc).encode())


class Reader:
    """Collects bytes from a socket and yields whole frames."""

    def __init__(self) -> None:
        self.buf = b""
        self.backlog: list[tuple[int, bytes]] = []  # frames read but not yet handled

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= _HEADER.size:
            kind, size = _HEADER.unpack_from(self.buf)
            if len(self.buf) < _HEADER.size + size:
                break
            out.append((kind, self.buf[_HEADER.size : _HEADER.size + size]))
            self.buf = self.buf[_HEADER.size + size :]
        return out


def read_line(sock: socket.socket, limit: int = 1 << 16) -> bytes:
    """One request line; nothing after it is consumed (what follows belongs to whoever the
    connection is handed to). Peeks, then takes exactly the line: not a recv(2) per byte."""
    import socket

    out = bytearray()
    while len(out) < limit:
        data = sock.recv(limit, socket.MSG_PEEK)
        if not data:
            return bytes(out)
        end = data.find(b"\n")
        if end < 0:
            out += sock.recv(len(data))  # no newline yet: all of it is the line's
            continue
        out += sock.recv(end + 1)[:-1]
        return bytes(out)
    raise ValueError("request line too long")
