"""Unit tests for ketch.engine.seccomp_default: Docker's default profile as an OCI linux.seccomp object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from ketch.engine.seccomp_default import DEFAULT_CAPABILITIES, default_profile
from ketch.errors import InvalidArgument
from ketch.oci.runtime import Seccomp
from ketch.runtime import seccomp as sc

X86_64 = "SCMP_ARCH_X86_64"
KERNEL = "6.1.0-18-amd64"
EVERY_CAP = (
    "CAP_BPF", "CAP_DAC_READ_SEARCH", "CAP_PERFMON", "CAP_SYSLOG", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT", "CAP_SYS_MODULE", "CAP_SYS_NICE", "CAP_SYS_PACCT", "CAP_SYS_PTRACE", "CAP_SYS_RAWIO",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG",
)  # fmt: skip
CLONE_NAMESPACES = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
# in no rule of the profile: denied whatever the capabilities
NEVER = ("keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load", "swapon", "swapoff",
         "userfaultfd", "nfsservctl", "uselib", "pivot_root", "ustat", "sysfs", "_sysctl")  # fmt: skip


def profile(
    caps: tuple[str, ...] = DEFAULT_CAPABILITIES, arch: str = X86_64, kernel: str = KERNEL
) -> dict[str, Any]:
    return default_profile(caps, arch, kernel=kernel)


def allowed(p: dict[str, Any]) -> set[str]:
    """Names some ALLOW rule lets through, whatever its argument conditions."""
    return {n for r in p["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}


def unconditional(p: dict[str, Any]) -> set[str]:
    return {
        n for r in p["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r for n in r["names"]
    }


def rules_for(p: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in p["syscalls"] if name in r["names"]]


def heads(p: dict[str, Any]) -> list[str]:
    return [r["names"][0] for r in p["syscalls"]]


# --- the shape of the object ---------------------------------------------------------------------


def test_default_action_is_eperm_and_keys_follow_the_runtime_spec() -> None:
    p = profile()
    assert list(p) == ["defaultAction", "defaultErrnoRet", "architectures", "syscalls"]
    assert (p["defaultAction"], p["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 1)
    for rule in p["syscalls"]:
        assert list(rule)[:2] == ["names", "action"] and set(rule) <= {"names", "action", "errnoRet", "args"}


def test_default_caps_rule_sequence_matches_docker() -> None:
    # setupSeccomp on amd64 for Docker's 14 capabilities, kernel >= 4.8
    assert heads(profile()) == [
        "accept", "process_vm_readv", "socket", *["personality"] * 5, "arch_prctl", "modify_ldt", "clone",
        "clone3", "chroot",
    ]  # fmt: skip
    assert len(profile()["syscalls"][0]["names"]) == 349


def test_privileged_rule_sequence_matches_docker() -> None:
    assert heads(profile(DEFAULT_CAPABILITIES + EVERY_CAP)) == [
        "accept", "process_vm_readv", "socket", *["personality"] * 5, "arch_prctl", "modify_ldt",
        "open_by_handle_at", "bpf", "reboot", "chroot", "delete_module", "acct", "kcmp", "iopl",
        "settimeofday", "vhangup", "get_mempolicy", "syslog", "bpf", "perf_event_open",
    ]  # fmt: skip


# --- what Docker's default capabilities get ----------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["mount", "umount", "umount2", "unshare", "setns", "reboot", "init_module", "finit_module",
     "delete_module", "bpf", "perf_event_open", "fsopen", "move_mount", "sethostname", "syslog", "acct",
     "kcmp", "pidfd_getfd", "iopl", "settimeofday", "clock_settime", "mbind", "vhangup", "clone3",
     "open_by_handle_at", "lookup_dcookie", *NEVER],
)  # fmt: skip
def test_default_caps_deny(name: str) -> None:
    assert name not in allowed(profile())


@pytest.mark.parametrize(
    "name", ["read", "write", "execve", "futex", "openat", "mknod", "wait4", "rseq", "io_uring_setup",
             "socketcall", "name_to_handle_at", "pkey_alloc", "chroot"]
)  # fmt: skip
def test_default_caps_allow(name: str) -> None:
    assert name in unconditional(profile())


def test_ptrace_follows_docker_min_kernel_4_8() -> None:
    # Docker allows ptrace and process_vm_* to everyone on kernels >= 4.8 (no seccomp bypass there)
    for name in ("ptrace", "process_vm_readv", "process_vm_writev"):
        assert name in unconditional(profile(kernel="4.8.0"))
        assert name in unconditional(profile(kernel="5.10.0-28-cloud-amd64"))
        assert name not in allowed(profile(kernel="4.4.0-210-generic"))
        assert name in unconditional(profile((*DEFAULT_CAPABILITIES, "CAP_SYS_PTRACE"), kernel="4.4.0"))


def test_clone_may_not_create_namespaces_without_sys_admin() -> None:
    (rule,) = rules_for(profile(), "clone")
    assert rule == {
        "names": ["clone"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": CLONE_NAMESPACES, "op": "SCMP_CMP_MASKED_EQ"}],
    }
    (s390,) = rules_for(profile(arch="SCMP_ARCH_S390X"), "clone")
    assert s390["args"][0]["index"] == 1  # s390 swaps clone's first two arguments


def test_clone3_is_enosys_without_sys_admin() -> None:
    (rule,) = rules_for(profile(), "clone3")
    assert rule == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}


def test_personality_and_socket_argument_rules() -> None:
    p = profile()
    domains = [r["args"] for r in rules_for(p, "personality")]
    assert domains == [
        [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}] for v in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF)
    ]
    assert rules_for(p, "socket") == [
        {
            "names": ["socket"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}],
        }
    ]  # AF_VSOCK


# --- capabilities add rules ----------------------------------------------------------------------


def test_sys_admin_allows_namespaces_and_mounts_and_drops_the_clone_rules() -> None:
    p = profile((*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"))
    assert {"mount", "umount2", "unshare", "setns", "clone", "clone3", "bpf", "perf_event_open", "fsopen",
            "sethostname", "syslog", "quotactl"} <= unconditional(p)  # fmt: skip
    assert [r for r in p["syscalls"] if "args" in r and "clone" in r["names"]] == []
    assert all(r["action"] == "SCMP_ACT_ALLOW" for r in p["syscalls"])


def test_sys_ptrace_adds_ptrace_family() -> None:
    p = profile((*DEFAULT_CAPABILITIES, "CAP_SYS_PTRACE"))
    assert {"kcmp", "pidfd_getfd", "process_madvise", "ptrace", "process_vm_readv", "process_vm_writev"} <= (
        unconditional(p)
    )
    assert "mount" not in allowed(p)


@pytest.mark.parametrize(
    ("cap", "names"),
    [
        ("CAP_SYS_BOOT", {"reboot"}),
        ("CAP_SYS_MODULE", {"init_module", "finit_module", "delete_module"}),
        ("CAP_SYS_TIME", {"settimeofday", "stime", "clock_settime", "clock_settime64"}),
        ("CAP_SYS_NICE", {"mbind", "set_mempolicy", "get_mempolicy", "set_mempolicy_home_node"}),
        ("CAP_BPF", {"bpf"}),
        ("CAP_PERFMON", {"perf_event_open"}),
        ("CAP_DAC_READ_SEARCH", {"open_by_handle_at"}),
        ("CAP_SYSLOG", {"syslog"}),
    ],
)
def test_single_capabilities_add_their_syscalls(cap: str, names: set[str]) -> None:
    base = unconditional(profile())
    assert unconditional(profile((*DEFAULT_CAPABILITIES, cap))) - base == names


def test_some_syscalls_are_never_allowed() -> None:
    assert not set(NEVER) & allowed(profile(DEFAULT_CAPABILITIES + EVERY_CAP))


def test_chroot_needs_sys_chroot() -> None:
    assert "chroot" not in allowed(profile(("CAP_KILL",)))


def test_capability_names_are_normalised() -> None:
    assert profile(("sys_admin", "CAP_KILL")) == profile(("CAP_SYS_ADMIN", "KILL"))


# --- architectures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("SCMP_ARCH_X86_64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
        ("x86_64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
        ("SCMP_ARCH_AARCH64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
        ("aarch64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
        ("SCMP_ARCH_S390X", ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"]),
        ("SCMP_ARCH_RISCV64", ["SCMP_ARCH_RISCV64"]),
    ],
)
def test_architectures(arch: str, expected: list[str]) -> None:
    assert profile(arch=arch)["architectures"] == expected


def test_architectures_left_out_where_docker_has_no_arch_map() -> None:
    assert "architectures" not in profile(arch="SCMP_ARCH_PPC64LE")


def test_arch_specific_rules() -> None:
    x86, arm = unconditional(profile()), unconditional(profile(arch="SCMP_ARCH_AARCH64"))
    assert {"arch_prctl", "modify_ldt"} <= x86 and not {"set_tls", "cacheflush", "breakpoint"} & x86
    assert {"set_tls", "cacheflush", "breakpoint", "arm_fadvise64_64", "sync_file_range2"} <= arm
    assert not {"arch_prctl", "modify_ldt"} & arm
    assert {"swapcontext", "sync_file_range2"} <= unconditional(profile(arch="SCMP_ARCH_PPC64LE"))
    assert "riscv_flush_icache" in unconditional(profile(arch="SCMP_ARCH_RISCV64"))


def test_host_architecture_and_kernel_are_the_defaults() -> None:
    assert default_profile(DEFAULT_CAPABILITIES) == default_profile(
        DEFAULT_CAPABILITIES, os.uname().machine, kernel=os.uname().release
    )


def test_bad_architecture_or_kernel_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="architecture"):
        profile(arch="SCMP_ARCH_VAX")
    with pytest.raises(InvalidArgument, match="kernel"):
        profile(kernel="linux")


# --- ketch's runtime takes it; the output is stable ---------------------------------------------


@pytest.mark.parametrize("arch", ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64", "SCMP_ARCH_S390X", "ppc64le"])
@pytest.mark.parametrize("caps", [(), DEFAULT_CAPABILITIES, DEFAULT_CAPABILITIES + EVERY_CAP])
def test_runtime_parses_and_describes_it(arch: str, caps: tuple[str, ...]) -> None:
    seccomp = Seccomp.from_json(profile(caps, arch))
    description = sc.describe(seccomp)
    assert description.default_action == 0x00050001  # SCMP_ACT_ERRNO | EPERM
    assert len(description.rules) > 300


def test_output_is_deterministic_and_independent_of_capability_order() -> None:
    first = json.dumps(profile((*DEFAULT_CAPABILITIES, "CAP_SYS_PTRACE")))
    again = json.dumps(profile(("CAP_SYS_PTRACE", *reversed(DEFAULT_CAPABILITIES), "CAP_KILL")))
    assert first == again == json.dumps(profile((*DEFAULT_CAPABILITIES, "CAP_SYS_PTRACE")))


def test_result_is_a_fresh_object() -> None:
    p = profile()
    p["syscalls"][0]["names"].clear()
    assert len(profile()["syscalls"][0]["names"]) == 349


def test_import_is_cheap() -> None:
    code = "import sys, ketch.engine.seccomp_default; print(sorted({'json', 'typing', 'dataclasses'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
