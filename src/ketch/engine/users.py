"""Resolve `-u user[:group]` against the image's /etc/passwd and /etc/group, never the host's NSS.

The files are opened relative to the rootfs with O_NOFOLLOW on every component: an image whose
/etc/passwd is a symlink (to the host's /etc/passwd, say) is treated as having no passwd file.
Only regular files are read, and at most MAX_BYTES of each. The rules are runc's GetExecUser,
which Docker uses: numeric ids need no entry, names must have one, supplementary groups come
from /etc/group membership when no group was given, HOME falls back to "/".
"""

from __future__ import annotations

import errno
import os
import stat

from ketch.errors import InvalidArgument

MAX_BYTES = 1 << 20
MAX_ID = (1 << 31) - 1

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    ExecUser = tuple[int, int, tuple[int, ...], str]  # uid, gid, additional gids, home
    Entry = list[str]


def resolve_user(rootfs: int | str, spec: str) -> ExecUser:
    """(uid, gid, additional_gids, home) for `spec` ("", "name", "uid", "name:group", "uid:gid")."""
    user_arg, _, rest = spec.partition(":")
    group_arg = rest.split(":", 1)[0]
    passwd = [e for e in _entries(read_file(rootfs, "etc/passwd"), 7) if _numeric(e[2]) and _numeric(e[3])]
    uid, gid, home, name = _find_user(passwd, user_arg)
    if not group_arg and not name:
        return (uid, gid, (), home)
    groups = [e for e in _entries(read_file(rootfs, "etc/group"), 4) if _numeric(e[2])]
    if not group_arg:
        members = tuple(int(g[2]) for g in groups if name in g[3].split(","))
        return (uid, gid, members, home)
    return (uid, _find_group(groups, group_arg), (), home)


def _find_user(passwd: list[Entry], arg: str) -> tuple[int, int, str, str]:
    """(uid, gid, home, matched name); the first matching entry wins, as in runc."""
    number = _as_id(arg)
    if not arg:
        match = _first(passwd, lambda e: int(e[2]) == 0)
    elif number is not None:
        match = _first(passwd, lambda e: int(e[2]) == number)
    else:
        match = _first(passwd, lambda e: e[0] == arg)
    if match is not None:
        return int(match[2]), int(match[3]), match[5] or "/", match[0]
    if arg and number is None:
        raise InvalidArgument(f"unable to find user {arg}: no matching entries in passwd file")
    if number is not None and not 0 <= number <= MAX_ID:
        raise InvalidArgument(f"uids and gids must be in range 0-{MAX_ID}")
    return number or 0, 0, "/", ""


def _find_group(groups: list[Entry], arg: str) -> int:
    number = _as_id(arg)
    match = _first(groups, (lambda e: int(e[2]) == number) if number is not None else (lambda e: e[0] == arg))
    if match is not None:
        return int(match[2])
    if number is None:
        raise InvalidArgument(f"unable to find group {arg}: no matching entries in group file")
    if not 0 <= number <= MAX_ID:
        raise InvalidArgument(f"uids and gids must be in range 0-{MAX_ID}")
    return number


def _first(entries: list[Entry], match: Callable[[Entry], bool]) -> Entry | None:
    return next((e for e in entries if match(e)), None)


def _as_id(text: str) -> int | None:
    """Go's Atoi: an optional sign and decimal digits."""
    body = text[1:] if text[:1] in ("+", "-") else text
    return int(text) if body.isascii() and body.isdigit() else None


def _numeric(text: str) -> bool:
    # runc reads a malformed id as 0 (root); an entry ketch cannot read is skipped instead
    return text.isascii() and text.isdigit()


def _entries(data: bytes, width: int) -> list[Entry]:
    """colon-separated records, padded to `width` fields; blank lines and comments skipped."""
    out = []
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        out.append((fields + [""] * width)[:width])
    return out


def read_file(rootfs: int | str, relpath: str) -> bytes:
    """The first MAX_BYTES of rootfs/relpath, or b"" when it is missing, a symlink or not a regular file.

    Every component is opened with O_NOFOLLOW relative to the previous one, so nothing outside the
    rootfs can be reached. A last line cut by the size limit is dropped.
    """
    root = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if isinstance(rootfs, str) else rootfs
    fds: list[int] = [root] if isinstance(rootfs, str) else []
    try:
        fd = _open_beneath(root, relpath.strip("/").split("/"), fds)
        return b"" if fd is None else _read_regular(fd)
    finally:
        for fd in fds:
            os.close(fd)


def _open_beneath(root: int, parts: list[str], fds: list[int]) -> int | None:
    """The fd of the last component (recorded in `fds` for closing), or None when it cannot be opened."""
    current = root
    for i, part in enumerate(parts):
        if part in ("", ".", ".."):
            return None
        last = i == len(parts) - 1
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_NONBLOCK if last else os.O_DIRECTORY)
        try:
            current = os.open(part, flags, dir_fd=current)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES, errno.ENXIO):
                return None
            raise
        fds.append(current)
    return current


def _read_regular(fd: int) -> bytes:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return b""  # a FIFO or device could block or never end
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BYTES:
        chunk = os.read(fd, MAX_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    data = b"".join(chunks)
    if len(data) > MAX_BYTES:
        data = data[:MAX_BYTES].rpartition(b"\n")[0]
    return data
