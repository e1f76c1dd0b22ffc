"""Unit tests for ketch.runtime.seccomp: validating linux.seccomp and describing the filter (pure)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from ketch.errors import InvalidArgument, Unsupported
from ketch.oci.runtime import Seccomp
from ketch.runtime import seccomp as sc

ALLOW = 0x7FFF0000


def describe(profile: dict[str, Any]) -> sc.FilterDescription:
    return sc.describe(Seccomp.from_json(profile))


def one_rule(action: str, **extra: Any) -> dict[str, Any]:
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": action, **extra}]}


# --- actions -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "word"),
    [
        ("SCMP_ACT_KILL", 0x00000000),
        ("SCMP_ACT_KILL_THREAD", 0x00000000),
        ("SCMP_ACT_KILL_PROCESS", 0x80000000),
        ("SCMP_ACT_TRAP", 0x00030000),
        ("SCMP_ACT_ERRNO", 0x00050001),  # EPERM when errnoRet is absent, as runc
        ("SCMP_ACT_TRACE", 0x7FF00001),
        ("SCMP_ACT_LOG", 0x7FFC0000),
    ],
)
def test_rule_action_encoding(action: str, word: int) -> None:
    (rule,) = describe(one_rule(action)).rules
    assert rule.action == word


@pytest.mark.parametrize(
    ("action", "word"),
    [("SCMP_ACT_ALLOW", ALLOW), ("SCMP_ACT_KILL_PROCESS", 0x80000000), ("SCMP_ACT_ERRNO", 0x00050001)],
)
def test_default_action_encoding(action: str, word: int) -> None:
    assert describe({"defaultAction": action}).default_action == word


def test_errno_ret_is_encoded_in_the_low_16_bits() -> None:
    (rule,) = describe(one_rule("SCMP_ACT_ERRNO", errnoRet=38)).rules
    assert rule.action == 0x00050000 | 38
    (rule,) = describe(one_rule("SCMP_ACT_TRACE", errnoRet=0xFFFF)).rules
    assert rule.action == 0x7FF0FFFF


def test_default_errno_ret() -> None:
    desc = describe({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38})
    assert desc.default_action == 0x00050026


def test_errno_ret_out_of_range() -> None:
    with pytest.raises(
        InvalidArgument, match=r"^linux\.seccomp\.syscalls\[0\]\.errnoRet: 65536 is out of range"
    ):
        describe(one_rule("SCMP_ACT_ERRNO", errnoRet=65536))
    with pytest.raises(InvalidArgument, match=r"^linux\.seccomp\.defaultErrnoRet: -1 is out of range"):
        describe({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1})


def test_errno_ret_on_an_action_without_errno_fails() -> None:
    with pytest.raises(
        InvalidArgument, match=r"^linux\.seccomp\.syscalls\[0\]\.errnoRet: action 'SCMP_ACT_ALLOW'"
    ):
        describe(
            {
                "defaultAction": "SCMP_ACT_KILL",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}],
            }
        )
    with pytest.raises(InvalidArgument, match=r"^linux\.seccomp\.defaultErrnoRet: "):
        describe({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1})


def test_unknown_action_names_its_json_path() -> None:
    rules = [{"names": ["read"], "action": "SCMP_ACT_ERRNO"}] * 3 + [{"names": ["write"], "action": "X"}]
    with pytest.raises(InvalidArgument) as exc:
        describe({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules})
    assert str(exc.value) == "linux.seccomp.syscalls[3].action: unknown action 'X'"
    with pytest.raises(
        InvalidArgument, match=r"^linux\.seccomp\.defaultAction: unknown action 'SCMP_ACT_NOPE'$"
    ):
        describe({"defaultAction": "SCMP_ACT_NOPE"})


def test_notify_is_unsupported() -> None:
    with pytest.raises(
        Unsupported, match=r"^linux\.seccomp\.syscalls\[0\]\.action: action 'SCMP_ACT_NOTIFY'"
    ):
        describe(one_rule("SCMP_ACT_NOTIFY"))
    with pytest.raises(Unsupported, match=r"^linux\.seccomp\.defaultAction: "):
        describe({"defaultAction": "SCMP_ACT_NOTIFY"})


# --- rules ---------------------------------------------------------------------------------------


def test_one_rule_per_name_in_order() -> None:
    desc = describe(
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["b", "a", "c"], "action": "SCMP_ACT_KILL"}],
        }
    )
    assert [r.syscall for r in desc.rules] == ["b", "a", "c"]
    assert all(r.conditions == () for r in desc.rules)


def test_rules_repeating_the_default_action_are_dropped() -> None:
    desc = describe(
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},  # == default EPERM
                {"names": ["write"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["open"], "action": "SCMP_ACT_ALLOW"},
            ],
        }
    )
    assert [(r.syscall, r.action) for r in desc.rules] == [("write", 0x00050026), ("open", ALLOW)]


def test_dropped_rules_are_still_validated() -> None:
    bad = {
        "names": ["read"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_BAD"}],
    }
    with pytest.raises(InvalidArgument, match=r"args\[0\]\.op: unknown operator 'SCMP_CMP_BAD'"):
        describe({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [bad]})


def test_names_must_not_be_empty() -> None:
    with pytest.raises(
        InvalidArgument, match=r"^linux\.seccomp\.syscalls\[0\]\.names: must name at least one"
    ):
        describe({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_KILL"}]})
    with pytest.raises(
        InvalidArgument, match=r"^linux\.seccomp\.syscalls\[0\]\.names\[1\]: empty syscall name"
    ):
        describe(
            {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a", ""], "action": "SCMP_ACT_KILL"}]}
        )


# --- argument conditions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "code"),
    [
        ("SCMP_CMP_NE", 1),
        ("SCMP_CMP_LT", 2),
        ("SCMP_CMP_LE", 3),
        ("SCMP_CMP_EQ", 4),
        ("SCMP_CMP_GE", 5),
        ("SCMP_CMP_GT", 6),
        ("SCMP_CMP_MASKED_EQ", 7),
    ],
)
def test_operator_encoding(op: str, code: int) -> None:
    args = [{"index": 2, "value": 0xF0, "valueTwo": 0x30, "op": op}]
    (rule,) = describe(one_rule("SCMP_ACT_KILL", args=args)).rules
    assert rule.conditions == (sc.ArgCondition(2, code, 0xF0, 0x30),)


def test_conditions_on_distinct_arguments_stay_in_one_rule() -> None:
    args = [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 2, "op": "SCMP_CMP_NE"}]
    (rule,) = describe(one_rule("SCMP_ACT_KILL", args=args)).rules
    assert rule.conditions == (sc.ArgCondition(0, 4, 1), sc.ArgCondition(1, 1, 2))


def test_conditions_on_the_same_argument_split_into_rules_as_runc() -> None:
    args = [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["a", "b"], "action": "SCMP_ACT_KILL", "args": args}],
    }
    rules = describe(profile).rules
    assert [(r.syscall, r.conditions) for r in rules] == [
        ("a", (sc.ArgCondition(0, 4, 1),)),
        ("a", (sc.ArgCondition(0, 4, 2),)),
        ("b", (sc.ArgCondition(0, 4, 1),)),
        ("b", (sc.ArgCondition(0, 4, 2),)),
    ]


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ({"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}, r"args\[0\]\.index: 6 is out of range 0-5"),
        ({"index": -1, "value": 0, "op": "SCMP_CMP_EQ"}, r"args\[0\]\.index: -1 is out of range"),
        ({"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}, r"args\[0\]\.value: -1 is not an unsigned 64-bit"),
        ({"index": 0, "value": 0, "valueTwo": 1 << 64, "op": "SCMP_CMP_MASKED_EQ"}, r"args\[0\]\.valueTwo: "),
        ({"index": 0, "value": 0, "op": "EQ"}, r"args\[0\]\.op: unknown operator 'EQ'"),
    ],
)
def test_bad_conditions(arg: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^linux\.seccomp\.syscalls\[0\]\." + message):
        describe(one_rule("SCMP_ACT_KILL", args=[arg]))


def test_u64_max_is_a_valid_value() -> None:
    args = [{"index": 0, "value": (1 << 64) - 1, "op": "SCMP_CMP_EQ"}]
    (rule,) = describe(one_rule("SCMP_ACT_KILL", args=args)).rules
    assert rule.conditions[0].value == 0xFFFFFFFFFFFFFFFF


# --- architectures and flags ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "token"),
    [
        ("SCMP_ARCH_X86", 0x40000003),
        ("SCMP_ARCH_X86_64", 0xC000003E),
        ("SCMP_ARCH_X32", 0x4000003E),
        ("SCMP_ARCH_ARM", 0x40000028),
        ("SCMP_ARCH_AARCH64", 0xC00000B7),
        ("SCMP_ARCH_MIPS64N32", 0xA0000008),
        ("SCMP_ARCH_MIPSEL64N32", 0xE0000008),
        ("SCMP_ARCH_PPC64LE", 0xC0000015),
        ("SCMP_ARCH_S390X", 0x80000016),
        ("SCMP_ARCH_PARISC64", 0x8000000F),
        ("SCMP_ARCH_RISCV64", 0xC00000F3),
    ],
)
def test_architecture_tokens(arch: str, token: int) -> None:
    assert describe({"defaultAction": "SCMP_ACT_ALLOW", "architectures": [arch]}).architectures == (token,)


def test_architectures_are_deduplicated_in_order() -> None:
    archs = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]
    desc = describe({"defaultAction": "SCMP_ACT_ALLOW", "architectures": archs})
    assert desc.architectures == (0xC000003E, 0x40000003, 0x4000003E)


def test_unknown_architecture() -> None:
    archs = ["SCMP_ARCH_X86_64", "SCMP_ARCH_VAX"]
    with pytest.raises(
        InvalidArgument, match=r"^linux\.seccomp\.architectures\[1\]: unknown architecture 'SCMP_ARCH_VAX'$"
    ):
        describe({"defaultAction": "SCMP_ACT_ALLOW", "architectures": archs})


def test_flags_become_seccomp2_bits() -> None:
    names = ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
    assert describe({"defaultAction": "SCMP_ACT_ALLOW", "flags": names}).flags == 0b111
    assert describe({"defaultAction": "SCMP_ACT_ALLOW", "flags": names[1:2]}).flags == 0b010
    assert describe({"defaultAction": "SCMP_ACT_ALLOW"}).flags == 0


def test_unknown_and_refused_flags() -> None:
    with pytest.raises(
        InvalidArgument, match=r"^linux\.seccomp\.flags\[0\]: unknown flag 'SECCOMP_FILTER_FLAG_X'$"
    ):
        describe({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_X"]})
    with pytest.raises(Unsupported, match=r"^linux\.seccomp\.flags\[0\]: "):
        describe({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]})


def test_custom_path_prefix() -> None:
    with pytest.raises(InvalidArgument, match=r"^spec\.seccomp\.defaultAction: "):
        sc.describe(Seccomp("SCMP_ACT_BOGUS"), path="spec.seccomp")


# --- exported names and purity -------------------------------------------------------------------


def test_exported_name_lists() -> None:
    assert set(sc.ACTIONS) == {
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
    }
    assert len(sc.OPERATORS) == 7 and "SCMP_CMP_MASKED_EQ" in sc.OPERATORS
    assert {"SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64", "SCMP_ARCH_RISCV64"} <= set(
        sc.ARCHITECTURES
    )
    assert set(sc.FLAGS) < set(sc.KNOWN_FLAGS)
    for name in (*sc.ACTIONS, *sc.ARCHITECTURES):  # every advertised name is accepted
        profile = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": [name]}
        if name in sc.ACTIONS:
            profile = one_rule(name)
        describe(profile)


def test_description_module_is_pure() -> None:
    code = (
        "import sys\n"
        "from ketch.oci.runtime import Seccomp\n"
        "from ketch.runtime.seccomp import describe\n"
        "describe(Seccomp('SCMP_ACT_ALLOW', syscalls=()))\n"
        "bad = sorted(n for n in sys.modules if n == 'ctypes' or n.startswith('ketch.linux'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_program_for_caches_by_the_sections_json_text() -> None:
    from ketch import jsonio

    section = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
               "syscalls": [{"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}  # fmt: skip
    text = jsonio.dumps(section)
    first = sc.program_for(Seccomp.from_json(section), text)
    assert sc.program_for(Seccomp.from_json(section), text) is first  # no describe, no compile
    assert first.bpf == sc.compile_program(sc.describe(Seccomp.from_json(section))).bpf
    other = dict(section, defaultAction="SCMP_ACT_LOG")
    assert sc.program_for(Seccomp.from_json(other), jsonio.dumps(other)).bpf != first.bpf
    with pytest.raises(InvalidArgument):  # a bad section is still refused, cached key or not
        bad = dict(section, defaultAction="SCMP_ACT_NOPE")
        sc.program_for(Seccomp.from_json(bad), jsonio.dumps(bad))
