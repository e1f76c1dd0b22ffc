"""Container logs in Docker's json-file format: one JSON object per line of output.

    {"log":"hello\\n","stream":"stdout","attrs":{"app":"web"},"time":"2024-01-02T03:04:05.1234Z"}

The monitor appends (a line is written whole, with one write, so readers never see half of
one) the bytes Docker's writer makes: the fields in that order, "attrs" only when --log-opt
labels/labels-regex/env/env-regex/tag select something, the time as Go's RFC3339Nano (trailing
zeros trimmed), strings with Go's escapes (<, >, & as \\u003c..., invalid UTF-8 as \\ufffd).
With max-size the file rotates as Docker's does: before a line is written to a file that has
reached max-size, <id>-json.log.N becomes .N+1 (the oldest beyond max-file - 1 is removed), the
file becomes .1 and a new one starts; with compress=true a forked child gzips .1 (the last
entry's time in the gzip header, as Docker writes it). `logs` reads the files oldest first
(--tail, --since, --until, -t, --details), and -f follows the file while the container runs,
across rotations.
"""

from __future__ import annotations

import os
import time
from _json import encode_basestring  # what json.dumps(ensure_ascii=False) calls, without json's imports

from ketch import jsonio
from ketch.clock import parse_rfc3339
from ketch.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import BinaryIO

    from ketch.engine.containers import ContainerRecord

MAX_LINE = 16 * 1024  # Docker splits longer lines into 16 KiB pieces


# --- Docker's bytes: strings, attrs, times --------------------------------------------------------


def _escapes(short: str) -> dict[int, str]:
    """A str.translate table for the inside of a Go JSON string: the control characters in
    `short` get one-letter escapes, the others \\u00XX; ", \\, <, >, &, U+2028 and U+2029 are
    escaped as Go escapes them; undecodable bytes (surrogateescape) become \\ufffd."""
    letters = {"\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}
    table = {c: f"\\u{c:04x}" for c in (*range(0x20), 0x26, 0x3C, 0x3E, 0x2028, 0x2029)}
    table.update({ord(c): "\\" + letters[c] for c in short})
    table.update({ord('"'): '\\"', ord("\\"): "\\\\"})
    table.update(dict.fromkeys(range(0xDC80, 0xDD00), "\\ufffd"))
    return table


_LOG_ESCAPES = _escapes("\n\r")  # the log field (moby's jsonlogbytes.go: only these two are short)
_GO_ESCAPES = _escapes("\b\f\n\r\t")  # encoding/json (Go 1.22+), for attrs
_SLOW = ("\t", "\b", "\f", "\u2028", "\u2029")  # where encode_basestring differs from Docker's writer
_HTML = (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"))


def log_string(data: bytes) -> str:
    """`data` as Docker's log writer quotes it (the common line takes _json's C encoder)."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return '"' + data.decode("utf-8", "surrogateescape").translate(_LOG_ESCAPES) + '"'
    for ch in _SLOW:
        if ch in text:
            return '"' + text.translate(_LOG_ESCAPES) + '"'
    out = encode_basestring(text)
    for ch, escape in _HTML:
        if ch in out:
            out = out.replace(ch, escape)
    return out


def attrs_json(attrs: Mapping[str, str]) -> str:
    """Go's json.Marshal of a map[string]string: keys sorted, no spaces."""
    body = ",".join(
        f'"{k.translate(_GO_ESCAPES)}":"{v.translate(_GO_ESCAPES)}"' for k, v in sorted(attrs.items())
    )
    return "{" + body + "}"


def log_time(ns: int | None = None) -> str:
    """Go's RFC3339Nano in UTC, as the json-file driver writes it: "...:05.1234Z", "...:05Z"."""
    seconds, nanos = divmod(time.time_ns() if ns is None else ns, 1_000_000_000)
    fraction = f"{nanos:09d}".rstrip("0")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + (f".{fraction}Z" if fraction else "Z")


def fixed_time(text: str) -> str:
    """A log time as `logs -t` prints it (RFC3339NanoFixed: always nine digits)."""
    if not text.endswith("Z"):
        return text
    whole, _, fraction = text[:-1].partition(".")
    return f"{whole}.{fraction[:9]:0<9}Z"


_QUERY_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def _query_escape(text: str) -> str:
    """Go's url.QueryEscape: unreserved bytes kept, a space as "+", any other byte as %XX."""
    return "".join(
        chr(b) if b in _QUERY_SAFE else "+" if b == 0x20 else f"%{b:02X}"
        for b in text.encode("utf-8", "surrogatepass")
    )


def details(attrs: Mapping[str, str]) -> str:
    """What `logs --details` prints before a line (then a space, even when there are none):
    the attrs sorted by key as k=v, both query-escaped, joined by commas."""
    return ",".join(f"{_query_escape(k)}={_query_escape(v)}" for k, v in sorted(attrs.items()))


# --- which attrs: --log-opt labels, labels-regex, env, env-regex, tag --------------------------------

TAG_FIELDS = (
    "ID", "FullID", "Name", "ImageID", "ImageFullID", "ImageName", "DaemonName", "Command", "Hostname",
    "ContainerID", "ContainerName", "ContainerEntrypoint", "ContainerImageID", "ContainerImageName",
    "LogPath",
)  # fmt: skip


def render_tag(template: str, fields: Mapping[str, str]) -> str:
    """--log-opt tag: Docker's Go template over the container's logger.Info; ketch renders the
    {{.Field}} actions of TAG_FIELDS (missing ones as "") and refuses any other action."""
    out, rest = [], template
    while "{{" in rest:
        text, _, rest = rest.partition("{{")
        action, found, rest = rest.partition("}}")
        if not found:
            raise InvalidArgument("template: log-tag:1: unclosed action")
        out.append(text)
        name = action.strip()
        if not name.startswith(".") or not name[1:].isidentifier():
            raise InvalidArgument(
                f"template: log-tag: ketch renders only {{{{.Field}}}} actions, not {{{{{action}}}}}"
            )
        if name[1:] not in TAG_FIELDS:
            raise InvalidArgument(
                f'template: log-tag:1: executing "log-tag" at <{name}>: '
                f"can't evaluate field {name[1:]} in type *logger.Info"
            )
        out.append(fields.get(name[1:], ""))
    return "".join(out) + rest


def tag_fields(record: ContainerRecord, path: str) -> dict[str, str]:
    """The values Docker's logger.Info gives a tag template (DaemonName is "ketch")."""
    image = record.image
    image_name = str(record.config.get("Image") or record.image_ref)
    return {
        "ID": record.id[:12], "FullID": record.id, "Name": record.name, "ContainerID": record.id,
        "ContainerName": "/" + record.name, "ImageID": image.rpartition(":")[2][:12], "ImageFullID": image,
        "ContainerImageID": image, "ImageName": image_name, "ContainerImageName": image_name,
        "DaemonName": "ketch", "Command": " ".join([record.path, *record.args]),
        "ContainerEntrypoint": record.path, "Hostname": os.uname().nodename, "LogPath": path,
    }  # fmt: skip


def extra_attributes(
    config: Mapping[str, str], labels: Mapping[str, str], env: Mapping[str, str],
    fields: Mapping[str, str] | None = None,
) -> dict[str, str]:  # fmt: skip
    """Docker's Info.ExtraAttributes: the labels named by `labels` or matched by `labels-regex`,
    then (env winning) the variables named by `env` or matched by `env-regex`; then "tag"."""
    extra: dict[str, str] = {}
    for key in _names(config.get("labels", "")):
        if key in labels:
            extra[key] = labels[key]
    if config.get("labels-regex"):
        match = _matcher(config["labels-regex"])
        extra.update({k: v for k, v in labels.items() if match(k)})
    if env:
        for key in _names(config.get("env", "")):
            if key in env:
                extra[key] = env[key]
        if config.get("env-regex"):
            match = _matcher(config["env-regex"])
            extra.update({k: v for k, v in env.items() if match(k)})
    tag = render_tag(config["tag"], fields or {}) if config.get("tag") else ""
    if tag:
        extra["tag"] = tag
    return extra


def _names(text: str) -> list[str]:
    return text.split(",") if text else []


def _matcher(pattern: str) -> Callable[[str], object]:
    import re  # only with the -regex options (the supervisor's json has imported it for monitors)

    return re.compile(pattern).search  # Go's MatchString: anywhere in the name


def log_config_of(record: ContainerRecord) -> tuple[str, dict[str, str]]:
    """The container's log driver and options (json-file for a container created before LogConfig)."""
    doc = record.host_config.get("LogConfig") or {}
    return str(doc.get("Type") or "json-file"), dict(doc.get("Config") or {})


def open_writer(record: ContainerRecord, path: str) -> LogWriter | NullWriter:
    """The monitor's log for `record`, as its HostConfig.LogConfig asks."""
    from ketch.engine.options import json_file_settings

    kind, config = log_config_of(record)
    if kind == "none":
        return NullWriter()
    if not config:  # no --log-opt (most containers): nothing to parse or render
        return LogWriter(path)
    env = {}
    for item in record.config.get("Env") or ():
        key, eq, value = item.partition("=")
        if eq:
            env[key] = value
    attrs = extra_attributes(config, record.config.get("Labels") or {}, env, tag_fields(record, path))
    settings = json_file_settings(config)
    return LogWriter(path, settings.max_size, settings.max_file, settings.compress, attrs)


# --- writing ----------------------------------------------------------------------------------------


class NullWriter:
    """--log-driver none: output goes to attached clients only."""

    def write(self, stream: str, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class LogWriter:
    """Splits a stream into lines and appends each as a json-file record; rotates at `max_size`
    bytes (-1: never), keeping `max_file` - 1 old files, gzipped with `compress`."""

    def __init__(
        self, path: str, max_size: int = -1, max_file: int = 1, compress: bool = False,
        attrs: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.path, self.max_size, self.max_file, self.compress = path, max_size, max_file, compress
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self.fd).st_size
        self.extra = f',"attrs":{attrs_json(attrs)}' if attrs else ""  # Docker omits empty attrs
        self.partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self.last_time = ""
        self.compressor = -1  # a pidfd: the child gzipping the last rotated file

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
        when = log_time()
        data = f'{{"log":{log_string(line)},"stream":"{stream}"{self.extra},"time":"{when}"}}\n'.encode()
        if 0 <= self.max_size <= self.size:
            self._rotate()
        os.write(self.fd, data)
        self.size += len(data)
        self.last_time = when

    def _rotate(self) -> None:
        """Docker's rotation (loggerutils/logfile.go); a failed rename loses old lines, never the log."""
        self._wait_compressor()
        os.close(self.fd)
        path, gz = self.path, ".gz" if self.compress else ""
        try:
            if self.max_file < 2:
                os.unlink(path)
            else:
                _forget(f"{path}.{self.max_file - 1}{gz}")
                for n in range(self.max_file - 1, 1, -1):
                    _move(f"{path}.{n - 1}{gz}", f"{path}.{n}{gz}")
                os.rename(path, f"{path}.1")
        except OSError:
            pass
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        self.fd = os.open(path, flags, 0o600)
        self.size = 0
        if self.compress and self.max_file >= 2:
            self._compress(f"{path}.1", self.last_time)

    def _compress(self, source: str, last_time: str) -> None:
        """gzip `source` in a child (as Docker does in a goroutine): the container's output keeps
        flowing; the next rotation waits for it."""
        try:
            pid = os.fork()
        except OSError:
            return  # no process to spare: .1 stays plain, and readers take it as it is
        if pid == 0:
            code = 1
            try:
                os.closerange(3, 1 << 20)  # the monitor's sockets and pipes: their peers must see them close
                gzip_file(source, last_time)
                code = 0
            finally:
                os._exit(code)
        self.compressor = os.pidfd_open(pid)

    def _wait_compressor(self) -> None:
        if self.compressor < 0:
            return
        try:
            os.waitid(os.P_PIDFD, self.compressor, os.WEXITED)
        except ChildProcessError:
            pass  # the monitor's waitpid(-1) reaped it
        os.close(self.compressor)
        self.compressor = -1

    def close(self) -> None:
        self.flush()
        os.close(self.fd)
        self._wait_compressor()


def _forget(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _move(source: str, target: str) -> None:
    try:
        os.rename(source, target)
    except FileNotFoundError:
        pass


def gzip_file(source: str, last_time: str) -> None:
    """`source` into `source`.gz as Docker's compressFile writes it: one gzip member whose header
    carries {"lastTime": the last entry's time} in its extra field (so --since can skip the
    file); the source is removed once the .gz is complete."""
    import zlib

    extra = ('{"lastTime":"' + (last_time or "0001-01-01T00:00:00Z") + '"}').encode()
    header = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff" + len(extra).to_bytes(2, "little") + extra
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    crc = size = 0
    temporary = f"{source}.gz.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with open(source, "rb") as src, open(fd, "wb") as out:
            out.write(header)
            while chunk := src.read(1 << 20):
                crc, size = zlib.crc32(chunk, crc), size + len(chunk)
                out.write(packer.compress(chunk))
            out.write(packer.flush())
            out.write(crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little"))
    except BaseException:
        _forget(temporary)  # the plain file stays: readers still have it
        raise
    os.rename(temporary, f"{source}.gz")
    os.unlink(source)


# --- reading ----------------------------------------------------------------------------------------


class Entry:
    __slots__ = ("attrs", "log", "stream", "time")

    def __init__(self, log: str, stream: str, time: str, attrs: dict[str, str] | None = None) -> None:
        self.log, self.stream, self.time, self.attrs = log, stream, time, attrs or {}


def _parse(line: bytes) -> Entry | None:
    try:
        doc = jsonio.loads(line)
        return Entry(doc.get("log", ""), doc["stream"], doc["time"], doc.get("attrs"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # a line cut by a crash mid-write: skip it


def _parse_all(lines: list[bytes]) -> list[Entry]:
    return [e for e in map(_parse, filter(None, lines)) if e is not None]


def rotated_numbers(path: str) -> list[int]:
    """The N of the log's rotated files (<path>.N, <path>.N.gz), newest (1) first."""
    directory, base = os.path.split(path)
    try:
        names = os.listdir(directory or ".")
    except FileNotFoundError:
        return []
    numbers = set()
    for name in names:
        number = name[len(base) + 1 :].removesuffix(".gz") if name.startswith(base + ".") else ""
        if number.isascii() and number.isdigit():
            numbers.add(int(number))
    return sorted(numbers)


def _open(path: str) -> BinaryIO | None:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None


def _inode(f: BinaryIO) -> tuple[int, int]:
    st = os.fstat(f.fileno())
    return st.st_dev, st.st_ino


def _unpack(data: bytes, since: float) -> bytes:
    """A rotated .gz file's content; nothing when its header says it ends before `since`."""
    import zlib

    if since and len(data) > 12 and data[3] & 4:  # FEXTRA: Docker's {"lastTime": ...}
        extra = data[12 : 12 + int.from_bytes(data[10:12], "little")]
        try:
            if parse_rfc3339(jsonio.loads(extra)["lastTime"]) < since:
                return b""
        except (ValueError, KeyError, TypeError):
            pass
    try:
        return zlib.decompress(data, 31)
    except zlib.error:
        return b""  # cut short by a crash: its uncompressed copy was kept, or it is lost


class LogReader:
    """A log's files, opened at once: the current file first, then <path>.1, .2 ... (a .gz when the
    plain one is gone); a file seen twice (a rotation meanwhile) is read once. `entries` reads them
    oldest first, then `follow` goes on from where the current file ended."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.current = _open(path)
        self.buf = b""  # a line of the current file not yet complete
        self.old: list[tuple[BinaryIO, bool]] = []  # (file, gzipped), oldest first
        self.queue: list[BinaryIO] = []  # when following: files newer than the current one
        seen = {_inode(self.current)} if self.current is not None else set()
        for number in rotated_numbers(path):
            gz, f = False, _open(f"{path}.{number}")
            if f is None:
                gz, f = True, _open(f"{path}.{number}.gz")
            if f is None:
                continue
            if _inode(f) in seen:
                f.close()
                continue
            seen.add(_inode(f))
            self.old.insert(0, (f, gz))

    def entries(self, tail: int = -1, since: float = 0.0, until: float = 0.0) -> list[Entry]:
        """The entries (the last `tail` when >= 0), between `since` and `until` (0 = open)."""
        out: list[Entry] = []
        for f, gz in self.old:
            data = _unpack(f.read(), since) if gz else f.read()
            out += _parse_all(data.split(b"\n"))
        if self.current is not None:
            *lines, self.buf = self.current.read().split(b"\n")
            out += _parse_all(lines)
        if since or until:
            out = [e for e in out if (not since or parse_rfc3339(e.time) >= since)
                   and (not until or parse_rfc3339(e.time) <= until)]  # fmt: skip
        if tail < 0:
            return out
        return out[len(out) - tail :] if tail else []

    def follow(
        self, running: Callable[[], bool], since: float = 0.0, until: float = 0.0, poll: float = 0.1
    ) -> Iterator[Entry]:
        """Entries written after `entries` read, until the container stops (then whatever is left).
        At the end of the file, a different file at the path means it was rotated: the rest of the
        old one is read, then the files that came after it, oldest first."""
        stopping = False
        while True:
            if self.current is None:
                self.current = _open(self.path)
                if self.current is None:
                    if not running():
                        return
                    time.sleep(poll)
                    continue
            chunk = self.current.read()
            if chunk:
                *lines, self.buf = (self.buf + chunk).split(b"\n")
                for entry in _parse_all(lines):
                    when = parse_rfc3339(entry.time) if since or until else 0.0
                    if until and when > until:
                        return
                    if not since or when >= since:
                        yield entry
                continue
            if self.queue:  # the old file is read to its end: on to the next one
                self.current.close()
                self.current, self.buf = self.queue.pop(0), b""
                continue
            self.queue = self._newer()
            if self.queue:
                continue  # read the old file once more: lines may have come in before it was rotated
            if not running():
                if stopping:
                    return
                stopping = True  # one more pass: the last lines, or a last rotation
                continue
            stopping = False
            time.sleep(poll)

    def _newer(self) -> list[BinaryIO]:
        """When the current file is no longer at the path: the plain files written after it."""
        assert self.current is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []  # max-file=1 mid-rotation: the new file comes next
        mine = _inode(self.current)
        if (st.st_dev, st.st_ino) == mine:
            return []
        names = [f"{self.path}.{n}" for n in reversed(rotated_numbers(self.path))] + [self.path]
        files = [f for f in map(_open, names) if f is not None]
        inodes = [_inode(f) for f in files]
        after = inodes.index(mine) + 1 if mine in inodes else 0  # gone: every file left is newer
        for f in files[:after]:
            f.close()
        return files[after:]

    def close(self) -> None:
        for f in [*(f for f, _ in self.old), *self.queue, *([self.current] if self.current else [])]:
            f.close()


def read(path: str, tail: int = -1, since: float = 0.0, until: float = 0.0) -> list[Entry]:
    """The log's entries across its rotated files (the last `tail` when >= 0), between `since`
    and `until` (0 = open)."""
    reader = LogReader(path)
    try:
        return reader.entries(tail, since, until)
    finally:
        reader.close()
