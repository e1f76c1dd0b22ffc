"""The cgroup v2 device program, run by a small interpreter of the opcodes it uses."""

from __future__ import annotations

import struct

import pytest

from ketch.errors import InvalidArgument
from ketch.runtime.devicefilter import program, rules_from_spec
from ketch.runtime.resources import DEFAULT_DEVICE_RULES

CHAR, BLOCK = 2, 1
MKNOD, READ, WRITE = 1, 2, 4


def run(prog: bytes, kind: int, major: int, minor: int, access: int) -> int:
    """Execute the program on one request (struct bpf_cgroup_dev_ctx) and return r0."""
    insns = [struct.unpack("<BBhi", prog[i : i + 8]) for i in range(0, len(prog), 8)]
    ctx = {0: (access << 16) | kind, 4: major, 8: minor}
    regs = [0] * 11
    pc = 0
    while True:
        code, regs_byte, off, imm = insns[pc]
        dst, src = regs_byte & 0xF, regs_byte >> 4
        pc += 1
        if code == 0x61:
            assert src == 1, "loads read the context in r1"
            regs[dst] = ctx[off]
        elif code == 0xBC:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif code == 0x54:
            regs[dst] &= imm
        elif code == 0x74:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif code == 0xB7:
            regs[dst] = imm
        elif code in (0x55, 0x15):
            if (regs[dst] != imm) == (code == 0x55):
                pc += off
        elif code == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def build(spec_rules: list[dict[str, object]]) -> bytes:
    return program(rules_from_spec(spec_rules, DEFAULT_DEVICE_RULES))


DENY_ALL = {"allow": False, "access": "rwm"}


@pytest.mark.parametrize(
    ("request_", "allowed"),
    [
        ((CHAR, 1, 3, READ | WRITE), 1),  # /dev/null: a default
        ((CHAR, 136, 7, READ | WRITE), 1),  # a pty
        ((CHAR, 10, 229, READ), 0),  # /dev/fuse
        ((BLOCK, 8, 0, READ), 0),  # a disk
        ((BLOCK, 8, 0, MKNOD), 1),  # mknod of anything is allowed, opening it is not
    ],
)
def test_deny_all_then_defaults(request_: tuple[int, int, int, int], allowed: int) -> None:
    assert run(build([DENY_ALL]), *request_) == allowed


def test_a_later_allow_overrides_the_deny_and_is_limited_to_its_access() -> None:
    prog = build([DENY_ALL, {"allow": True, "type": "c", "major": 10, "minor": 232, "access": "r"}])
    assert run(prog, CHAR, 10, 232, READ) == 1
    assert run(prog, CHAR, 10, 232, READ | WRITE) == 0
    assert run(prog, BLOCK, 10, 232, READ) == 0


def test_a_deny_of_one_access_denies_requests_that_include_it() -> None:
    prog = program(
        rules_from_spec([{"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}], ())
    )
    assert run(prog, CHAR, 1, 3, READ) == 1
    assert run(prog, CHAR, 1, 3, READ | WRITE) == 0
    assert run(prog, CHAR, 1, 5, WRITE) == 1


def test_wildcards_match_any_major_and_minor() -> None:
    prog = build([DENY_ALL, {"allow": True, "type": "b", "access": "rwm"}])
    assert run(prog, BLOCK, 259, 3, READ | WRITE) == 1
    assert run(prog, CHAR, 259, 3, READ) == 0


def test_no_rules_allow_everything() -> None:
    assert run(program([]), CHAR, 10, 229, READ | WRITE) == 1


def test_rules_after_a_match_all_are_not_emitted() -> None:
    """The verifier refuses unreachable instructions."""
    prog = program(rules_from_spec([{"allow": True, "type": "c", "access": "r"}, DENY_ALL], ()))
    assert len(prog) == 8 * (7 + 2)  # the loads, then "deny" and exit


def test_bad_rules_are_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"^linux\.resources\.devices\[0\]"):
        rules_from_spec([{"type": "x"}], ())
