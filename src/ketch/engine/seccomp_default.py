"""Docker's default seccomp profile, as the OCI ``linux.seccomp`` object for given capabilities."""

from __future__ import annotations

import os

from ketch.errors import InvalidArgument
from ketch.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: this module must stay cheap to import
    from collections.abc import Iterable
    from typing import Any

# The data below is Docker's profile from moby/moby commit 00f3d189e420d485e42d15fe494f96d272284e0e
# (profiles/seccomp/default.json and default_linux.go: the 2023 profile of Docker Engine 24/25, with
# name_to_handle_at allowed, socket(AF_VSOCK) refused and the CAP_BPF / CAP_PERFMON rules). The
# selection in default_profile() follows setupSeccomp in profiles/seccomp/seccomp_linux.go.

ALLOW = "SCMP_ACT_ALLOW"
ERRNO = "SCMP_ACT_ERRNO"
_EPERM = 1
_ENOSYS = 38
_AF_VSOCK = 40
# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
_CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

# Docker's default capability set (moby oci/caps/defaults.go), for callers that start from it.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)  # fmt: skip


class _Group(Record):
    """One entry of Docker's profile: ``names`` get ``action`` when every include holds and no exclude does.

    ``args`` are (index, value, op) comparisons. Includes: every cap in ``caps`` is held, the arch is one
    of ``arches``, the kernel is at least ``min_kernel``. Excludes: any cap of ``not_caps`` is held, the
    arch is one of ``not_arches``, the kernel is at least ``not_min_kernel``. Arches are moby's names.
    """

    names: tuple[str, ...]
    action: str = ALLOW
    errno_ret: int | None = None
    args: tuple[tuple[int, int, str], ...] = ()
    caps: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()
    min_kernel: tuple[int, int] | None = None
    not_caps: tuple[str, ...] = ()
    not_arches: tuple[str, ...] = ()
    not_min_kernel: tuple[int, int] | None = None


def _personality(domain: int) -> _Group:
    return _Group(("personality",), args=((0, domain, "SCMP_CMP_EQ"),))


# fmt: off
_ALWAYS = (
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "capget", "capset", "chdir", "chmod",
    "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
    "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range",
    "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
    "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd",
    "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
    "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchown", "fchown32",
    "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr",
    "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
    "ftruncate64", "futex", "futex_time64", "futex_waitv", "futimesat", "getcpu", "getcwd", "getdents",
    "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
    "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list",
    "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday",
    "getuid", "getuid32", "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1",
    "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit", "io_uring_enter",
    "io_uring_register", "io_uring_setup", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr",
    "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise",
    "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat",
    "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink",
    "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
    "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2", "pause",
    "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll",
    "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease",
    "pselect6", "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages",
    "removexattr", "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction",
    "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr",
    "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop",
    "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto",
    "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32",
    "setitimer", "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32",
    "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
    "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr", "shmat", "shmctl",
    "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn",
    "socketcall", "socketpair", "splice", "stat", "stat64", "statfs", "statfs64", "statx", "symlink",
    "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64", "times", "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname",
    "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4",
    "waitid", "waitpid", "write", "writev",
)

_SYS_ADMIN = (
    "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "lookup_dcookie",
    "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open", "quotactl", "quotactl_fd",
    "setdomainname", "sethostname", "setns", "syslog", "umount", "umount2", "unshare",
)

_GROUPS: tuple[_Group, ...] = (
    _Group(_ALWAYS),
    _Group(("process_vm_readv", "process_vm_writev", "ptrace"), min_kernel=(4, 8)),
    _Group(("socket",), args=((0, _AF_VSOCK, "SCMP_CMP_NE"),)),
    # PER_LINUX, UNAME26, PER_LINUX32, PER_LINUX32|UNAME26, and 0xffffffff (query the persona)
    _personality(0x0), _personality(0x0008), _personality(0x20000), _personality(0x20008),
    _personality(0xFFFFFFFF),
    _Group(("sync_file_range2", "swapcontext"), arches=("ppc64le",)),
    _Group(("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush",
            "set_tls"), arches=("arm", "arm64")),
    _Group(("arch_prctl",), arches=("amd64", "x32")),
    _Group(("modify_ldt",), arches=("amd64", "x32", "x86")),
    _Group(("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"), arches=("s390", "s390x")),
    _Group(("riscv_flush_icache",), arches=("riscv64",)),
    _Group(("open_by_handle_at",), caps=("CAP_DAC_READ_SEARCH",)),
    _Group(_SYS_ADMIN, caps=("CAP_SYS_ADMIN",)),
    # without CAP_SYS_ADMIN, clone may not create namespaces (s390 swaps clone's first two arguments)
    _Group(("clone",), args=((0, _CLONE_NAMESPACES, "SCMP_CMP_MASKED_EQ"),),
           not_caps=("CAP_SYS_ADMIN",), not_arches=("s390", "s390x")),
    _Group(("clone",), args=((1, _CLONE_NAMESPACES, "SCMP_CMP_MASKED_EQ"),),
           arches=("s390", "s390x"), not_caps=("CAP_SYS_ADMIN",)),
    # clone3's flags are behind a pointer seccomp cannot read: ENOSYS makes libc fall back to clone
    _Group(("clone3",), ERRNO, _ENOSYS, not_caps=("CAP_SYS_ADMIN",)),
    _Group(("reboot",), caps=("CAP_SYS_BOOT",)),
    _Group(("chroot",), caps=("CAP_SYS_CHROOT",)),
    _Group(("delete_module", "init_module", "finit_module"), caps=("CAP_SYS_MODULE",)),
    _Group(("acct",), caps=("CAP_SYS_PACCT",)),
    _Group(("kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"),
           caps=("CAP_SYS_PTRACE",)),
    _Group(("iopl", "ioperm"), caps=("CAP_SYS_RAWIO",)),
    _Group(("settimeofday", "stime", "clock_settime", "clock_settime64"), caps=("CAP_SYS_TIME",)),
    _Group(("vhangup",), caps=("CAP_SYS_TTY_CONFIG",)),
    _Group(("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"), caps=("CAP_SYS_NICE",)),
    _Group(("syslog",), caps=("CAP_SYSLOG",)),
    _Group(("bpf",), caps=("CAP_BPF",)),
    _Group(("perf_event_open",), caps=("CAP_PERFMON",)),
)

# OCI architecture -> the name moby matches "arches" against (its GOARCH-derived libseccomp names)
_NATIVE = {
    "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "amd64", "SCMP_ARCH_X32": "x32", "SCMP_ARCH_ARM": "arm",
    "SCMP_ARCH_AARCH64": "arm64", "SCMP_ARCH_MIPS": "mips", "SCMP_ARCH_MIPSEL": "mipsel",
    "SCMP_ARCH_MIPS64": "mips64", "SCMP_ARCH_MIPS64N32": "mips64n32", "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mips3l64n32", "SCMP_ARCH_PPC": "ppc", "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le", "SCMP_ARCH_S390": "s390", "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_RISCV64": "riscv64",
}

# the profile's archMap: a native architecture and the sub-architectures whose syscalls it also runs
_ARCH_MAP = {
    "SCMP_ARCH_X86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "SCMP_ARCH_AARCH64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
    "SCMP_ARCH_MIPS64": ("SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"),
    "SCMP_ARCH_MIPS64N32": ("SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64"),
    "SCMP_ARCH_MIPSEL64": ("SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"),
    "SCMP_ARCH_MIPSEL64N32": ("SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64"),
    "SCMP_ARCH_S390X": ("SCMP_ARCH_S390X", "SCMP_ARCH_S390"),
    "SCMP_ARCH_RISCV64": ("SCMP_ARCH_RISCV64",),
}

# uname(2) machine -> OCI architecture
_MACHINES = {
    "x86_64": "SCMP_ARCH_X86_64", "amd64": "SCMP_ARCH_X86_64", "i386": "SCMP_ARCH_X86",
    "i486": "SCMP_ARCH_X86", "i586": "SCMP_ARCH_X86", "i686": "SCMP_ARCH_X86",
    "aarch64": "SCMP_ARCH_AARCH64", "arm64": "SCMP_ARCH_AARCH64", "armv6l": "SCMP_ARCH_ARM",
    "armv7l": "SCMP_ARCH_ARM", "armv8l": "SCMP_ARCH_ARM", "ppc64le": "SCMP_ARCH_PPC64LE",
    "ppc64": "SCMP_ARCH_PPC64", "ppc": "SCMP_ARCH_PPC", "s390x": "SCMP_ARCH_S390X", "s390": "SCMP_ARCH_S390",
    "riscv64": "SCMP_ARCH_RISCV64", "mips64": "SCMP_ARCH_MIPS64", "mips": "SCMP_ARCH_MIPS",
}
# fmt: on


def default_profile(capabilities: Iterable[str], arch: str = "", *, kernel: str = "") -> dict[str, Any]:
    """The OCI linux.seccomp object Docker generates for a container with these (bounding) capabilities.

    ``capabilities`` are names like "CAP_SYS_ADMIN" (the "CAP_" prefix may be left out). ``arch`` is an OCI
    architecture ("SCMP_ARCH_X86_64", ...) or a uname machine ("x86_64", ...); default: the host's.
    ``kernel`` is the uname release that "minKernel" conditions are judged against; default: the host's.
    The result denies with EPERM by default, lists the architecture with its sub-architectures
    (x86_64: X86_64, X86, X32; aarch64: AARCH64, ARM) and keeps the rules whose conditions hold.
    """
    caps = {_cap_name(c) for c in capabilities}
    oci_arch = _oci_arch(arch)
    native = _NATIVE.get(oci_arch, "")
    version = _kernel_version(kernel or os.uname().release)
    profile: dict[str, Any] = {"defaultAction": ERRNO, "defaultErrnoRet": _EPERM}
    if oci_arch in _ARCH_MAP:
        profile["architectures"] = list(_ARCH_MAP[oci_arch])
    profile["syscalls"] = [_rule(g) for g in _GROUPS if _selected(g, caps, native, version)]
    return profile


def _cap_name(name: str) -> str:
    name = name.upper()
    return name if name.startswith("CAP_") else "CAP_" + name


def _oci_arch(arch: str) -> str:
    """The OCI name of ``arch``; the host's when empty ("" if moby would not know the host either)."""
    if not arch:
        return _MACHINES.get(os.uname().machine, "")
    if arch in _NATIVE:
        return arch
    if arch in _MACHINES:
        return _MACHINES[arch]
    raise InvalidArgument(f"seccomp: unknown architecture {arch!r}")


def _kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a uname release such as "6.1.0-18-amd64", as moby's "%d.%d" scan reads it."""
    major, _, rest = release.partition(".")
    minor = rest[: len(rest) - len(rest.lstrip("0123456789"))]
    if not major.isdigit() or not minor:
        raise InvalidArgument(f"seccomp: cannot read a kernel version from {release!r}")
    return int(major), int(minor)


def _selected(group: _Group, caps: set[str], native: str, kernel: tuple[int, int]) -> bool:
    """setupSeccomp's filter: no exclude may match, and every include must."""
    if native in group.not_arches or any(c in caps for c in group.not_caps):
        return False
    if group.not_min_kernel is not None and kernel >= group.not_min_kernel:
        return False
    if group.arches and native not in group.arches:
        return False
    if not all(c in caps for c in group.caps):
        return False
    return group.min_kernel is None or kernel >= group.min_kernel


def _rule(group: _Group) -> dict[str, Any]:
    """The OCI syscall rule, with the keys in runtime-spec order and empty fields left out (as moby)."""
    rule: dict[str, Any] = {"names": list(group.names), "action": group.action}
    if group.errno_ret is not None:
        rule["errnoRet"] = group.errno_ret
    if group.args:
        rule["args"] = [{"index": i, "value": v, "op": op} for i, v, op in group.args]
    return rule
