"""The container's root filesystem: mount options, safe paths, the spec's mounts, /dev, pivot_root.

The pure half (option parsing, path resolution inside a root) is unit tested on temp dirs; the
acting half runs in the container's init, in its own mount namespace, before the user program.
"""

from __future__ import annotations

import errno
import os
import stat

from ketch.errors import InvalidArgument
from ketch.linux import syscalls as sc
from ketch.oci.runtime import Device, Mount
from ketch.record import Record

# option -> (flags to set, flags to clear)
_FLAGS: dict[str, tuple[int, int]] = {
    "defaults": (0, 0),
    "ro": (sc.MS_RDONLY, 0),
    "rw": (0, sc.MS_RDONLY),
    "nosuid": (sc.MS_NOSUID, 0),
    "suid": (0, sc.MS_NOSUID),
    "nodev": (sc.MS_NODEV, 0),
    "dev": (0, sc.MS_NODEV),
    "noexec": (sc.MS_NOEXEC, 0),
    "exec": (0, sc.MS_NOEXEC),
    "sync": (sc.MS_SYNCHRONOUS, 0),
    "async": (0, sc.MS_SYNCHRONOUS),
    "dirsync": (sc.MS_DIRSYNC, 0),
    "remount": (sc.MS_REMOUNT, 0),
    "mand": (sc.MS_MANDLOCK, 0),
    "nomand": (0, sc.MS_MANDLOCK),
    "noatime": (sc.MS_NOATIME, 0),
    "atime": (0, sc.MS_NOATIME),
    "nodiratime": (sc.MS_NODIRATIME, 0),
    "diratime": (0, sc.MS_NODIRATIME),
    "relatime": (sc.MS_RELATIME, 0),
    "norelatime": (0, sc.MS_RELATIME),
    "strictatime": (sc.MS_STRICTATIME, 0),
    "nostrictatime": (0, sc.MS_STRICTATIME),
    "lazytime": (sc.MS_LAZYTIME, 0),
    "nolazytime": (0, sc.MS_LAZYTIME),
    "nosymfollow": (sc.MS_NOSYMFOLLOW, 0),
    "symfollow": (0, sc.MS_NOSYMFOLLOW),
    "silent": (sc.MS_SILENT, 0),
    "loud": (0, sc.MS_SILENT),
    "bind": (sc.MS_BIND, 0),
    "rbind": (sc.MS_BIND | sc.MS_REC, 0),
}
_PROPAGATION = {
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE,
    "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
# flags a bind remount must repeat, or the kernel refuses it (they are locked in a user namespace)
_LOCKED = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_NOATIME | sc.MS_NODIRATIME | sc.MS_RELATIME
_IGNORED = ("z", "Z", "private-label", "idmap")


def known_options() -> set[str]:
    return set(_FLAGS) | set(_PROPAGATION)


class MountOp(Record):
    """One spec mount, decoded: what to call mount(2) with."""

    source: str
    destination: str
    fstype: str
    flags: int
    data: str
    propagation: tuple[int, ...]

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


def parse_options(options: tuple[str, ...], path: str = "options") -> tuple[int, tuple[int, ...], str]:
    """mount(8)-style options -> (flags, propagation changes, data string)."""
    flags = 0
    propagation: list[int] = []
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            set_, clear = _FLAGS[opt]
            flags = (flags | set_) & ~clear
        elif opt in _PROPAGATION:
            propagation.append(_PROPAGATION[opt])
        elif opt in _IGNORED or opt.startswith(("context=", "fscontext=", "rootcontext=", "defcontext=")):
            continue
        elif opt.startswith("r") and opt[1:] in ("ro", "rw", "nosuid", "nodev", "noexec", "noatime"):
            raise InvalidArgument(f"{path}: recursive mount attribute {opt!r} is not supported")
        elif not opt:
            raise InvalidArgument(f"{path}: empty mount option")
        else:
            data.append(opt)
    return flags, tuple(propagation), ",".join(data)


def describe(mount: Mount, bundle: str, path: str = "mounts") -> MountOp:
    flags, propagation, data = parse_options(mount.options, f"{path}.options")
    if mount.type == "bind":
        flags |= sc.MS_BIND
    source = mount.source
    if flags & sc.MS_BIND and not source:
        raise InvalidArgument(f"{path}.source: a bind mount needs a source")
    if flags & sc.MS_BIND and not os.path.isabs(source):
        source = os.path.join(bundle, source)
    return MountOp(source, mount.destination, mount.type, flags, data, propagation)


def resolve_in_root(root: str, path: str) -> str:
    """Host path for `path` inside `root`, following symlinks as if `root` were `/`.

    No component can climb out: `..` stops at the root and absolute symlink targets
    restart at the root, as openat2(RESOLVE_IN_ROOT) does. Missing components are kept.
    """
    root = os.path.realpath(root)
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        links += 1
        if links > 255:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p and p != "."] + parts
    return os.path.join(root, *resolved)


# --- acting: runs in the container's init --------------------------------------------------------


def _mkdir_all(path: str, mode: int = 0o755) -> None:
    try:
        os.makedirs(path, mode, exist_ok=True)
    except FileExistsError:
        pass  # a file or dangling link: mount(2) will say what is wrong


def _make_target(target: str, source_is_dir: bool) -> None:
    if source_is_dir:
        _mkdir_all(target)
    elif not os.path.lexists(target):
        _mkdir_all(os.path.dirname(target))
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def locked_flags(path: str) -> int:
    """The flags of the mount at `path` that a remount has to keep (statvfs bits equal MS_ bits)."""
    return os.statvfs(path).f_flag & _LOCKED


def bind(source: str, target: str, flags: int, propagation: tuple[int, ...] = ()) -> None:
    sc.mount(source, target, None, sc.MS_BIND | (flags & sc.MS_REC))
    extra = flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
    if extra:
        sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | extra | locked_flags(target))
    for change in propagation:
        sc.mount(None, target, None, change)


def apply_mount(op: MountOp, root: str, cgroup_dirs: dict[str, str]) -> None:
    target = resolve_in_root(root, op.destination)
    if op.fstype == "cgroup" or op.fstype == "cgroup2":
        return _mount_cgroup(op, target, cgroup_dirs)
    if op.is_bind:
        _make_target(target, os.path.isdir(op.source))
        return bind(op.source, target, op.flags, op.propagation)
    _mkdir_all(target)
    try:
        sc.mount(op.source or op.fstype, target, op.fstype, op.flags, op.data or None)
    except PermissionError:
        if op.fstype not in ("sysfs", "mqueue"):
            raise
        # without a private netns (sysfs) or ipcns (mqueue) the kernel refuses a new instance
        bind("/sys" if op.fstype == "sysfs" else "/dev/mqueue", target, op.flags | sc.MS_REC)
    for change in op.propagation:
        sc.mount(None, target, None, change)


def _mount_cgroup(op: MountOp, target: str, cgroup_dirs: dict[str, str]) -> None:
    """The container's own cgroups, bind-mounted from the host: a tmpfs of controllers (v1) or one tree (v2)."""
    _mkdir_all(target)
    flags = op.flags | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    if list(cgroup_dirs) == [""]:  # pure cgroup v2: one tree
        return bind(cgroup_dirs[""], target, flags | sc.MS_REC, op.propagation)
    sc.mount("tmpfs", target, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "mode=755")
    for name, host_dir in cgroup_dirs.items():
        sub = os.path.join(target, name)
        _mkdir_all(sub)
        bind(host_dir, sub, flags | sc.MS_REC)
        for alias in name.split(",") if "," in name else ():
            os.symlink(name, os.path.join(target, alias))
    if flags & sc.MS_RDONLY:
        sc.mount(None, target, None, sc.MS_REMOUNT | sc.MS_BIND | flags)


DEFAULT_DEVICES = (
    Device("/dev/null", "c", 1, 3, 0o666, 0, 0),
    Device("/dev/zero", "c", 1, 5, 0o666, 0, 0),
    Device("/dev/full", "c", 1, 7, 0o666, 0, 0),
    Device("/dev/random", "c", 1, 8, 0o666, 0, 0),
    Device("/dev/urandom", "c", 1, 9, 0o666, 0, 0),
    Device("/dev/tty", "c", 5, 0, 0o666, 0, 0),
)
DEV_LINKS = (
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
)


def create_device(root: str, dev: Device, bind_only: bool) -> None:
    target = resolve_in_root(root, dev.path)
    _mkdir_all(os.path.dirname(target))
    kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[dev.type]
    mode = dev.file_mode if dev.file_mode is not None else 0o666
    if bind_only:  # mknod is not allowed in a user namespace: borrow the host's node
        _make_target(target, False)
        sc.mount(dev.path, target, None, sc.MS_BIND)
        return
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass
    os.mknod(target, kind | (mode & 0o7777), os.makedev(dev.major, dev.minor))
    os.chmod(target, mode & 0o7777)  # mknod honours the umask; the spec's mode must win
    os.chown(target, dev.uid or 0, dev.gid or 0)


def setup_dev(root: str, devices: tuple[Device, ...], bind_only: bool, has_devpts: bool) -> None:
    wanted = {d.path: d for d in DEFAULT_DEVICES}
    wanted.update({d.path: d for d in devices})
    for dev in wanted.values():
        create_device(root, dev, bind_only)
    for source, link in DEV_LINKS + ((("pts/ptmx", "/dev/ptmx"),) if has_devpts else ()):
        target = resolve_in_root(root, link)
        if os.path.lexists(target):
            if link != "/dev/ptmx":
                continue
            os.unlink(target)
        os.symlink(source, target)


def make_private(propagation: str) -> None:
    flags = _PROPAGATION.get(propagation or "rslave")
    if flags is None:
        raise InvalidArgument(f"linux.rootfsPropagation: unknown propagation {propagation!r}")
    sc.mount(None, "/", None, flags | sc.MS_REC)


def private_parent(root: str) -> None:
    """Make the mount holding the rootfs private: pivot_root(2) refuses a shared parent, and an
    unbindable one (rootfsPropagation "unbindable") would refuse the bind below."""
    sc.mount(None, _mount_point_of(root), None, sc.MS_PRIVATE)


def _mount_point_of(path: str) -> str:
    """The mount point of the mount holding `path` (an absolute, resolved path): statx(2) on it
    and its parents, else (before Linux 5.8) the longest mount point in mountinfo above it."""
    here = path
    while here != "/":
        known = sc.is_mount_root(here)
        if known is None:
            break
        if known:
            return here
        here = os.path.dirname(here)
    else:
        return "/"
    best = "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
                best = point
    return best


def reapply_propagation(propagation: str) -> None:
    """After pivot_root the root is a new mount: give it the propagation the spec asked for."""
    if propagation:
        sc.mount(None, "/", None, _PROPAGATION[propagation])


def bind_root(root: str) -> None:
    """Make the rootfs a mount point of its own, with a private parent, as pivot_root(2) needs."""
    sc.mount(root, root, None, sc.MS_BIND | sc.MS_REC)


def pivot(root: str) -> None:
    """pivot_root(".", ".") then detach the old root that now sits on top (runc's trick)."""
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
    sc.umount(".", sc.MNT_DETACH)
    os.chdir("/")


def chroot_into(root: str) -> None:
    """--no-pivot: move the rootfs over / and chroot, for roots pivot_root cannot leave (ramfs)."""
    os.chdir(root)
    sc.mount(root, "/", None, sc.MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def mask_path(path: str) -> None:
    try:
        if os.path.isdir(path):
            sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY, None)
        else:
            sc.mount("/dev/null", path, None, sc.MS_BIND)
    except FileNotFoundError:
        pass


def readonly_path(path: str) -> None:
    try:
        sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
    except FileNotFoundError:
        return
    flags = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC | locked_flags(path)
    sc.mount(None, path, None, flags)


def readonly_root() -> None:
    sc.mount(None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | locked_flags("/"))


def write_sysctls(sysctl: dict[str, str]) -> None:
    for key, value in sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        with open(path, "w") as f:
            f.write(value)
