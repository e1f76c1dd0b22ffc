"""The client end of an attached container: output frames to our stdout/stderr, our stdin to it."""

from __future__ import annotations

import os
import select

from ketch.engine import stream
from ketch.errors import SetupFailed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Session:
    def __init__(self, started: Any, stdin: bool, tty: bool) -> None:
        self.sock = started.sock
        self.reader: stream.Reader = started.reader
        self.stdin, self.tty = stdin, tty
        self.saved_tty: Any = None

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
            if 0 in ready and not self._forward_stdin(fd):
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

    def _forward_stdin(self, fd: int) -> bool:
        data = os.read(0, 65536)
        if not data:
            stream.send(fd, stream.CLOSE_STDIN)
            return False
        stream.send(fd, stream.STDIN, data)
        return True

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
