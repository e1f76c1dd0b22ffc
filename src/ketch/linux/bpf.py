"""Load a cgroup device program and attach it to a cgroup directory: bpf(2) through ctypes."""

from __future__ import annotations

import ctypes
import os

from ketch.linux.syscalls import check, libc

_SYS_BPF = 321  # x86_64
_PROG_LOAD, _PROG_ATTACH = 5, 8
_PROG_TYPE_CGROUP_DEVICE = 15
_ATTACH_CGROUP_DEVICE = 6
_F_ALLOW_MULTI = 2
_ATTR_SIZE = 128


class _LoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
        ("_rest", ctypes.c_char * 56),
    ]


class _AttachAttr(ctypes.Structure):
    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_bpf_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("_rest", ctypes.c_char * 112),
    ]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    return check(
        int(libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), ctypes.c_uint(_ATTR_SIZE))), f"bpf({cmd})"
    )


def load_device_program(insns: bytes) -> int:
    """The program's fd; a verifier rejection raises OSError with the verifier's log."""
    code = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(b"Apache")
    log = ctypes.create_string_buffer(65536)
    attr = _LoadAttr(
        prog_type=_PROG_TYPE_CGROUP_DEVICE, insn_cnt=len(insns) // 8, insns=ctypes.addressof(code),
        license=ctypes.addressof(license_), log_level=1, log_size=len(log), log_buf=ctypes.addressof(log),
        prog_name=b"ketch_devices", expected_attach_type=_ATTACH_CGROUP_DEVICE,
    )  # fmt: skip
    try:
        return _bpf(_PROG_LOAD, attr)
    except OSError as exc:
        detail = log.value.decode(errors="replace").strip().splitlines()[:1] or [""]
        raise OSError(exc.errno, f"loading the device program: {exc.strerror} {detail[0]}".strip()) from exc


def attach_device_program(prog_fd: int, cgroup_dir: str) -> None:
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        attr = _AttachAttr(target_fd=fd, attach_bpf_fd=prog_fd, attach_type=_ATTACH_CGROUP_DEVICE,
                           attach_flags=_F_ALLOW_MULTI)  # fmt: skip
        _bpf(_PROG_ATTACH, attr)
    finally:
        os.close(fd)
