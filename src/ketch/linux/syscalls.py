"""Thin ctypes wrappers for the syscalls Python's os module lacks; the only libc user.

Every wrapper raises OSError(errno, message, path) on failure and retries EINTR.
"""

from __future__ import annotations

import ctypes
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

libc = ctypes.CDLL(None, use_errno=True)  # shared by every module of ketch.linux
_pylibc = ctypes.PyDLL(None, use_errno=True)  # the same, called with the GIL held (clone3_fork)

# clone(2) / unshare(2) namespace flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

NAMESPACE_FLAGS = {
    "mount": CLONE_NEWNS,
    "cgroup": CLONE_NEWCGROUP,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
    "time": CLONE_NEWTIME,
}
# the names of the namespace files under /proc/<pid>/ns
NAMESPACE_FILES = {
    "mount": "mnt",
    "cgroup": "cgroup",
    "uts": "uts",
    "ipc": "ipc",
    "user": "user",
    "pid": "pid",
    "network": "net",
    "time": "time",
}

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# the new mount API (5.2+; mount_setattr 5.12+): detached trees, idmapped mounts (overlayfs layers: 5.19+)
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000

# prctl(2)
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYS_PIVOT_ROOT = 155
_SYS_CAPGET = 125
_SYS_CAPSET = 126
_SYS_SETNS = 308
_SYS_KEYCTL = 250
_SYS_CLOSE_RANGE = 436
_SYS_PERSONALITY = 135
# the same number on every architecture (they were added after the syscall tables were unified)
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_SYS_CLONE3 = 435
CLONE_INTO_CGROUP = 0x200000000
CLOSE_RANGE_CLOEXEC = 1 << 2
_KEYCTL_JOIN_SESSION_KEYRING = 1
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def check(result: int, what: str, path: str | None = None) -> int:
    """Raise OSError(errno) for a libc-style -1 result; return the result otherwise."""
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return result


def _retry(fn: Any, *args: Any) -> int:
    while True:
        result = fn(*args)
        if result != -1 or ctypes.get_errno() != 4:  # EINTR
            return int(result)


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    res = _retry(libc.mount, _b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    check(res, f"mount {source or fstype or ''} on {target}", target)


def umount(target: str, flags: int = 0) -> None:
    check(_retry(libc.umount2, _b(target), flags), f"umount {target}", target)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def open_tree(path: str, flags: int, dirfd: int = AT_FDCWD) -> int:
    """An fd of the mount tree at `path`; with OPEN_TREE_CLONE a detached copy of it."""
    res = libc.syscall(_SYS_OPEN_TREE, dirfd, _b(path), ctypes.c_uint(flags))
    return check(res, f"open_tree {path}", path)


def move_mount(fd: int, target: str) -> None:
    """Attach the detached tree `fd` (from open_tree) at `target`."""
    res = libc.syscall(_SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, _b(target), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
    check(res, f"move_mount to {target}", target)


def mount_setattr_idmap(fd: int, userns_fd: int, recursive: bool = False) -> None:
    """Make the detached tree `fd` an idmapped mount with the mapping of the user namespace `userns_fd`."""
    attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    res = libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", ctypes.c_uint(flags), ctypes.byref(attr),
                       ctypes.c_size_t(ctypes.sizeof(attr)))  # fmt: skip
    check(res, "mount_setattr(MOUNT_ATTR_IDMAP)")


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls",
        "set_tid", "set_tid_size", "cgroup",
    )]  # fmt: skip


def clone3_fork(flags: int, cgroup_fd: int = -1) -> int:
    """os.fork() through clone3(2), so that the child can be born in new namespaces (CLONE_NEW*
    flags) and in the cgroup v2 directory `cgroup_fd` (CLONE_INTO_CGROUP, when given): no
    unshare, no intermediate process, no cgroup.procs write (and no wait for the kernel's attach
    grace period).

    It is os.fork's own sequence (PyOS_BeforeFork, fork, PyOS_AfterFork_*) around clone3, called
    with the GIL held as os.fork does. The caller must be single-threaded. Raises OSError (ENOSYS
    or EINVAL on kernels before 5.7, EPERM where seccomp refuses clone3)."""
    if cgroup_fd >= 0:
        flags |= CLONE_INTO_CGROUP
    args = _CloneArgs(flags=flags, exit_signal=17, cgroup=max(cgroup_fd, 0))  # SIGCHLD
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = int(_pylibc.syscall(_SYS_CLONE3, ctypes.byref(args), ctypes.sizeof(args)))
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone3: {os.strerror(err)}")
    return pid


_STATX_ATTR_MOUNT_ROOT = 0x2000
_AT_SYMLINK_NOFOLLOW = 0x100


def is_mount_root(path: str) -> bool | None:
    """Whether `path` is the root of a mount (a bind mount of its own filesystem too), from one
    statx(2) instead of a scan of mountinfo; None where the kernel (before 5.8) does not say."""
    buf = ctypes.create_string_buffer(256)  # struct statx
    if libc.statx(AT_FDCWD, _b(path), _AT_SYMLINK_NOFOLLOW, 0, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"statx: {os.strerror(err)}", path)
    attributes = int.from_bytes(buf.raw[8:16], sys.byteorder)
    known = int.from_bytes(buf.raw[56:64], sys.byteorder)  # stx_attributes_mask
    if not known & _STATX_ATTR_MOUNT_ROOT:
        return None
    return bool(attributes & _STATX_ATTR_MOUNT_ROOT)


def pivot_root(new_root: str, put_old: str) -> None:
    check(libc.syscall(_SYS_PIVOT_ROOT, _b(new_root), _b(put_old)), "pivot_root", new_root)


def unshare(flags: int) -> None:
    check(libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    check(libc.syscall(_SYS_SETNS, fd, nstype), "setns")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    args = (ctypes.c_ulong(a) for a in (arg2, arg3, arg4, arg5))
    return check(libc.prctl(option, *args), f"prctl({option})")


def sethostname(name: str) -> None:
    raw = name.encode()
    check(libc.sethostname(raw, len(raw)), "sethostname")


def setdomainname(name: str) -> None:
    raw = name.encode()
    check(libc.setdomainname(raw, len(raw)), "setdomainname")


def personality(persona: int) -> None:
    check(libc.syscall(_SYS_PERSONALITY, ctypes.c_ulong(persona)), "personality")


def join_session_keyring(name: str | None = None) -> None:
    check(libc.syscall(_SYS_KEYCTL, _KEYCTL_JOIN_SESSION_KEYRING, _b(name)), "keyctl(join session keyring)")


def cloexec_from(first: int) -> None:
    """Mark every descriptor >= first close-on-exec, so none leaks into the container."""
    if libc.syscall(_SYS_CLOSE_RANGE, first, ctypes.c_uint(0xFFFFFFFF), CLOSE_RANGE_CLOEXEC) == 0:
        return
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= first:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    check(libc.syscall(_SYS_CAPSET, ctypes.byref(header), data), "capset")


def capbset_drop(cap: int) -> None:
    prctl(PR_CAPBSET_DROP, cap)


def capbset_read(cap: int) -> bool:
    try:
        return prctl(PR_CAPBSET_READ, cap) == 1
    except OSError:
        return False


def ambient_raise(cap: int) -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
