"""The client end of an attached container: output frames to our stdout/stderr, our stdin to it."""

from __future__ import annotations

import os
import select

from ketch.engine import stream
from ketch.errors import InvalidArgument, SetupFailed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
_CTRL = "@abcdefghijklmnopqrstuvwxyz[\\]^_"  # ctrl-<c> is the byte of <c>'s place here


def detach_keys(text: str) -> bytes:
    """Docker's --detach-keys: comma-separated single characters or ctrl-<a-z @ [ \\ ] ^ _>;
    "" turns detaching off."""
    out = bytearray()
    for key in text.split(",") if text else []:
        if key.startswith("ctrl-") and len(key) == 6 and key[5] in _CTRL:
            out.append(_CTRL.index(key[5]))
        elif len(key) == 1:
            out += key.encode()
        else:
            raise InvalidArgument(f"Unknown character: '{key}'")
    return bytes(out)


class Escape:
    """Docker's escape proxy: watches typed bytes for the detach sequence (b"" never detaches)."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""  # typed bytes that may be the start of the sequence
        self.detached = False

    def feed(self, data: bytes) -> bytes:
        """The bytes to send on; those that may be the sequence are held back."""
        if not self.keys:
            return data
        out = bytearray()
        for byte in data:
            if byte != self.keys[len(self.held)]:
                out += self.held  # not the sequence after all: what was held goes on
                self.held = b""
                if byte != self.keys[0]:
                    out.append(byte)
                    continue
            self.held += bytes((byte,))
            if self.held == self.keys:
                self.detached = True
                return bytes(out)
        return bytes(out)


class Session:
    def __init__(self, started: Any, stdin: bool, tty: bool, keys: str = DEFAULT_DETACH_KEYS) -> None:
        self.sock = started.sock
        self.reader: stream.Reader = started.reader
        self.stdin, self.tty = stdin, tty
        self.saved_tty: Any = None
        self.escape = Escape(detach_keys(keys) if tty else b"")  # the detach keys work on a terminal only
        self.stdin_open = True

    def run(self) -> int:
        fd = self.sock.fileno()
        try:
            self._raw_terminal()
            for kind, payload in self.reader.backlog:
                code = self._frame(kind, payload)
                if code is not None:
                    return code
            return self._loop(fd)
        finally:
            self._restore_terminal()
            self.sock.close()

    def _loop(self, fd: int) -> int:
        watch = [fd, 0] if self.stdin else [fd]
        while True:
            ready, _, _ = select.select(watch, [], [])
            if 0 in ready:
                self._forward_stdin(fd)
                if self.escape.detached:
                    return 0  # the container goes on without us, as after Docker's ctrl-p ctrl-q
                if not self.stdin_open:
                    watch.remove(0)
            if fd not in ready:
                continue
            data = os.read(fd, 65536)
            if not data:
                raise SetupFailed("lost the connection to the container's monitor")
            for kind, payload in self.reader.feed(data):
                code = self._frame(kind, payload)
                if code is not None:
                    return code

    def _frame(self, kind: int, payload: bytes) -> int | None:
        if kind == stream.STDOUT:
            _write_all(1, payload)
        elif kind == stream.STDERR:
            _write_all(2, payload)
        elif kind == stream.EXIT:
            return int(payload or b"0")
        elif kind == stream.ERROR:
            from ketch.engine.lifecycle import start_error

            raise start_error(payload)
        return None

    def _forward_stdin(self, fd: int) -> None:
        """Our stdin to the container, up to its end or the detach keys."""
        data = os.read(0, 65536)
        if not data:
            stream.send(fd, stream.CLOSE_STDIN)
            self.stdin_open = False
            return
        data = self.escape.feed(data)
        if data:
            stream.send(fd, stream.STDIN, data)

    def _raw_terminal(self) -> None:
        if not (self.tty and os.isatty(0)):
            return
        import termios
        import tty

        self.saved_tty = termios.tcgetattr(0)
        tty.setraw(0)
        rows, cols = os.get_terminal_size(0).lines, os.get_terminal_size(0).columns
        stream.send(self.sock.fileno(), stream.RESIZE, f"{rows} {cols}".encode())

    def _restore_terminal(self) -> None:
        if self.saved_tty is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, self.saved_tty)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
