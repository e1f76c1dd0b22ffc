"""Applying one OCI image layer (an uncompressed tar stream) safely beneath a directory.

Every member is created relative to an fd of its parent directory, and parents are resolved from
the root fd one component at a time with O_NOFOLLOW, so no name in the layer (absolute, "..",
a symlink planted by this or a lower layer) can make the unpacker touch anything outside `root`.
The tar format is parsed here (ustar, GNU long names, PAX records incl. SCHILY.xattr) rather than
with `tarfile`, to stream file data straight from one read buffer into the new files.

Whiteouts (OCI image spec, layer.md) are either converted to overlayfs' own form (a layer that
becomes an overlay lowerdir) or applied to a merged tree (vfs mode).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

from ketch.errors import CorruptContent, Unsupported
from ketch.record import Record

_CHUNK = 1 << 20  # read and copy buffer
_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_MAX_META = 1 << 20  # largest PAX or GNU long-name record, as Go's archive/tar allows
_HOLD = 64  # directory fds kept open along one chain; deeper levels are walked per lookup
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "leave unchanged" to chown
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_READ_DIR = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_WHITEOUT = b".wh."
_OPAQUE = b".wh..wh..opq"
_AUFS_META = b".wh..wh."  # AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): skipped, as Docker does
_XATTR = b"SCHILY.xattr."
_OVERLAY_XATTR = b"trusted.overlay."
_IGNORED_XATTR_ERRORS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP)
_META_TYPES = (b"x", b"g", b"L", b"K")
# tar type flag -> the type applied: "0" file, "1" hardlink, "2" symlink, "3"/"4" char/block, "5" dir, "6" fifo
_TYPES = {b"0": b"0", b"\0": b"0", b"7": b"0", b"1": b"1", b"2": b"2", b"3": b"3", b"4": b"4", b"5": b"5",
          b"6": b"6"}  # fmt: skip
_NODE_KIND = {b"3": stat.S_IFCHR, b"4": stat.S_IFBLK, b"6": stat.S_IFIFO}


class Limits(Record):
    max_bytes: int = 64 << 30  # total regular-file bytes the layer may write
    max_entries: int = 2_000_000  # tar members


class LayerStats(Record):
    files: int  # members applied
    size: int  # bytes of regular-file data written


_DEFAULT_LIMITS = Limits()


def apply_layer(
    stream: BinaryIO,
    root: str,
    *,
    overlay: bool,
    limits: Limits = _DEFAULT_LIMITS,
    ids: Callable[[int, int], tuple[int, int]] | None = None,
) -> LayerStats:
    """Unpack the uncompressed tar `stream` into directory `root`, then read `stream` to its end.
    `ids` maps each member's (uid, gid) to the owner it gets (a user namespace's host ids).

    overlay=True: `root` is an empty directory that becomes one overlayfs lowerdir; whiteouts are
    converted (`.wh.foo` -> 0/0 char device foo, `.wh..wh..opq` -> trusted.overlay.opaque=y).
    overlay=False: `root` holds the merged lower layers; whiteouts delete what lower layers made.
    Hostile or broken members raise CorruptContent; the caller removes `root` after any error.
    """
    source = _Input(stream)
    applier = _Applier(root, source, overlay, limits)
    applier.ids = ids
    try:
        for member in _members(source):
            applier.apply(member)
        applier.finish()
    finally:
        applier.close()
    source.drain()
    return LayerStats(files=applier.files, size=applier.size)


# --- reading the tar stream --------------------------------------------------------------------


class _Input:
    """A read buffer over the stream: headers come from memory, file data goes straight to fds."""

    __slots__ = ("base", "buf", "pos", "read")

    def __init__(self, stream: BinaryIO) -> None:
        self.read = stream.read
        self.buf = b""
        self.pos = 0
        self.base = 0  # stream offset of buf[0]

    def tell(self) -> int:
        return self.base + self.pos

    def take(self, n: int) -> bytes:
        """The next n bytes (fewer only at the end of the stream)."""
        pos, end = self.pos, self.pos + n
        if end <= len(self.buf):
            self.pos = end
            return self.buf[pos:end]
        parts, have = [self.buf[pos:]], len(self.buf) - pos
        while have < n:
            more = self.read(max(_CHUNK, n - have))
            if not more:
                break
            parts.append(more)
            have += len(more)
        self.base += pos
        self.buf = b"".join(parts)
        self.pos = min(n, have)
        return self.buf[:n]

    def _refill(self) -> int:
        self.base += len(self.buf)
        self.buf, self.pos = self.read(_CHUNK), 0
        return len(self.buf)

    def copy_to(self, fd: int | None, n: int) -> int:
        """Write the next n bytes to fd (None: discard them); returns how many the stream lacked."""
        while n:
            avail = len(self.buf) - self.pos
            if not avail and not (avail := self._refill()):
                return n
            step = min(avail, n)
            if fd is not None:
                _write_all(fd, memoryview(self.buf)[self.pos : self.pos + step])
            self.pos += step
            n -= step
        return 0

    def drain(self) -> None:
        """Read to the end: the caller hashes every byte, including padding after the end marker."""
        while self._refill():
            pass


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


class _Member:
    """One tar member with its extended headers merged in."""

    __slots__ = ("atime", "dev", "gid", "link", "mode", "mtime", "name", "size", "type", "uid", "xattrs")

    name: bytes
    type: bytes
    size: int
    mode: int
    uid: int
    gid: int
    mtime: int  # ns
    atime: int  # ns
    link: bytes
    dev: int
    xattrs: list[tuple[bytes, bytes]]


def _members(source: _Input) -> Iterator[_Member]:
    """The members in stream order; resuming the iterator skips whatever data the consumer left."""
    global_pax: dict[bytes, bytes] = {}
    while (member := _next_member(source, global_pax)) is not None:
        end = source.tell() + ((member.size + _BLOCK - 1) & -_BLOCK)
        yield member
        if source.copy_to(None, end - source.tell()):
            raise _truncated(member.name)


def _next_member(source: _Input, global_pax: dict[bytes, bytes]) -> _Member | None:
    """The next member, None at the end marker (or a clean end of stream, as Go and tarfile accept)."""
    pax: dict[bytes, bytes] = {}
    longs: dict[bytes, bytes] = {}
    meta = 0  # extended-header bytes before this member: bounded, so records cannot pile up
    while True:
        header = source.take(_BLOCK)
        if header == _ZERO_BLOCK or (not header and not pax and not longs):
            return None
        if len(header) < _BLOCK:
            raise CorruptContent("layer ends inside a tar header")
        kind = header[156:157]
        try:
            _check_sum(header)
            if kind not in _META_TYPES:
                return _fill_member(header, kind, {**global_pax, **pax} if global_pax else pax, longs)
            meta += _read_meta(source, header, kind, global_pax if kind == b"g" else pax, longs)
        except ValueError:
            name = _show(header[:100].split(b"\0", 1)[0])
            raise CorruptContent(f"layer member {name} has a broken tar header") from None
        if meta > _MAX_META or (kind == b"g" and sum(map(len, global_pax.values())) > _MAX_META):
            raise CorruptContent(f"layer has more than {_MAX_META} bytes of extended tar headers")


def _read_meta(
    source: _Input, header: bytes, kind: bytes, pax: dict[bytes, bytes], longs: dict[bytes, bytes]
) -> int:
    """Fold a PAX ("x", "g") or GNU long-name ("L", "K") header into the next member's fields;
    returns its size."""
    size = _header_int(header, 124, 136)
    if not 0 <= size <= _MAX_META:
        raise CorruptContent(f"layer has an extended tar header of {size} bytes (limit {_MAX_META})")
    data = source.take((size + _BLOCK - 1) & -_BLOCK)
    if len(data) < size:
        raise CorruptContent("layer ends inside an extended tar header")
    if kind in (b"L", b"K"):
        longs[kind] = data[:size].split(b"\0", 1)[0]
        return size
    try:
        pax.update(_pax_records(data[:size]))
    except ValueError:
        raise CorruptContent("layer has a malformed PAX extended header") from None
    return size


def _pax_records(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """'<length> <key>=<value>\\n' records; values may hold any byte, so lengths are trusted, not newlines."""
    pos = 0
    while pos < len(data) and data[pos]:
        space = data.index(b" ", pos)
        end = pos + int(data[pos:space])
        record = data[space + 1 : end]
        if end <= space or end > len(data) or not record.endswith(b"\n"):
            raise ValueError("bad record length")
        key, eq, value = record[:-1].partition(b"=")
        if not eq:
            raise ValueError("record without '='")
        yield key, value
        pos = end


def _check_sum(header: bytes) -> None:
    stored = _header_int(header, 148, 156)
    unsigned = _byte_sum(header) - sum(header[148:156]) + 8 * 0x20  # the field counts as spaces
    # some old tars summed signed chars: every byte >= 0x80 then counts 256 less
    if stored != unsigned and stored != unsigned - 256 * sum(b >= 0x80 for b in header):
        raise ValueError("checksum mismatch")


def _byte_sum(block: bytes) -> int:
    """sum(block) for a 512-byte block, 5x faster: Adler-32's low half is 1 + the byte sum mod 65521,
    which is exact for 256 bytes (at most 65280)."""
    return (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2


def _fill_member(header: bytes, kind: bytes, pax: dict[bytes, bytes], longs: dict[bytes, bytes]) -> _Member:
    m = _Member()
    m.name = pax.get(b"path") or longs.get(b"L") or _ustar_name(header)
    m.type = _member_type(kind, m.name, pax)
    m.mode = _header_int(header, 100, 108) & 0o7777
    m.uid = _id(pax.get(b"uid"), header, 108)
    m.gid = _id(pax.get(b"gid"), header, 116)
    m.size = _pax_int(pax.get(b"size"), header, 124, 136) if m.type == b"0" else 0  # others carry no data
    mtime = pax.get(b"mtime")
    m.mtime = _pax_ns(mtime) if mtime else _header_int(header, 136, 148) * 1_000_000_000
    atime = pax.get(b"atime")
    m.atime = _pax_ns(atime) if atime else m.mtime
    m.link = pax.get(b"linkpath") or longs.get(b"K") or header[157:257].split(b"\0", 1)[0]
    m.dev = _device(header) if m.type in (b"3", b"4") else 0
    m.xattrs = _xattrs(pax) if pax else []
    if m.size < 0:
        raise ValueError("negative size")
    return m


def _ustar_name(header: bytes) -> bytes:
    name = header[:100].split(b"\0", 1)[0]
    if header[257:263] == b"ustar\x00" and header[345] != 0:  # POSIX only: GNU keeps times there
        return header[345:500].split(b"\0", 1)[0] + b"/" + name
    return name


def _member_type(kind: bytes, name: bytes, pax: dict[bytes, bytes]) -> bytes:
    if kind == b"S" or any(key.startswith(b"GNU.sparse.") for key in pax):
        raise Unsupported(f"layer member {_show(name)} is a sparse file, which ketch does not unpack")
    if kind == b"\0" and name.endswith(b"/"):  # pre-POSIX tars marked directories by the name only
        return b"5"
    if kind not in _TYPES:
        raise CorruptContent(f"layer member {_show(name)} has unsupported tar type {kind!r}")
    return _TYPES[kind]


def _header_int(header: bytes, start: int, end: int) -> int:
    """A numeric field: octal text, or GNU base-256 when the top bit of its first byte is set."""
    field = header[start:end]
    if field[0] & 0x80:
        if field[0] == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        return int.from_bytes(field, "big") & ~(0x80 << (8 * len(field) - 8))
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def _pax_int(value: bytes | None, header: bytes, start: int, end: int) -> int:
    return int(value) if value else _header_int(header, start, end)


def _id(value: bytes | None, header: bytes, start: int) -> int:
    number = _pax_int(value, header, start, start + 8)
    if not 0 <= number <= _MAX_ID:
        raise ValueError("owner out of range")
    return number


def _pax_ns(value: bytes) -> int:
    """A PAX time ("1700000000.123456789", possibly negative) in ns, exactly."""
    negative = value.startswith(b"-")
    seconds, _, fraction = value.lstrip(b"-").partition(b".")
    ns = int(seconds or b"0") * 1_000_000_000 + int(fraction[:9].ljust(9, b"0"))
    return -ns if negative else ns


def _device(header: bytes) -> int:
    major, minor = _header_int(header, 329, 337), _header_int(header, 337, 345)
    if not (0 <= major < 2**32 and 0 <= minor < 2**32):
        raise ValueError("device number out of range")
    return os.makedev(major, minor)


def _xattrs(pax: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    # trusted.overlay.* steers overlayfs (redirects, opaque dirs, metacopy): only ketch sets those
    return [
        (key[len(_XATTR) :], value)
        for key, value in pax.items()
        if key.startswith(_XATTR) and not key.startswith(_XATTR + _OVERLAY_XATTR)
    ]


def _show(name: bytes) -> str:
    """A member name for a one-line message: quoted, escaped, cut short."""
    text = name.decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= 200 else text[:200] + "...")


def _truncated(name: bytes) -> CorruptContent:
    return CorruptContent(f"layer ends inside the data of member {_show(name)}")


# --- resolving paths ---------------------------------------------------------------------------


def _clean(raw: bytes) -> bytes | None:
    """raw relative to the layer root without '.' or empty parts ("" is the root itself); None if
    it is empty, absolute, holds a NUL or has a '..' part (even one that would stay inside)."""
    if not raw or raw[0] == 0x2F or b"\0" in raw:
        return None
    parts = raw.split(b"/")
    if b".." in parts:
        return None
    if b"" in parts or b"." in parts:
        return b"/".join(part for part in parts if part and part != b".")
    return raw


def _is_aufs_meta(parent: bytes, base: bytes) -> bool:
    """AUFS bookkeeping (.wh..wh.plnk/..., .wh..wh.aufs): a part starting .wh..wh., bar an opaque marker."""
    parts = parent.split(b"/") if parent else []
    if base != _OPAQUE:
        parts.append(base)
    return any(part.startswith(_AUFS_META) for part in parts)


def _escapes(name: bytes) -> CorruptContent:
    return CorruptContent(f"layer member {_show(name)} escapes the layer root")


class _Dirs:
    """O_PATH fds of one chain of directories below the root, reused while members stay in it.

    Tar streams list a directory's members together, so most lookups hit the chain's end and
    cost nothing; a move elsewhere keeps the common ancestors and opens only the new components.
    """

    def __init__(self, root_fd: int) -> None:
        self.root = root_fd
        self.names: list[bytes] = []
        self.fds: list[int] = []  # fds[i] is the directory names[: i + 1]
        self.key: bytes | None = b""  # the path `fd` refers to (None while a lookup is half done)
        self.fd = root_fd
        self.deep = -1  # fd of a directory nested deeper than _HOLD, owned here too

    def get(self, parent: bytes, member: bytes, create: bool) -> int:
        """The fd of directory `parent`; missing components are made 0755 if `create` (else
        FileNotFoundError); a component that is a symlink or not a directory is refused."""
        if parent == self.key:
            return self.fd
        self.key = None
        self._close_deep()
        names = parent.split(b"/") if parent else []
        fd = self._keep_common(names)
        for name in names[len(self.fds) : _HOLD]:
            fd = _step(fd, name, member, create)
            self.fds.append(fd)
            self.names.append(name)
        for name in names[_HOLD:]:
            fd = _step(fd, name, member, create)
            self._close_deep()
            self.deep = fd
        self.key, self.fd = parent, fd
        return fd

    def _keep_common(self, names: list[bytes]) -> int:
        """Close the chain below its common ancestor with `names`; that ancestor's fd."""
        keep, held = 0, self.names
        while keep < len(held) and keep < len(names) and names[keep] == held[keep]:
            keep += 1
        for fd in self.fds[keep:]:
            os.close(fd)
        del self.fds[keep:], self.names[keep:]
        return self.fds[-1] if self.fds else self.root

    def _close_deep(self) -> None:
        if self.deep >= 0:
            os.close(self.deep)
            self.deep = -1

    def close(self) -> None:
        self._keep_common([])
        self._close_deep()
        self.key = None


def _step(dir_fd: int, name: bytes, member: bytes, create: bool) -> int:
    """Open one directory component below dir_fd without following a symlink."""
    try:
        return os.open(name, _PATH_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:  # O_NOFOLLOW|O_DIRECTORY: ENOTDIR for files and symlinks alike, ELOOP on some
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        raise _not_a_dir(dir_fd, name, member) from None
    os.mkdir(name, 0o755, dir_fd=dir_fd)
    os.chmod(name, 0o755, dir_fd=dir_fd, follow_symlinks=False)  # undo the umask: Docker makes 0755
    return os.open(name, _PATH_FLAGS, dir_fd=dir_fd)


def _not_a_dir(dir_fd: int, name: bytes, member: bytes) -> CorruptContent:
    mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    what = "a symlink" if stat.S_ISLNK(mode) else "not a directory"
    return CorruptContent(f"layer member {_show(member)} has a parent {_show(name)} that is {what}")


def _is_dir(dir_fd: int, name: bytes) -> bool:
    return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)


def _proc_path(dir_fd: int, name: bytes) -> bytes:
    """A path to `name` in dir_fd for calls without a dir_fd form; safe as dir_fd was resolved safely."""
    return b"/proc/self/fd/%d/%s" % (dir_fd, name)


def _set_xattrs(target: int | bytes, xattrs: list[tuple[bytes, bytes]]) -> None:
    for key, value in xattrs:
        try:
            if isinstance(target, int):
                os.setxattr(target, key, value)
            else:
                os.setxattr(target, key, value, follow_symlinks=False)
        except OSError as exc:
            # as Docker: some filesystems lack xattrs, and user.* is refused on symlinks and devices
            if exc.errno not in _IGNORED_XATTR_ERRORS:
                raise


# --- applying members --------------------------------------------------------------------------


class _Applier:
    """Applies members one by one below `root`; owns every fd it opens until close()."""

    def __init__(self, root: str, source: _Input, overlay: bool, limits: Limits) -> None:
        self.source, self.overlay, self.limits = source, overlay, limits
        self.root_fd = os.open(root, _PATH_FLAGS & ~os.O_NOFOLLOW)  # the caller's path is trusted
        self.dirs = _Dirs(self.root_fd)
        self.entries = self.files = self.size = 0
        self.ids: Callable[[int, int], tuple[int, int]] | None = None
        self.dir_times: dict[bytes, tuple[int, int]] = {}  # set last: children change a dir's mtime
        # vfs: what this layer wrote, which whiteouts must not remove (they hide lower layers only)
        self.written: set[bytes] | None = None if overlay else set()
        self.handlers: dict[bytes, Callable[[_Member, int, bytes, bytes], None]] = {
            b"0": self._file, b"1": self._hardlink, b"2": self._symlink, b"5": self._dir,
            b"3": self._node, b"4": self._node, b"6": self._node,
        }  # fmt: skip

    def close(self) -> None:
        self.dirs.close()
        os.close(self.root_fd)

    def apply(self, m: _Member) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise CorruptContent(
                f"layer member {_show(m.name)}: more than {self.limits.max_entries} members (a tar bomb?)"
            )
        path = _clean(m.name)
        if path is None:
            raise _escapes(m.name)
        parent, _, base = path.rpartition(b"/")
        if _WHITEOUT in path and self._whiteout(m, parent, base):
            return
        if self.ids is not None:
            m.uid, m.gid = self.ids(m.uid, m.gid)
        if not path:
            self._root(m)
        else:
            self.handlers[m.type](m, self.dirs.get(parent, m.name, True), base, path)
            if self.written is not None:
                self.written.add(path)
            self.files += 1

    def finish(self) -> None:
        """Set directory times, children first: reverse byte order puts "a/b" before "a"."""
        for path in sorted(self.dir_times, reverse=True):
            parent, _, base = path.rpartition(b"/")
            try:
                fd = os.open(base or b".", _READ_DIR, dir_fd=self.dirs.get(parent, path, False))
            except (CorruptContent, OSError):
                continue  # replaced or removed later in this layer
            try:
                os.utime(fd, ns=self.dir_times[path])
            finally:
                os.close(fd)

    # -- metadata

    def _fd_meta(self, fd: int, m: _Member) -> None:
        """Owner, xattrs, then mode: chown clears setuid bits and security.capability."""
        os.fchown(fd, m.uid, m.gid)
        if m.xattrs:
            _set_xattrs(fd, m.xattrs)
        os.fchmod(fd, m.mode)

    def _path_meta(self, dir_fd: int, name: bytes, m: _Member, chmod: bool) -> None:
        """The same for members that must not be opened (symlinks, devices, fifos)."""
        os.chown(name, m.uid, m.gid, dir_fd=dir_fd, follow_symlinks=False)
        if m.xattrs:
            _set_xattrs(_proc_path(dir_fd, name), m.xattrs)
        if chmod:
            os.chmod(name, m.mode, dir_fd=dir_fd, follow_symlinks=False)
        os.utime(name, ns=(m.atime, m.mtime), dir_fd=dir_fd, follow_symlinks=False)

    # -- replacing what is there

    def _remove(self, dir_fd: int, name: bytes, path: bytes) -> None:
        """Remove name (a directory with its tree) without following symlinks. Never an ancestor of
        the current chain: the chain ends at this name's parent, so cached fds stay valid."""
        try:
            os.unlink(name, dir_fd=dir_fd)
        except IsADirectoryError:
            shutil.rmtree(os.fsdecode(name), dir_fd=dir_fd)  # str: rmtree joins it with scandir's names
            self.dir_times.pop(path, None)

    def _replace(self, dir_fd: int, name: bytes, path: bytes, make: Callable[[], None]) -> None:
        """make() the new entry; if the name is taken, remove the old one first (a later member wins)."""
        try:
            make()
        except FileExistsError:
            self._remove(dir_fd, name, path)
            make()

    # -- member types

    def _file(self, m: _Member, dir_fd: int, name: bytes, path: bytes) -> None:
        self.size += m.size
        if self.size > self.limits.max_bytes:
            raise CorruptContent(
                f"layer member {_show(m.name)}: layer expands beyond {self.limits.max_bytes} bytes (a tar bomb?)"
            )
        try:
            fd = os.open(name, _NEW_FILE, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            self._remove(dir_fd, name, path)
            fd = os.open(name, _NEW_FILE, 0o600, dir_fd=dir_fd)
        try:
            if self.source.copy_to(fd, m.size):
                raise _truncated(m.name)
            self._fd_meta(fd, m)
            os.utime(fd, ns=(m.atime, m.mtime))
        finally:
            os.close(fd)

    def _dir(self, m: _Member, dir_fd: int, name: bytes, path: bytes) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            if not _is_dir(dir_fd, name):  # an existing directory is kept and gets the new metadata
                self._remove(dir_fd, name, path)
                os.mkdir(name, 0o700, dir_fd=dir_fd)
        self._dir_meta(os.open(name, _READ_DIR, dir_fd=dir_fd), m, path)

    def _root(self, m: _Member) -> None:
        if m.type != b"5":
            raise CorruptContent(f"layer member {_show(m.name)} names the layer root but is not a directory")
        self._dir_meta(os.open(b".", _READ_DIR, dir_fd=self.root_fd), m, b"")
        self.files += 1

    def _dir_meta(self, fd: int, m: _Member, path: bytes) -> None:
        try:
            self._fd_meta(fd, m)
        finally:
            os.close(fd)
        self.dir_times[path] = (m.atime, m.mtime)

    def _symlink(self, m: _Member, dir_fd: int, name: bytes, path: bytes) -> None:
        if not m.link or b"\0" in m.link:
            raise CorruptContent(f"layer member {_show(m.name)} is a symlink without a target")
        # the target is stored verbatim: only the container resolves it, inside its own root
        self._replace(dir_fd, name, path, lambda: os.symlink(m.link, name, dir_fd=dir_fd))
        self._path_meta(dir_fd, name, m, chmod=False)

    def _node(self, m: _Member, dir_fd: int, name: bytes, path: bytes) -> None:
        kind = _NODE_KIND[m.type]
        self._replace(dir_fd, name, path, lambda: os.mknod(name, kind | 0o600, m.dev, dir_fd=dir_fd))
        self._path_meta(dir_fd, name, m, chmod=True)

    def _hardlink(self, m: _Member, dir_fd: int, name: bytes, path: bytes) -> None:
        """A second name for an inode whose metadata came with its first member (as GNU tar does)."""
        target = _clean(m.link)
        if not target:
            raise CorruptContent(
                f"layer member {_show(m.name)} links to {_show(m.link)}, outside the layer root"
            )
        if target == path:
            return  # a link to itself changes nothing
        source_fd = self._link_source(m, target)
        try:
            dir_fd = self.dirs.get(path.rpartition(b"/")[0], m.name, True)
            source = target.rpartition(b"/")[2]
            self._replace(dir_fd, name, path, lambda: os.link(
                source, name, src_dir_fd=source_fd, dst_dir_fd=dir_fd, follow_symlinks=False))  # fmt: skip
        except FileNotFoundError:  # the target went away with the tree this member replaced
            raise self._missing_link(m) from None
        finally:
            os.close(source_fd)

    def _link_source(self, m: _Member, target: bytes) -> int:
        """An fd of the link target's directory (owned by the caller), after checking the target is
        there and not a directory; the chain fd is duplicated as resolving the link's own parent
        may close it."""
        parent, _, base = target.rpartition(b"/")
        try:
            dir_fd = self.dirs.get(parent, m.name, False)
            is_dir = _is_dir(dir_fd, base)
        except FileNotFoundError:
            raise self._missing_link(m) from None
        if is_dir:
            raise CorruptContent(f"layer member {_show(m.name)} is a hardlink to directory {_show(m.link)}")
        return os.open(b".", _PATH_FLAGS, dir_fd=dir_fd)

    def _missing_link(self, m: _Member) -> CorruptContent:
        return CorruptContent(f"layer member {_show(m.name)} links to {_show(m.link)}, which does not exist")

    # -- whiteouts

    def _whiteout(self, m: _Member, parent: bytes, base: bytes) -> bool:
        """Apply a whiteout or skip AUFS metadata: False if the member is neither."""
        if _is_aufs_meta(parent, base):
            return True
        if not base.startswith(_WHITEOUT):
            return False
        self.files += 1
        if base == _OPAQUE:
            self._opaque(m, parent)
            return True
        target = base[len(_WHITEOUT) :]
        if target in (b"", b".", b".."):
            raise CorruptContent(f"layer member {_show(m.name)} is a whiteout of no valid name")
        if self.overlay:
            self._overlay_whiteout(m, parent, target)
        else:
            self._vfs_whiteout(m, parent, target)
        return True

    def _overlay_whiteout(self, m: _Member, parent: bytes, target: bytes) -> None:
        dir_fd = self.dirs.get(parent, m.name, True)
        try:
            os.mknod(target, stat.S_IFCHR, 0, dir_fd=dir_fd)  # overlayfs' whiteout: a 0/0 char device
        except FileExistsError:
            pass  # made by this same layer, which a whiteout does not hide

    def _vfs_whiteout(self, m: _Member, parent: bytes, target: bytes) -> None:
        assert self.written is not None
        path = parent + b"/" + target if parent else target
        if path in self.written:
            return
        try:
            self._remove(self.dirs.get(parent, m.name, False), target, path)
        except FileNotFoundError:
            pass  # nothing to hide

    def _opaque(self, m: _Member, parent: bytes) -> None:
        if self.overlay:
            dir_fd = self.dirs.get(parent, m.name, True)
            os.setxattr(b"/proc/self/fd/%d" % dir_fd, b"trusted.overlay.opaque", b"y")
            return
        try:
            dir_fd = self.dirs.get(parent, m.name, False)
        except FileNotFoundError:
            return
        fd = os.open(b".", _READ_DIR, dir_fd=dir_fd)
        try:
            self._prune(fd, parent, self._kept_below(parent))
        finally:
            os.close(fd)

    def _kept_below(self, parent: bytes) -> set[bytes]:
        """Paths below `parent` that this layer wrote, with their ancestors (which must stay too)."""
        assert self.written is not None
        prefix = parent + b"/" if parent else b""
        kept: set[bytes] = set()
        for path in self.written:
            while path.startswith(prefix) and path not in kept:
                kept.add(path)
                path = path.rpartition(b"/")[0]
        return kept

    def _prune(self, fd: int, path: bytes, kept: set[bytes]) -> None:
        """Remove what lower layers left below directory fd, keeping `kept` paths."""
        with os.scandir(fd) as entries:
            names = [(os.fsencode(e.name), e.is_dir(follow_symlinks=False)) for e in entries]
        for name, is_dir in names:
            child = path + b"/" + name if path else name
            if child not in kept:
                self._remove(fd, name, child)
            elif is_dir:
                sub = os.open(name, _READ_DIR, dir_fd=fd)
                try:
                    self._prune(sub, child, kept)
                finally:
                    os.close(sub)
