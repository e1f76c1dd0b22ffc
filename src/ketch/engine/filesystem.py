"""Container filesystems: diff, export, cp and commit, every path resolved inside the container's root.

A container path is never handed to the host's path walk. `resolve` follows it one component at
a time from an fd of the container's root, opening each directory with O_NOFOLLOW relative to its
parent and following symlinks by hand with the root as "/" (absolute targets restart there, ".."
stops there). A symlink planted or swapped in by the container (`/escape -> /`) therefore leads
back into the container, never to the host (CVE-2018-15664). Trees are read through directory
fds too, and written with `ketch.image.layers.apply_layer`, the layer unpacker, which has the
same rules.

A stopped container's snapshot is mounted on a private directory, opened and detached at once:
the mount then lives only as long as the fd (`/proc/self/fd/<fd>`), so neither an error nor a
kill can leave it behind.

A container with a user namespace (userns-remap) shows its files with host ids, in its mount as
on its overlay upper directory: what leaves it (cp, export, a committed layer, diff's owners) is
translated back to the container's ids, and what comes in (cp) to the host's, as Docker's archiver
does with its IdentityMapping.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tarfile
import threading
from contextlib import contextmanager
from typing import NamedTuple, cast

from ketch.errors import Conflict, InvalidArgument, KetchError, NotFound, Unsupported

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any, BinaryIO

    from ketch.engine.containers import ContainerRecord, ContainerStore
    from ketch.engine.context import Context
    from ketch.engine.images import ImageService
    from ketch.image.store import ImageRecord

_PATH_DIR = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_READ_DIR = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
# O_NONBLOCK: a fifo swapped in for a file cannot block the open
_READ_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CHUNK = 1 << 20
_MAX_LINKS = 40  # as the kernel's path walk
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_OVERLAY_XATTR = "trusted.overlay."
_NO_XATTR = (errno.ENOTSUP, errno.ENODATA, errno.EPERM)
# the files a container's /etc gets bind-mounted from its directory (Docker's cp reads those)
_ETC_FILES = {"/etc/hostname": "hostname", "/etc/hosts": "hosts", "/etc/resolv.conf": "resolv.conf"}
# mount points the runtime creates in the rootfs: Docker keeps them in an "init" layer, out of diff and commit
_INIT_DIRS = frozenset({"proc", "sys", "dev", "etc"})
_INIT_FILES = frozenset({"etc/hostname", "etc/hosts", "etc/resolv.conf", ".dockerenv"})
# the container config keys a commit takes from the container (the rest stays the image's)
_COMMITTED = ("User", "Env", "Cmd", "Entrypoint", "WorkingDir", "Labels", "ExposedPorts")


# --- the container's root ---------------------------------------------------------------------------


@contextmanager
def rootfs(ctx: Context, record: ContainerRecord) -> Iterator[str]:
    """The container's merged rootfs as a path (`/proc/self/fd/<fd>`) valid in this process for the
    block: the running container's own mount, or a private mount of its snapshot gone at the end."""
    with _root(ctx, record) as fd:
        yield f"/proc/self/fd/{fd}"


@contextmanager
def _root(ctx: Context, record: ContainerRecord) -> Iterator[int]:
    """An O_PATH fd of the merged rootfs. A stopped container's lock is held while its private mount
    lives, so a start waits for it instead of mounting the same upper directory twice."""
    store = ctx.containers()
    if _remapped(record) is not None and ctx.images().snapshots.driver == "vfs":
        # its tree, read and written directly: idmapped, ketch (host root, unmapped) could not create in it
        fd = os.open(ctx.images().snapshots.upper_dir(record.id), _PATH_DIR)
        try:
            yield fd
        finally:
            os.close(fd)
        return
    fd = _open_live(store, record.id, store.state(record.id).running)
    if fd >= 0:
        try:
            yield fd
        finally:
            os.close(fd)
        return
    with store.lock(record.id):  # state() may take this lock itself: only raw_state() inside
        fd = _open_live(store, record.id, store.raw_state(record.id).running)  # started meanwhile?
        if fd < 0:
            fd = _open_private(ctx, record)
        try:
            yield fd
        finally:
            os.close(fd)


def _open_live(store: ContainerStore, container_id: str, running: bool) -> int:
    """An O_PATH fd of the running container's mounted rootfs, -1 if it is not running or mounted."""
    if not running:
        return -1
    try:
        fd = os.open(store.path(container_id, "rootfs"), _PATH_DIR)
    except OSError:
        return -1
    parent = os.open(store.path(container_id), _PATH_DIR)
    try:
        if _mount_id(fd) != _mount_id(parent):
            return fd
    finally:
        os.close(parent)
    os.close(fd)
    return -1


def _mount_id(fd: int) -> str:
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as f:
        return next((line.split()[1] for line in f if line.startswith("mnt_id:")), "")


def _open_private(ctx: Context, record: ContainerRecord) -> int:
    """Mount the snapshot on a fresh directory, open it and detach it at once: the mount lives as
    long as the returned fd, and the directory is gone before this returns."""
    import tempfile

    from ketch.linux import syscalls

    snapshots = ctx.images().snapshots
    target = tempfile.mkdtemp(prefix=".fs-", dir=ctx.containers().path(record.id))
    try:
        mount_snapshot(snapshots, record, target)
        try:
            return os.open(target, _PATH_DIR)
        finally:
            syscalls.umount(target, syscalls.MNT_DETACH)
    finally:
        os.rmdir(target)


def mount_snapshot(snapshots: Any, record: ContainerRecord, target: str) -> None:
    """As the container mounts it: idmapped with its user namespace's mapping, if it has one."""
    remapped = _remapped(record)
    if remapped is None:
        snapshots.mount(record.id, target)
        return
    from ketch.linux import idmap

    userns = idmap.userns_fd(remapped.uid_map, remapped.gid_map)
    try:
        snapshots.mount(record.id, target, userns)
    finally:
        os.close(userns)


def _remapped(record: ContainerRecord) -> Any:
    """The container's userns.Remap, None without a user namespace."""
    from ketch.engine import userns

    return userns.of(record)


def _host_view(ctx: Context, record: ContainerRecord) -> Any:
    """The container's userns.Remap when its files show host ids (overlay: its mounts and its
    upper directory); None when they show its own ids (no user namespace; vfs, whose copy is
    idmapped whole and read directly here)."""
    remapped = _remapped(record)
    return remapped if remapped is not None and ctx.images().snapshots.driver == "overlay" else None


def _to_container(ctx: Context, record: ContainerRecord) -> Callable[[int, int], tuple[int, int]] | None:
    """Owners read from the container's files as the container sees them."""
    remapped = _host_view(ctx, record)
    return None if remapped is None else remapped.container_ids


def _to_host(ctx: Context, record: ContainerRecord) -> Callable[[int, int], tuple[int, int]] | None:
    """The container's owners as its files store them."""
    remapped = _host_view(ctx, record)
    return None if remapped is None else remapped.host_ids


# --- resolving container paths ----------------------------------------------------------------------


class Entry:
    """What a container path names: an O_PATH fd of its directory (owned) and its name there
    ("." for the root itself); the entry itself may not exist."""

    def __init__(self, parent: int, name: str, path: str) -> None:
        self.parent, self.name, self.path = parent, name, path

    def stat(self) -> os.stat_result | None:
        return _lstat(self.parent, self.name)

    def open_dir(self) -> int:
        """An O_PATH fd of the entry, which must be a directory (a symlink swapped in fails)."""
        return os.open(self.name, _PATH_DIR, dir_fd=self.parent)

    def close(self) -> None:
        if self.parent >= 0:
            os.close(self.parent)
            self.parent = -1

    def __enter__(self) -> Entry:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def resolve(root: int, path: str, follow: bool) -> Entry:
    """`path` resolved as the container sees it, with directory fd `root` as "/": ".." stops at it
    and absolute symlinks restart from it. The last component is followed only with `follow`.
    NotFound if a directory on the way is missing, InvalidArgument if one is not a directory."""
    todo = _parts(path)
    stack: list[tuple[str, int]] = []  # the directories walked into below root, with O_PATH fds
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name == "..":
                if stack:
                    os.close(stack.pop()[1])
                continue
            here = stack[-1][1] if stack else root
            st = _lstat(here, name)
            if st is not None and stat.S_ISLNK(st.st_mode) and (todo or follow):
                links += 1
                if links > _MAX_LINKS:
                    raise InvalidArgument(f"{path}: too many levels of symbolic links")
                target = os.readlink(name, dir_fd=here)
                if target.startswith("/"):
                    while stack:
                        os.close(stack.pop()[1])
                todo.extend(_parts(target))
                continue
            if not todo:
                return Entry(os.dup(here), name, _join_stack(stack, name))
            if st is None:
                raise NotFound(f"{_join_stack(stack, name)}: no such file or directory")
            if not stat.S_ISDIR(st.st_mode):
                raise InvalidArgument(f"{_join_stack(stack, name)}: not a directory")
            stack.append((name, _open_step(here, name, _join_stack(stack, name))))
        if not stack:
            return Entry(os.dup(root), ".", "/")
        name, fd = stack.pop()
        os.close(fd)
        return Entry(os.dup(stack[-1][1] if stack else root), name, _join_stack(stack, name))
    finally:
        for _name, fd in stack:
            os.close(fd)


def kinds(root_path: str, paths: list[str]) -> dict[str, str]:
    """For each container path (resolved inside the rootfs at `root_path`, following symlinks
    inside it): "dir", "file" (anything else) or "" when it does not exist."""
    root = os.open(root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # rootfs() gives /proc/self/fd/N
    out: dict[str, str] = {}
    try:
        for path in paths:
            try:
                with resolve(root, path, True) as entry:
                    st = entry.stat()
            except (NotFound, InvalidArgument):
                st = None
            out[path] = "" if st is None else "dir" if stat.S_ISDIR(st.st_mode) else "file"
    finally:
        os.close(root)
    return out


def remove_empty(ctx: Context, record: ContainerRecord, paths: list[str]) -> None:
    """Remove these container paths where they are empty directories or empty files, deepest
    first (a build's mount points, which did not exist in the image)."""
    with _root(ctx, record) as root:
        for path in sorted(paths, key=lambda p: p.count("/"), reverse=True):
            try:
                with resolve(root, path, False) as entry:
                    st = entry.stat()
                    if st is not None and stat.S_ISDIR(st.st_mode):
                        os.rmdir(entry.name, dir_fd=entry.parent)
                    elif st is not None and stat.S_ISREG(st.st_mode) and st.st_size == 0:
                        os.unlink(entry.name, dir_fd=entry.parent)
            except (OSError, KetchError):
                continue


def _parts(path: str) -> list[str]:
    """The components of `path` in reverse (pop() gives the next), without "" and "."."""
    return [p for p in reversed(path.split("/")) if p and p != "."]


def _join_stack(stack: list[tuple[str, int]], name: str) -> str:
    return "/" + "/".join([*(n for n, _fd in stack), name])


def _open_step(here: int, name: str, shown: str) -> int:
    try:
        return os.open(name, _PATH_DIR, dir_fd=here)
    except OSError as exc:  # replaced since the lstat (by a symlink: ENOTDIR/ELOOP, never followed)
        raise InvalidArgument(f"{shown}: {os.strerror(exc.errno or 0).lower()}") from None


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _open_below(root: int, rel: str) -> int:
    """An O_PATH fd of directory `rel` below `root` (a path found by walking it: no symlinks)."""
    fd = os.open(".", _PATH_DIR, dir_fd=root)
    for part in (p for p in rel.split("/") if p):
        try:
            nxt = os.open(part, _PATH_DIR, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nxt
    return fd


# --- writing tar streams ------------------------------------------------------------------------------


class _Archiver:
    """A PAX tar of entries read through directory fds: numeric owners, xattrs, devices, fifos,
    hardlinks, and symlinks stored as such (never followed)."""

    def __init__(
        self,
        out: Any,
        owner: tuple[int, int] | None = None,
        plain: bool = False,
        ids: Callable[[int, int], tuple[int, int]] | None = None,
    ) -> None:
        self.tar = tarfile.open(fileobj=out, mode="w|", bufsize=_CHUNK, format=tarfile.PAX_FORMAT,  # noqa: SIM115
                                encoding="utf-8", errors="surrogateescape")  # fmt: skip
        self.tar.copybufsize = _CHUNK  # type: ignore[attr-defined]  # file data in 1 MiB reads, not 16 KiB
        self.owner = owner  # (uid, gid) for every entry instead of the real ones
        self.ids = ids  # else the real ones through this (a user namespace's host ids -> its own)
        self.plain = plain  # refuse names the layer unpacker would take for whiteouts
        self.links: dict[tuple[int, int], str] = {}

    def close(self) -> None:
        self.tar.close()

    def tree(self, dir_fd: int, name: str, arcname: str, top: bool = True) -> None:
        """`name` and everything below it; with top=False only what is below (a directory's contents)."""
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if top:
            self.add(dir_fd, name, arcname, st)
        if not stat.S_ISDIR(st.st_mode):
            return
        fd = os.open(name, _READ_DIR, dir_fd=dir_fd)
        stack = [(fd, iter(sorted(os.listdir(fd))), arcname)]
        try:
            while stack:
                fd, names, prefix = stack[-1]
                child = next(names, None)
                if child is None:
                    os.close(stack.pop()[0])
                    continue
                sub = self._child(fd, child, f"{prefix}/{child}" if prefix else child)
                if sub is not None:
                    stack.append(sub)
        finally:
            for fd, _names, _prefix in stack:
                os.close(fd)

    def _child(self, fd: int, name: str, arcname: str) -> tuple[int, Iterator[str], str] | None:
        """Add one entry; a directory's open fd, names and arcname for the walk to go on with."""
        st = _lstat(fd, name)
        if st is None:
            return None  # removed meanwhile (a running container)
        self.add(fd, name, arcname, st)
        if not stat.S_ISDIR(st.st_mode):
            return None
        try:
            sub = os.open(name, _READ_DIR, dir_fd=fd)
        except OSError as exc:  # removed, or replaced by something else: never followed
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                raise
            return None
        return sub, iter(sorted(os.listdir(sub))), arcname

    def add(self, dir_fd: int, name: str, arcname: str, st: os.stat_result) -> None:
        """One entry (a directory without its contents)."""
        if self.plain and any(p.startswith(_WHITEOUT) for p in arcname.split("/")):
            raise Unsupported(
                f"cannot copy {arcname}: names starting with {_WHITEOUT} mark deletions in layers"
            )
        info = self._info(dir_fd, name, arcname, st)
        if info is None:
            return  # a socket: tar has no type for it
        if info.type != tarfile.REGTYPE:
            self.tar.addfile(info)
            return
        if st.st_nlink > 1:
            first = self.links.setdefault((st.st_dev, st.st_ino), arcname)
            if first != arcname:
                info.type, info.linkname = tarfile.LNKTYPE, first
                self.tar.addfile(info)
                return
        self._file(dir_fd, name, info)

    def marker(self, arcname: str) -> None:
        """An empty file: a whiteout or an opaque-directory marker of a layer."""
        info = tarfile.TarInfo(arcname)
        info.mode = 0o644
        self.tar.addfile(info)

    def _info(self, dir_fd: int, name: str, arcname: str, st: os.stat_result) -> tarfile.TarInfo | None:
        info = tarfile.TarInfo(arcname)
        mode = st.st_mode
        info.mode = stat.S_IMODE(mode)
        info.uid, info.gid = self.owner or (
            self.ids(st.st_uid, st.st_gid) if self.ids else (st.st_uid, st.st_gid)
        )
        info.mtime = int(st.st_mtime)  # whole seconds, as Docker's archives
        if stat.S_ISREG(mode):
            info.type = tarfile.REGTYPE
        elif stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dir_fd)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
        else:
            return None
        info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                            for k, v in _xattrs(dir_fd, name).items() if not k.startswith(_OVERLAY_XATTR)}  # fmt: skip
        return info

    def _file(self, dir_fd: int, name: str, info: tarfile.TarInfo) -> None:
        try:
            fd = os.open(name, _READ_FILE, dir_fd=dir_fd)
        except OSError as exc:  # removed or replaced meanwhile
            if exc.errno not in (errno.ENOENT, errno.ELOOP):
                raise
            return
        with os.fdopen(fd, "rb") as f:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode):
                return
            info.size = now.st_size
            self.tar.addfile(info, _Exactly(f, now.st_size))


class _Exactly:
    """`size` bytes of a file that may change while it is read: cut if it grew, zero-padded if it shrank."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= n
        return data + bytes(n - len(data))


def _xattrs(dir_fd: int, name: str) -> dict[str, bytes]:
    """The extended attributes of `name` in `dir_fd` (a symlink's own, never its target's)."""
    path = f"/proc/self/fd/{dir_fd}/{name}"
    try:
        keys = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTR:
            return {}
        raise
    out = {}
    for key in keys:
        try:
            out[key] = os.getxattr(path, key, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in _NO_XATTR:
                raise
    return out


class _Counter:
    """Counts the bytes written through it."""

    def __init__(self, out: Any) -> None:
        self.out, self.size = out, 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        self.out.write(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


class _Hashing(_Counter):
    """Counts and sha256-hashes the bytes written through it."""

    def __init__(self, out: Any) -> None:
        super().__init__(out)
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return super().write(data)

    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def _pipe(produce: Callable[[_Counter], None], consume: Callable[[BinaryIO], object]) -> int:
    """Run produce(writer) in a thread and consume(reader) here, joined by a pipe; the bytes passed.
    A producer's error wins over the truncated stream the consumer then reports."""
    read_fd, write_fd = os.pipe()
    failed: list[BaseException] = []
    counter = _Counter(None)

    def run() -> None:
        try:
            with open(write_fd, "wb", buffering=_CHUNK) as f:
                counter.out = f
                produce(counter)
        except BaseException as exc:  # handed over to the consuming thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="ketch-cp", daemon=True)
    thread.start()
    try:
        with open(read_fd, "rb", buffering=0) as reader:
            consume(cast("BinaryIO", reader))
    except BaseException:
        thread.join()  # the reader is closed: a blocked writer fails with EPIPE and ends
        if failed and not isinstance(failed[0], BrokenPipeError):
            raise failed[0] from None
        raise
    thread.join()
    if failed:
        raise failed[0]
    return counter.size


# --- diff -----------------------------------------------------------------------------------------------


class Change(NamedTuple):
    kind: str  # "A", "C" or "D", as docker diff shows them
    path: str  # relative to the root, without a leading "/"
    opaque: bool = False  # a directory that hides what the image has in it (recreated after a removal)
    implied: bool = False  # a deletion shown by diff but carried by the opaque directory above it


def diff(ctx: Context, record: ContainerRecord) -> list[tuple[str, str]]:
    """Docker's diff: ("A"|"C"|"D", "/path") for what the container added, changed and deleted."""
    return sorted(((c.kind, "/" + c.path) for c in container_changes(ctx, record)), key=lambda kp: kp[1])


def container_changes(ctx: Context, record: ContainerRecord) -> list[Change]:
    """The container's changes to its image, parents before children. Overlay: its upper directory
    read against the image's layers (whiteouts are deletions); vfs: its tree compared with the image's."""
    service = ctx.images()
    snapshots = service.snapshots
    fd = os.open(snapshots.upper_dir(record.id), _READ_DIR)
    try:
        if snapshots.driver == "overlay":
            image = service.get(record.image)
            overlay = _OverlayDiff(_Lowers([snapshots.layer_dir(key) for key in reversed(image.chain)]),
                                   _to_container(ctx, record))  # fmt: skip
            overlay.visit(fd, "")
            return overlay.out
        parent = snapshots.parent(record.id)
        vfs = _VfsDiff()
        vfs.visit(fd, snapshots.layer_dir(parent) if parent else None, "")
        return vfs.out
    except RecursionError:
        raise Unsupported(f"the filesystem of {record.name} is nested too deeply to compare") from None
    finally:
        os.close(fd)


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _placeholder(rel: str, st: os.stat_result, below: os.stat_result | None, inner: bool) -> bool:
    """A mount point the runtime made (Docker's init layer): new, and an empty file or directory."""
    if below is not None or inner:
        return False
    if stat.S_ISDIR(st.st_mode):
        return rel in _INIT_DIRS
    return rel in _INIT_FILES and stat.S_ISREG(st.st_mode) and st.st_size == 0


def _meta_differs(
    st: os.stat_result, old: os.stat_result, ids: Callable[[int, int], tuple[int, int]] | None = None
) -> bool:
    owner = ids(st.st_uid, st.st_gid) if ids else (st.st_uid, st.st_gid)
    return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), *owner) != (
        stat.S_IFMT(old.st_mode), stat.S_IMODE(old.st_mode), old.st_uid, old.st_gid)  # fmt: skip


class _Lowers:
    """The image's layer directories, uppermost first, read with overlayfs' rules: a whiteout
    hides a path, an opaque directory hides the lower layers' contents of it."""

    def __init__(self, dirs: list[str]) -> None:
        self.dirs = dirs

    def lookup(self, rel: str) -> os.stat_result | None:
        """What the image has at `rel`, or None."""
        parts = rel.split("/")
        for layer in self.dirs:
            found, hides = _in_layer(layer, parts)
            if found is not None or hides:
                return found
        return None

    def children(self, rel: str) -> set[str]:
        """The names the image has in directory `rel`."""
        seen: dict[str, bool] = {}  # name -> visible (False: whited out by an upper layer)
        parts = rel.split("/")
        for layer in self.dirs:
            found, hides = _in_layer(layer, parts)
            if found is not None and stat.S_ISDIR(found.st_mode):
                for entry in os.scandir(os.path.join(layer, *parts)):
                    seen.setdefault(entry.name, not _is_whiteout(entry.stat(follow_symlinks=False)))
            if hides:
                break
        return {name for name, visible in seen.items() if visible}


def _in_layer(layer: str, parts: list[str]) -> tuple[os.stat_result | None, bool]:
    """(what one layer has at `parts`, whether it hides the layers below there: a whiteout, a file
    on the way, an opaque directory). Its directories are lstat'ed on the way down: no symlink in
    the layer is followed."""
    path, hidden = layer, False
    for i, part in enumerate(parts):
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None, hidden
        if _is_whiteout(st):
            return None, True
        if i == len(parts) - 1:
            return st, hidden or not stat.S_ISDIR(st.st_mode) or _opaque(path)
        if not stat.S_ISDIR(st.st_mode):
            return None, True
        hidden = hidden or _opaque(path)
    return None, hidden


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


class _OverlayDiff:
    """An overlay upper directory as changes: 0/0 character devices are deletions; anything else is
    a change where the image has the path and an addition where it has not."""

    def __init__(self, lowers: _Lowers, ids: Callable[[int, int], tuple[int, int]] | None = None) -> None:
        self.lowers = lowers
        self.ids = ids  # the upper directory's owners as the image's (a user namespace's)
        self.out: list[Change] = []

    def visit(self, fd: int, prefix: str) -> bool:
        """Record the changes in directory fd; whether there were any."""
        found = False
        for name in sorted(os.listdir(fd)):
            rel = f"{prefix}/{name}" if prefix else name
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if _is_whiteout(st):
                self.out.append(Change("D", rel))
                found = True
            elif stat.S_ISDIR(st.st_mode):
                found = self._dir(fd, name, rel, st) or found
            else:
                below = self.lowers.lookup(rel)
                if not _placeholder(rel, st, below, False):
                    self.out.append(Change("C" if below is not None else "A", rel))
                    found = True
        return found

    def _dir(self, fd: int, name: str, rel: str, st: os.stat_result) -> bool:
        marks = {k: v for k, v in _xattrs(fd, name).items() if k.startswith(_OVERLAY_XATTR)}
        if any(k.endswith((".redirect", ".metacopy")) for k in marks):
            raise Unsupported(
                f"/{rel} was renamed by overlayfs' redirect_dir feature, which ketch does not read"
            )
        opaque = marks.get("trusted.overlay.opaque") == b"y"
        below = self.lowers.lookup(rel)
        mark = len(self.out)
        self.out.append(Change("C" if below is not None else "A", rel, opaque))
        sub = os.open(name, _READ_DIR, dir_fd=fd)
        try:
            inner = self.visit(sub, rel)
            if opaque and below is not None and stat.S_ISDIR(below.st_mode):
                inner = self._hidden(sub, rel) or inner
        finally:
            os.close(sub)
        keep = (
            inner
            or opaque
            or (
                _meta_differs(st, below, self.ids)
                if below is not None
                else not _placeholder(rel, st, below, inner)
            )
        )
        if not keep:
            del self.out[mark]
        return keep

    def _hidden(self, fd: int, rel: str) -> bool:
        """Deletions shown for what an opaque directory hides (the layer carries them as its marker)."""
        gone = sorted(self.lowers.children(rel) - set(os.listdir(fd)))
        self.out.extend(Change("D", f"{rel}/{name}", implied=True) for name in gone)
        return bool(gone)


class _VfsDiff:
    """A vfs snapshot (a full tree) compared with its image's tree, entry by entry."""

    def __init__(self) -> None:
        self.out: list[Change] = []

    def visit(self, fd: int, lower: str | None, prefix: str) -> bool:
        names = set(os.listdir(fd))
        below = set(os.listdir(lower)) if lower is not None else set()
        found = False
        for name in sorted(names | below):
            rel = f"{prefix}/{name}" if prefix else name
            if name not in names:
                self.out.append(Change("D", rel))
                found = True
                continue
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            old = os.lstat(os.path.join(lower, name)) if lower is not None and name in below else None
            if stat.S_ISDIR(st.st_mode):
                found = self._dir(fd, name, rel, st, old, lower) or found
            elif old is None:
                if not _placeholder(rel, st, None, False):
                    self.out.append(Change("A", rel))
                    found = True
            elif not _same(fd, name, st, os.path.join(lower or "", name), old):
                self.out.append(Change("C", rel))
                found = True
        return found

    def _dir(self, fd: int, name: str, rel: str, st: os.stat_result, old: os.stat_result | None,
             lower: str | None) -> bool:  # fmt: skip
        mark = len(self.out)
        self.out.append(Change("C" if old is not None else "A", rel))
        below = (
            os.path.join(lower, name)
            if lower is not None and old is not None and stat.S_ISDIR(old.st_mode)
            else None
        )
        sub = os.open(name, _READ_DIR, dir_fd=fd)
        try:
            inner = self.visit(sub, below, rel)
        finally:
            os.close(sub)
        keep = inner or (_meta_differs(st, old) if old is not None else not _placeholder(rel, st, old, inner))
        if not keep:
            del self.out[mark]
        return keep


def _same(fd: int, name: str, st: os.stat_result, old_path: str, old: os.stat_result) -> bool:
    if _meta_differs(st, old) or st.st_mtime_ns != old.st_mtime_ns:
        return False
    if stat.S_ISLNK(st.st_mode):
        return os.readlink(name, dir_fd=fd) == os.readlink(old_path)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return st.st_rdev == old.st_rdev
    return st.st_size == old.st_size


# --- export ---------------------------------------------------------------------------------------------


def export(ctx: Context, record: ContainerRecord, out: BinaryIO) -> None:
    """Docker's export: a tar of the container's merged rootfs (without what is mounted in it)."""
    with _root(ctx, record) as root:
        archiver = _Archiver(out, ids=_to_container(ctx, record))
        archiver.tree(root, ".", "", top=False)
        archiver.close()


# --- cp -------------------------------------------------------------------------------------------------


def _missing(record: ContainerRecord, path: str) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {record.name}")


def _dir_syntax(path: str) -> bool:
    """A path that names a directory by its form: a trailing "/" or "/."."""
    return path.endswith(("/", "/.")) or path == "."


def _contents(path: str) -> bool:
    """Docker's SRC/. : the contents of the directory, not the directory."""
    return path.endswith("/.") or path == "."


@contextmanager
def _source(
    record: ContainerRecord, root: int, path: str, follow: bool
) -> Iterator[tuple[Entry, os.stat_result]]:
    """The existing entry a cp source names (its last symlink followed with -L or a trailing "/")."""
    try:
        entry = resolve(root, path, follow or _dir_syntax(path))
    except NotFound:
        raise _missing(record, path) from None
    with entry:
        st = entry.stat()
        if st is None:
            raise _missing(record, path)
        if _dir_syntax(path) and not stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"{path}: not a directory")
        yield entry, st


def _base(path: str, entry: Entry) -> str:
    """The name a copy takes: the last part of the path as given (Docker's rebase), else the entry's."""
    last = path.rstrip("/").rpartition("/")[2]
    return last if last not in ("", ".", "..") else entry.name


def _archive_source(ctx: Context, record: ContainerRecord, archiver: _Archiver, entry: Entry,
                    arcname: str, top: bool) -> None:  # fmt: skip
    """The source entry with its tree; /etc/hostname, hosts and resolv.conf come from the files the
    container gets them from (bind mounts), as Docker's cp shows them."""
    host = _ETC_FILES.get(entry.path, "")
    directory = ctx.containers().path(record.id)
    if host and os.path.isfile(os.path.join(directory, host)):
        fd = os.open(directory, _PATH_DIR)
        try:
            archiver.tree(fd, host, arcname, top)
        finally:
            os.close(fd)
        return
    archiver.tree(entry.parent, entry.name, arcname, top)


def copy_out(ctx: Context, record: ContainerRecord, path: str, out: BinaryIO, follow: bool = False) -> int:
    """`cp CONTAINER:PATH -`: a tar of PATH (named by its last part, "." for PATH/.) written to
    `out`; the bytes written."""
    counter = _Counter(out)
    with _root(ctx, record) as root, _source(record, root, path, follow) as (entry, st):
        contents = stat.S_ISDIR(st.st_mode) and _contents(path)
        archiver = _Archiver(counter, ids=_to_container(ctx, record))
        _archive_source(ctx, record, archiver, entry, "." if contents else _base(path, entry), True)
        archiver.close()
    return counter.size


def copy_to_host(ctx: Context, record: ContainerRecord, path: str, dest: str, follow: bool = False) -> int:
    """`cp CONTAINER:PATH DEST`, as Docker: a file to a new or existing file or into a directory; a
    directory to a new directory, or into an existing one (its contents with PATH/.). Files get the
    caller's owner. The bytes copied."""
    from ketch.image.layers import apply_layer

    with _root(ctx, record) as root, _source(record, root, path, follow) as (entry, st):
        is_dir = stat.S_ISDIR(st.st_mode)
        where, arcname, top = _host_target(dest, is_dir, is_dir and _contents(path), _base(path, entry))

        def produce(out: _Counter) -> None:
            archiver = _Archiver(out, owner=(os.getuid(), os.getgid()), plain=True)
            _archive_source(ctx, record, archiver, entry, arcname, top)
            archiver.close()

        return _pipe(produce, lambda stream: apply_layer(stream, where, overlay=False))


def _host_target(dest: str, src_dir: bool, contents: bool, base: str) -> tuple[str, str, bool]:
    """(host directory to unpack in, the name the copy takes there, whether the top entry is included)."""
    try:
        st = os.stat(dest)
    except FileNotFoundError:
        if not src_dir and dest.endswith("/"):
            raise InvalidArgument(f"{dest}: no such directory") from None
        full = os.path.abspath(dest)
        if not os.path.isdir(os.path.dirname(full)):
            raise NotFound(f"{os.path.dirname(full)}: no such file or directory") from None
        return os.path.dirname(full), os.path.basename(full), True
    if stat.S_ISDIR(st.st_mode):
        return (dest, "", False) if contents else (dest, base, True)
    if src_dir:
        raise InvalidArgument(f"cannot copy a directory to the file {dest}")
    if dest.endswith("/"):
        raise InvalidArgument(f"{dest}: not a directory")
    real = os.path.realpath(dest)
    return os.path.dirname(real), os.path.basename(real), True


def copy_in(ctx: Context, record: ContainerRecord, src: str | BinaryIO, dst: str, archive: bool = False,
            follow: bool = False) -> int:  # fmt: skip
    """`cp SRC CONTAINER:DST` with Docker's rules (see copy_to_host), or a tar stream (`cp - ...`)
    unpacked into directory DST. DST is resolved inside the container; its parent must exist. Files
    from the host are owned by root unless `archive` keeps their owners. The bytes copied."""
    if record.host_config.get("ReadonlyRootfs"):
        raise Conflict("container rootfs is marked read-only")
    ids = _to_host(ctx, record)
    with _root(ctx, record) as root:
        if not isinstance(src, str):
            return _tar_in(record, root, src, dst, ids)
        return _host_in(record, root, src, dst, archive, follow, ids)


def _resolve_dst(record: ContainerRecord, root: int, dst: str) -> Entry:
    try:
        return resolve(root, dst, True)
    except NotFound:  # Docker names the directory it would unpack in
        parent = dst.rstrip("/").rpartition("/")[0]
        raise _missing(record, parent or dst) from None


def _tar_in(
    record: ContainerRecord,
    root: int,
    stream: BinaryIO,
    dst: str,
    ids: Callable[[int, int], tuple[int, int]] | None,
) -> int:
    from ketch.image.layers import apply_layer

    with _resolve_dst(record, root, dst) as entry:
        st = entry.stat()
        if st is None:
            raise _missing(record, dst)
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f'destination "{record.name}:{dst}" must be a directory')
        fd = entry.open_dir()
    counted = _Reading(stream)
    try:
        apply_layer(cast("BinaryIO", counted), f"/proc/self/fd/{fd}", overlay=False, ids=ids)
    finally:
        os.close(fd)
    return counted.size


class _Reading:
    """Counts the bytes read through it."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.size = stream, 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.size += len(data)
        return data


def _host_in(record: ContainerRecord, root: int, src: str, dst: str, archive: bool, follow: bool,
             ids: Callable[[int, int], tuple[int, int]] | None) -> int:  # fmt: skip
    from ketch.image.layers import apply_layer

    try:
        st = os.stat(src) if follow or _dir_syntax(src) else os.lstat(src)
    except FileNotFoundError:
        raise NotFound(f"lstat {src}: no such file or directory") from None
    is_dir = stat.S_ISDIR(st.st_mode)
    if _dir_syntax(src) and not is_dir:
        raise InvalidArgument(f"{src}: not a directory")
    source = os.path.realpath(src) if follow else os.path.abspath(src)
    base = os.path.basename(os.path.abspath(src)) or "."
    with _resolve_dst(record, root, dst) as entry:
        fd, arcname, top = _container_target(record, entry, dst, is_dir, is_dir and _contents(src), base)
    owner = None if archive else (0, 0)

    def produce(out: _Counter) -> None:
        parent = os.open(os.path.dirname(source), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            archiver = _Archiver(out, owner=owner, plain=True)
            archiver.tree(parent, os.path.basename(source) or ".", arcname, top)
            archiver.close()
        finally:
            os.close(parent)

    try:
        return _pipe(
            produce, lambda stream: apply_layer(stream, f"/proc/self/fd/{fd}", overlay=False, ids=ids)
        )
    finally:
        os.close(fd)


def _container_target(record: ContainerRecord, entry: Entry, dst: str, src_dir: bool, contents: bool,
                      base: str) -> tuple[int, str, bool]:  # fmt: skip
    """(an O_PATH fd of the container directory to unpack in, the name the copy takes, top entry included)."""
    st = entry.stat()
    if st is None:
        if not src_dir and _dir_syntax(dst):
            raise _missing(record, dst)
        return os.dup(entry.parent), entry.name, True
    if stat.S_ISDIR(st.st_mode):
        return (entry.open_dir(), "", False) if contents else (entry.open_dir(), base, True)
    if src_dir:
        raise InvalidArgument(f"cannot copy a directory to the file {record.name}:{dst}")
    if _dir_syntax(dst):
        raise InvalidArgument(f"{record.name}:{dst}: not a directory")
    return os.dup(entry.parent), entry.name, True


# --- commit ---------------------------------------------------------------------------------------------


def commit(ctx: Context, record: ContainerRecord, repo_tag: str = "", message: str = "", author: str = "",
           changes: Iterable[str] = (), config: dict[str, Any] | None = None, created_by: str | None = None) -> str:  # fmt: skip
    """Docker's commit: the container's changes as a new layer over its image, with the container's
    config (or `config`, as a build gives it) and `changes` (Dockerfile instructions) applied; the
    new image's ID, tagged `repo_tag`. The history step says `created_by` (default: the command)."""
    import tempfile

    from ketch.engine.archive_formats import apply_changes
    from ketch.oci.reference import Reference

    name = ""
    if repo_tag:
        ref = Reference.parse(repo_tag)
        if ref.digest:
            raise InvalidArgument(f"refusing to create a tag with a digest reference: {repo_tag}")
        name = str(ref)
    service = ctx.images()
    image = service.get(record.image)
    parent = service.config_json(image)
    base = config if config is not None else _container_config(parent.get("config") or {}, record)
    config = apply_changes(list(changes), base)
    found = [c for c in container_changes(ctx, record) if not c.implied]
    step = Step(
        " ".join(record.config.get("Cmd") or []) if created_by is None else created_by, message, author
    )
    with tempfile.TemporaryFile(dir=service.root) as spool:
        layer = _write_layer(ctx, record, found, spool) if found else None
        return register(
            service, image, parent, spool, layer, config, step, name, f"committed from {record.name}"
        )


def _container_config(image: dict[str, Any], record: ContainerRecord) -> dict[str, Any]:
    """The image's config with the container's own settings (without the per-run HOSTNAME and TERM)."""
    config = dict(image)
    for key in _COMMITTED:
        if key in record.config:
            config[key] = record.config[key]
    image_env = {e.partition("=")[0] for e in image.get("Env") or []}
    added = {"HOSTNAME"} | ({"TERM"} if record.config.get("Tty") else set())
    config["Env"] = [e for e in config.get("Env") or [] if e.partition("=")[0] not in added - image_env]
    return config


def _write_layer(
    ctx: Context, record: ContainerRecord, found: list[Change], spool: BinaryIO
) -> tuple[str, str, int]:
    """Gzip the changes as a layer tar into `spool`: (diff_id, digest, size)."""
    from ketch.image.compression import gzip_writer

    blob = _Hashing(spool)
    gz = gzip_writer(cast("BinaryIO", blob))
    plain = _Hashing(gz)
    fd = os.open(ctx.images().snapshots.upper_dir(record.id), _READ_DIR)
    try:
        _layer_tar(fd, found, plain, _to_container(ctx, record))
    finally:
        os.close(fd)
        gz.close()
    return plain.digest(), blob.digest(), blob.size


def _layer_tar(
    upper: int, found: list[Change], out: _Hashing, ids: Callable[[int, int], tuple[int, int]] | None = None
) -> None:
    """The changes as an OCI layer: deletions as .wh.<name>, opaque directories with .wh..wh..opq."""
    archiver = _Archiver(out, ids=ids)
    for change in found:
        parent, _, base = change.path.rpartition("/")
        if change.kind == "D":
            archiver.marker(f"{parent}/{_WHITEOUT}{base}" if parent else _WHITEOUT + base)
            continue
        fd = _open_below(upper, parent)
        try:
            archiver.add(fd, base, change.path, os.stat(base, dir_fd=fd, follow_symlinks=False))
        finally:
            os.close(fd)
        if change.opaque:
            archiver.marker(f"{change.path}/{_OPAQUE}")
    archiver.close()


class Step(NamedTuple):
    """An image history step."""

    created_by: str
    comment: str = ""
    author: str = ""


def register(service: ImageService, image: ImageRecord | None, parent: dict[str, Any], spool: BinaryIO | None,
             layer: tuple[str, str, int] | None, config: dict[str, Any], step: Step, name: str = "",
             origin: str = "") -> str:  # fmt: skip
    """A child of `image` (None: of nothing, FROM scratch): its layer (from `spool`, when there is
    one), config and manifest stored, the layer unpacked, the image recorded (under `name` when
    given); its ID."""
    from ketch import jsonio
    from ketch.clock import rfc3339
    from ketch.engine.archive_formats import image_manifest
    from ketch.engine.archive_load import copy_in as store_blob
    from ketch.files import FileLock
    from ketch.image.store import ImageRecord
    from ketch.oci import image as oci

    created = rfc3339()
    body = _child_config(parent, config, layer[0] if layer else "", created, step)
    with FileLock(service._gc_lock, shared=True):
        if layer is not None and spool is not None:
            spool.seek(0)
            store_blob(service, spool, layer[1], layer[2], f"the layer {origin} changed")
        image_id = service.content.put(body)
        old = service.manifest(image) if image is not None else None
        layers = [(oci.LAYER_COMPRESSION[d.media_type], d.digest, d.size) for d in old.layers] if old else []
        layers += [("gzip", layer[1], layer[2])] if layer is not None else []
        form = "oci" if old is not None and old.media_type != oci.DOCKER_MANIFEST else "docker"
        media_type, manifest_body = image_manifest(image_id, len(body), layers, form)
        chain, size = service.unpack(
            image_id, oci.Manifest.from_json(jsonio.loads(manifest_body), media_type)
        )
        new = ImageRecord(id=image_id, manifest=service.content.put(manifest_body), manifest_type=media_type,
                          chain=chain, created=created, added=rfc3339(), size=size,
                          parent=image.id if image is not None else "")  # fmt: skip
        service.images.add(new, name)
    return image_id


def _child_config(
    parent: dict[str, Any], config: dict[str, Any], diff_id: str, created: str, entry: Step
) -> bytes:
    """The parent's image config with the new container config, layer and history step."""
    from ketch.engine.archive_formats import go_json

    doc = {k: v for k, v in parent.items() if k not in ("author", "comment", "container", "container_config")}
    step: dict[str, Any] = {"created": created, "created_by": entry.created_by}
    if entry.author:
        doc["author"] = step["author"] = entry.author
    if entry.comment:
        doc["comment"] = step["comment"] = entry.comment
    diff_ids = list((parent.get("rootfs") or {}).get("diff_ids") or [])
    if diff_id:
        diff_ids.append(diff_id)
    else:
        step["empty_layer"] = True
    doc.update(config=config, created=created, rootfs={"type": "layers", "diff_ids": diff_ids},
               history=[*(parent.get("history") or []), step])  # fmt: skip
    return go_json(dict(sorted(doc.items()))).encode()
