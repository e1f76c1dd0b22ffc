"""Container logs in Docker's json-file format: one JSON object per line of output.

    {"log":"hello\\n","stream":"stdout","time":"2024-01-02T03:04:05.123456789Z"}

The monitor appends (a line is written whole, with one write, so readers never see half of
one); `logs` reads with --tail, --since, --until, -t, and -f follows the file while the
container runs.
"""

from __future__ import annotations

import os
import time

from ketch import jsonio
from ketch.clock import parse_rfc3339, rfc3339

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MAX_LINE = 16 * 1024  # Docker splits longer lines into 16 KiB pieces


class LogWriter:
    """Splits a stream into lines and appends each as a JSON record."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def write(self, stream: str, data: bytes) -> None:
        buf = self.partial[stream] + data
        lines = buf.split(b"\n")
        self.partial[stream] = lines.pop()
        for line in lines:
            self._record(stream, line + b"\n")
        while len(self.partial[stream]) >= MAX_LINE:
            self._record(stream, self.partial[stream][:MAX_LINE])
            self.partial[stream] = self.partial[stream][MAX_LINE:]

    def flush(self) -> None:
        """Write out partial lines and make the log durable (the monitor calls this at each exit,
        before it records the exit code, so a host crash cannot keep the code and lose the log)."""
        for stream, rest in self.partial.items():
            if rest:
                self._record(stream, rest)
            self.partial[stream] = b""
        os.fsync(self.fd)

    def _record(self, stream: str, line: bytes) -> None:
        doc = {"log": line.decode("utf-8", "replace"), "stream": stream, "time": rfc3339()}
        os.write(self.fd, (jsonio.dumps(doc).replace(", ", ",").replace(": ", ":") + "\n").encode())

    def close(self) -> None:
        self.flush()
        os.close(self.fd)


class Entry:
    __slots__ = ("log", "stream", "time")

    def __init__(self, log: str, stream: str, time: str) -> None:
        self.log, self.stream, self.time = log, stream, time


def _parse(line: bytes) -> Entry | None:
    try:
        doc = jsonio.loads(line)
        return Entry(doc["log"], doc["stream"], doc["time"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut by a crash mid-write: skip it


def read(path: str, tail: int = -1, since: float = 0.0, until: float = 0.0) -> list[Entry]:
    """The log's entries (the last `tail` when >= 0), between `since` and `until` (0 = open)."""
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    entries = [e for e in map(_parse, lines) if e is not None]
    if since or until:
        entries = [e for e in entries if (not since or parse_rfc3339(e.time) >= since)
                   and (not until or parse_rfc3339(e.time) <= until)]  # fmt: skip
    if tail < 0:
        return entries
    return entries[len(entries) - tail :] if tail else []


def follow(path: str, offset: int, running: Callable[[], bool], poll: float = 0.1) -> Iterator[Entry]:
    """Entries appended after `offset` until the container stops (then whatever is left)."""
    with open(path, "rb") as f:
        f.seek(offset)
        buf = b""
        while True:
            chunk = f.read()
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    entry = _parse(line)
                    if entry is not None:
                        yield entry
                continue
            if not running():
                rest = f.read()
                if not rest:
                    return
                buf += rest
                continue
            time.sleep(poll)
