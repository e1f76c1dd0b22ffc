"""Capability names <-> numbers, and the masks a process's five sets should hold."""

from __future__ import annotations

from ketch.errors import InvalidArgument

# capabilities(7), in kernel order: the index is the capability number
NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip
NUMBERS = {name: i for i, name in enumerate(NAMES)}


def last_cap() -> int:
    """The highest capability this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return min(int(f.read()), len(NAMES) - 1)
    except OSError:
        return len(NAMES) - 1


def mask(names: tuple[str, ...], path: str, top: int) -> int:
    """Bit mask of the named capabilities; unknown names are an error, ones newer than the kernel dropped."""
    bits = 0
    for name in names:
        key = name.upper() if name.upper().startswith("CAP_") else "CAP_" + name.upper()
        number = NUMBERS.get(key)
        if number is None:
            raise InvalidArgument(f"{path}: unknown capability {name!r}")
        if number <= top:
            bits |= 1 << number
    return bits
