"""Integration tests for ketch.linux.seccomp: compile with libseccomp, load into a forked child."""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from ketch.errors import SetupFailed
from ketch.linux import seccomp as linux_seccomp
from ketch.linux.syscalls import PR_SET_DUMPABLE, prctl
from ketch.oci.runtime import Seccomp
from ketch.runtime import seccomp as sc

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="loading a seccomp filter needs root (CAP_SYS_ADMIN)"
)

MISSING_DIR = "/nonexistent-ketch-seccomp-test/sub"  # its parent never exists: mkdir never creates anything
HIGH_FD = 0x7FFF0000  # no descriptor this high can be open, so close() on it is EBADF unless filtered


def program(profile: dict[str, Any]) -> sc.Program:
    return sc.compile_program(sc.describe(Seccomp.from_json(profile)))


def rule(names: list[str], action: str, **extra: Any) -> dict[str, Any]:
    return {"names": names, "action": action, **extra}


def arg(index: int, value: int, op: str = "SCMP_CMP_EQ", value_two: int = 0) -> dict[str, Any]:
    return {"index": index, "value": value, "valueTwo": value_two, "op": op}


def fails_with(call: Callable[[], object], expected: int) -> bool:
    try:
        call()
    except OSError as exc:
        return exc.errno == expected
    return False


def raw_syscall(name: str, *args: int) -> Callable[[], int]:
    """A call of syscall(2) that raises OSError like os.* does; the number is resolved in the parent."""
    libc = ctypes.CDLL(None, use_errno=True)
    nr = linux_seccomp.syscall_number(name)
    assert nr is not None and nr >= 0

    def call() -> int:
        res = int(libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a) for a in args)))
        if res == -1:
            raise OSError(ctypes.get_errno(), name)
        return res

    return call


def run_in_child(load: Callable[[], None], checks: list[Callable[[], bool]]) -> int:
    """Fork; the child runs ``load`` then ``checks`` and exits 0, or 10+i for the first failing check."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 2
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a SIGSYS kill must leave no core file
            prctl(PR_SET_DUMPABLE, 0)
            load()
            code = next((10 + i for i, check in enumerate(checks) if not check()), 0)
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def loader(prog: sc.Program) -> Callable[[], None]:
    return lambda: linux_seccomp.load_bpf(prog.bpf, prog.flags)


def exit_code(status: int) -> int | str:
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else f"signal {os.WTERMSIG(status)}"


# --- compiling (no root needed) --------------------------------------------------------------


def test_compile_returns_sock_filter_array() -> None:
    prog = program({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule(["mkdir"], "SCMP_ACT_ERRNO")]})
    assert len(prog.bpf) > 0 and len(prog.bpf) % 8 == 0
    assert prog.flags == 0


def test_unknown_syscall_names_are_skipped() -> None:
    base = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule(["mkdir"], "SCMP_ACT_ERRNO")]}
    extra = {**base, "syscalls": [rule(["mkdir", "no_such_syscall_ketch"], "SCMP_ACT_ERRNO")]}
    assert linux_seccomp.syscall_number("no_such_syscall_ketch") is None
    assert program(extra).bpf == program(base).bpf


def test_listed_architectures_extend_the_filter() -> None:
    base = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule(["mkdir"], "SCMP_ACT_ERRNO")]}
    native_only = program(base).bpf
    if os.uname().machine != "x86_64":
        pytest.skip("the x86 family of architectures needs an x86_64 host")
    multi = program({**base, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]}).bpf
    assert len(multi) > len(native_only)


def test_incompatible_architecture_fails_to_compile() -> None:
    foreign = "SCMP_ARCH_S390X" if sys.byteorder == "little" else "SCMP_ARCH_X86_64"
    with pytest.raises(OSError) as exc:
        linux_seccomp.compile_bpf(sc.describe(Seccomp("SCMP_ACT_ALLOW", architectures=(foreign,))))
    assert exc.value.errno == errno.EDOM
    with pytest.raises(SetupFailed, match="seccomp_arch_add") as failed:
        program({"defaultAction": "SCMP_ACT_ALLOW", "architectures": [foreign]})
    assert failed.value.errno == errno.EDOM


def test_load_bpf_rejects_a_malformed_program_before_the_kernel() -> None:
    for bad in (b"", b"\x00" * 7):
        with pytest.raises(OSError) as exc:
            linux_seccomp.load_bpf(bad, 0)
        assert exc.value.errno == errno.EINVAL


def test_libseccomp_is_loaded_lazily() -> None:
    code = (
        "import ketch.linux.seccomp as m\n"
        "maps = lambda: open('/proc/self/maps').read()\n"
        "assert 'libseccomp' not in maps(), 'loaded at import'\n"
        "m.syscall_number('read')\n"
        "assert 'libseccomp' in maps(), 'not loaded on use'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- loading into a child (root) -------------------------------------------------------------


@pytest.mark.root
@needs_root
def test_errno_rules_and_an_argument_condition() -> None:
    prog = program(
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                rule(["mkdir", "mkdirat"], "SCMP_ACT_ERRNO", errnoRet=errno.ENOSYS),
                rule(["getppid"], "SCMP_ACT_ERRNO"),  # EPERM by default
                rule(["personality"], "SCMP_ACT_ERRNO", errnoRet=errno.EACCES, args=[arg(0, 0xFFFFFFFF)]),
            ],
        }
    )
    query_persona, set_linux = raw_syscall("personality", 0xFFFFFFFF), raw_syscall("personality", 0)
    checks = [
        lambda: fails_with(lambda: os.mkdir(MISSING_DIR), errno.ENOSYS),
        lambda: fails_with(raw_syscall("getppid"), errno.EPERM),
        lambda: fails_with(query_persona, errno.EACCES),
        lambda: set_linux() >= 0,  # same syscall, other argument: allowed
        lambda: raw_syscall("getpid")() == os.getpid(),
        lambda: fails_with(lambda: os.rmdir(MISSING_DIR), errno.ENOENT),  # unfiltered syscalls still work
        lambda: os.path.isdir("/"),
    ]
    assert exit_code(run_in_child(loader(prog), checks)) == 0


@pytest.mark.root
@needs_root
def test_conditions_on_two_arguments_are_anded() -> None:
    prog = program(
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                rule(
                    ["getpriority"], "SCMP_ACT_ERRNO", errnoRet=errno.ENOTTY, args=[arg(0, 0x4321), arg(1, 7)]
                ),
                rule(
                    ["close"],
                    "SCMP_ACT_ERRNO",
                    errnoRet=errno.EXDEV,
                    args=[arg(0, 0xFFFF0000, "SCMP_CMP_MASKED_EQ", HIGH_FD)],
                ),
            ],
        }
    )
    checks = [
        lambda: fails_with(lambda: os.getpriority(0x4321, 7), errno.ENOTTY),
        lambda: fails_with(lambda: os.getpriority(0x4321, 8), errno.EINVAL),
        lambda: fails_with(lambda: os.getpriority(0x4322, 7), errno.EINVAL),
        lambda: fails_with(lambda: os.close(HIGH_FD + 5), errno.EXDEV),
        lambda: fails_with(lambda: os.close(HIGH_FD - 5), errno.EBADF),
    ]
    assert exit_code(run_in_child(loader(prog), checks)) == 0


@pytest.mark.root
@needs_root
def test_kill_process_on_a_specific_argument() -> None:
    kill = rule(["getpriority"], "SCMP_ACT_KILL_PROCESS", args=[arg(0, 0x1234)])
    prog = program({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [kill]})
    checks = [
        lambda: fails_with(lambda: os.getpriority(0x1235, 0), errno.EINVAL),  # other value: allowed
        lambda: fails_with(lambda: os.getpriority(0x1234, 0), errno.EINVAL),  # must not return at all
    ]
    status = run_in_child(loader(prog), checks)
    assert os.WIFSIGNALED(status), f"child was not killed: {exit_code(status)}"
    assert os.WTERMSIG(status) == signal.SIGSYS


@pytest.mark.root
@needs_root
def test_multi_arch_filter_with_tsync_through_the_runtime_layer() -> None:
    archs = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"] if os.uname().machine == "x86_64" else []
    prog = program(
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": archs,
            "flags": ["SECCOMP_FILTER_FLAG_TSYNC"],
            "syscalls": [rule(["mkdir", "mkdirat"], "SCMP_ACT_ERRNO")],
        }
    )
    assert prog.flags == 1
    checks = [lambda: fails_with(lambda: os.mkdir(MISSING_DIR), errno.EPERM)]
    assert exit_code(run_in_child(lambda: sc.install(prog), checks)) == 0


@pytest.mark.root
@needs_root
def test_the_kernel_rejects_an_invalid_program() -> None:
    invalid = sc.Program(b"\x00" * 8, 0)  # a lone "ld" with no return instruction

    def rejected() -> bool:
        try:
            sc.install(invalid)
        except SetupFailed as exc:
            return exc.errno == errno.EINVAL
        return False

    assert exit_code(run_in_child(lambda: None, [rejected])) == 0
