"""Compile a seccomp filter description to classic BPF with libseccomp, and load BPF with seccomp(2).

The split lets the container's parent compile (libseccomp can be slow) while the forked child
only calls :func:`load_bpf` right before exec. libseccomp.so.2 is opened on the first compile,
never at import. Failures raise OSError(errno, message); nothing is translated here.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os

from ketch.linux.syscalls import libc as _libc

TYPE_CHECKING = False
if TYPE_CHECKING:  # the protocols only type the inputs; typing is not imported at run time
    from collections.abc import Sequence
    from typing import Any, Protocol

    class ArgConditionLike(Protocol):
        """One comparison on a syscall argument (libseccomp ``struct scmp_arg_cmp``)."""

        @property
        def index(self) -> int: ...
        @property
        def op(self) -> int: ...
        @property
        def value(self) -> int: ...
        @property
        def value_two(self) -> int: ...

    class RuleLike(Protocol):
        """``action`` (a SCMP_ACT_* word) for ``syscall`` when every condition holds."""

        @property
        def syscall(self) -> str: ...
        @property
        def action(self) -> int: ...
        @property
        def conditions(self) -> Sequence[ArgConditionLike]: ...

    class FilterLike(Protocol):
        """A filter: default SCMP_ACT_* word, SCMP_ARCH_* tokens to add to the native one, rules."""

        @property
        def default_action(self) -> int: ...
        @property
        def architectures(self) -> Sequence[int]: ...
        @property
        def rules(self) -> Sequence[RuleLike]: ...


# enum scmp_filter_attr
_FLTATR_CTL_NNP = 3
_FLTATR_CTL_OPTIMIZE = 8
_OPTIMIZE_BINARY_TREE = 2
_OPTIMIZE_ABOVE = 32  # rules; runc enables the binary tree from here on
_NR_SCMP_ERROR = -1  # seccomp_syscall_resolve_name: unknown name

# seccomp(2)
SECCOMP_SET_MODE_FILTER = 1
_SOCK_FILTER_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k
_BPF_MAX_LEN = 0xFFFF  # sock_fprog.len is an unsigned short
_SYS_SECCOMP = {
    "x86_64": 317,
    "i386": 354,
    "i686": 354,
    "aarch64": 277,
    "riscv64": 277,
    "loongarch64": 277,
    "armv7l": 383,
    "armv8l": 383,
    "ppc64le": 358,
    "ppc64": 358,
    "s390x": 348,
    "mips64": 5312,
}


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "seccomp_init": (ctypes.c_void_p, [ctypes.c_uint32]),
    "seccomp_release": (None, [ctypes.c_void_p]),
    "seccomp_arch_add": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint32]),
    "seccomp_attr_set": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]),
    "seccomp_syscall_resolve_name": (ctypes.c_int, [ctypes.c_char_p]),
    "seccomp_rule_add_array": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)],
    ),
    "seccomp_export_bpf": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
}


@functools.cache
def _libseccomp() -> ctypes.CDLL:
    lib = ctypes.CDLL("libseccomp.so.2")
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def _check(rc: int, what: str) -> None:
    """libseccomp returns -errno on failure."""
    if rc < 0:
        raise OSError(-rc, f"{what}: {os.strerror(-rc)}")


def syscall_number(name: str) -> int | None:
    """The native number libseccomp knows for ``name`` (negative: a pseudo-syscall), or None."""
    nr = int(_libseccomp().seccomp_syscall_resolve_name(os.fsencode(name)))
    return None if nr == _NR_SCMP_ERROR else nr


def _add_arches(lib: ctypes.CDLL, ctx: int, arches: Sequence[int]) -> None:
    for token in arches:
        rc = int(lib.seccomp_arch_add(ctx, token))
        if rc != -errno.EEXIST:  # the native arch is always in a new filter
            _check(rc, f"seccomp_arch_add({token:#x})")


def _add_rule(lib: ctypes.CDLL, ctx: int, rule: RuleLike) -> None:
    nr = syscall_number(rule.syscall)
    if nr is None:
        return  # unknown on this architecture: skipped, as runc does
    conds = [_ArgCmp(c.index, c.op, c.value, c.value_two) for c in rule.conditions]
    array = (_ArgCmp * len(conds))(*conds)
    rc = int(lib.seccomp_rule_add_array(ctx, rule.action, nr, len(conds), array))
    _check(rc, f"seccomp_rule_add({rule.syscall}, action={rule.action:#x})")


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    fd = os.memfd_create("ketch-seccomp-bpf", os.MFD_CLOEXEC)
    with open(fd, "rb") as f:
        _check(int(lib.seccomp_export_bpf(ctx, fd)), "seccomp_export_bpf")
        f.seek(0)
        return f.read()


def compile_bpf(description: FilterLike) -> bytes:
    """Build the filter with libseccomp and return its raw ``struct sock_filter`` array."""
    lib = _libseccomp()
    ctx = lib.seccomp_init(description.default_action)
    if not ctx:
        raise OSError(errno.EINVAL, f"seccomp_init({description.default_action:#x}): cannot create filter")
    try:
        _check(int(lib.seccomp_attr_set(ctx, _FLTATR_CTL_NNP, 0)), "seccomp_attr_set(CTL_NNP)")
        if len(description.rules) > _OPTIMIZE_ABOVE:  # best effort, as runc: older libseccomp lacks it
            lib.seccomp_attr_set(ctx, _FLTATR_CTL_OPTIMIZE, _OPTIMIZE_BINARY_TREE)
        _add_arches(lib, ctx, description.architectures)
        for rule in description.rules:
            _add_rule(lib, ctx, rule)
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def _seccomp_nr() -> int:
    machine = os.uname().machine
    if machine not in _SYS_SECCOMP:
        raise OSError(errno.ENOSYS, f"seccomp: syscall number unknown on {machine}")
    return _SYS_SECCOMP[machine]


def load_bpf(program: bytes, flags: int = 0) -> None:
    """Install ``program`` as a seccomp filter on the calling thread: seccomp(SET_MODE_FILTER, flags)."""
    count, rest = divmod(len(program), _SOCK_FILTER_SIZE)
    if rest or not 0 < count <= _BPF_MAX_LEN:
        raise OSError(errno.EINVAL, f"seccomp: {len(program)} bytes is not a BPF program")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(count, ctypes.addressof(buf))
    args = (ctypes.c_ulong(SECCOMP_SET_MODE_FILTER), ctypes.c_ulong(flags), ctypes.byref(prog))
    rc = int(_libc.syscall(ctypes.c_long(_seccomp_nr()), *args))
    if rc == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SET_MODE_FILTER, {flags:#x}): {os.strerror(err)}")
    if rc > 0:  # SECCOMP_FILTER_FLAG_TSYNC: the thread that could not be synchronised
        raise OSError(errno.EBUSY, f"seccomp: thread {rc} could not be synchronised (TSYNC)")
