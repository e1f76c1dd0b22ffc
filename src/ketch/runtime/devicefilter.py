"""Device rules -> a cgroup v2 device program (BPF_PROG_TYPE_CGROUP_DEVICE), pure.

cgroup v2 has no devices controller: access to device nodes is decided by an eBPF program
attached to the cgroup. The program sees struct bpf_cgroup_dev_ctx {u32 access_type (type in
the low 16 bits, access in the high 16), u32 major, u32 minor} and returns 1 (allow) or 0.

The rules keep cgroup v1's meaning: applied in order, a later rule overrides an earlier one,
so the program tests them from the last to the first and the first match decides; nothing
matched means allowed (v1's initial state; specs start with "deny all"). An allow rule
matches a request whose access bits are all in the rule; a deny rule matches one that shares
any bit with it (denying "w" denies an open for read and write).
"""

from __future__ import annotations

import struct

from ketch.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# bpf_cgroup_dev_ctx encodings
_DEV_BLOCK, _DEV_CHAR = 1, 2
_ACC = {"m": 1, "r": 2, "w": 4}
_TYPES = {"b": _DEV_BLOCK, "c": _DEV_CHAR}

# opcodes (linux/bpf.h): class | op | source
_LDX_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_MOV32_X = 0xBC  # BPF_ALU | BPF_MOV | BPF_X
_AND32_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
_RSH32_K = 0x74  # BPF_ALU | BPF_RSH | BPF_K
_MOV64_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_EXIT = 0x95  # BPF_JMP | BPF_EXIT
_R0, _R1, _R2, _R3, _R4, _R5, _R6 = range(7)


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def rules_from_spec(devices: list[dict[str, Any]], defaults: tuple[tuple[str, int | None, int | None, str], ...]
                    ) -> list[tuple[bool, str, int, int, str]]:  # fmt: skip
    """(allow, type, major, minor, access) in order: the spec's rules, then the default allow list."""
    out = []
    for i, r in enumerate(devices):
        where = f"linux.resources.devices[{i}]"
        kind = r.get("type") or "a"
        access = r.get("access") or "rwm"
        if (
            kind not in ("a", "b", "c")
            or not isinstance(access, str)
            or set(access) - set("rwm")
            or not access
        ):
            raise InvalidArgument(f"{where}: expected type a, b or c and access letters from 'rwm'")
        major, minor = r.get("major"), r.get("minor")
        out.append(
            (
                bool(r.get("allow")),
                kind,
                -1 if major is None else major,
                -1 if minor is None else minor,
                access,
            )
        )
    out += [(True, k, -1 if ma is None else ma, -1 if mi is None else mi, acc) for k, ma, mi, acc in defaults]
    return out


def program(rules: list[tuple[bool, str, int, int, str]]) -> bytes:
    """The BPF instructions: load the request, test the rules last to first, allow by default."""
    head = [
        _insn(_LDX_W, _R2, _R1, 0),  # r2 = access_type
        _insn(_MOV32_X, _R3, _R2),
        _insn(_AND32_K, _R3, imm=0xFFFF),  # r3 = device type
        _insn(_MOV32_X, _R4, _R2),
        _insn(_RSH32_K, _R4, imm=16),  # r4 = requested access bits
        _insn(_LDX_W, _R5, _R1, 4),  # r5 = major
        _insn(_LDX_W, _R6, _R1, 8),  # r6 = minor
    ]
    body: list[bytes] = []
    for allow, kind, major, minor, access in reversed(rules):
        body += _rule(allow, kind, major, minor, access)
        if kind == "a" and major < 0 and minor < 0 and set(access) == set("rwm"):
            return b"".join(head + body)  # matches everything: earlier rules are unreachable
    tail = [_insn(_MOV64_K, _R0, imm=1), _insn(_EXIT)]
    return b"".join(head + body + tail)


def _rule(allow: bool, kind: str, major: int, minor: int, access: str) -> list[bytes]:
    mask = sum(_ACC[c] for c in set(access))
    checks: list[tuple[int, int, int]] = []  # (opcode, register, immediate): "skip this rule if ..."
    if kind != "a":
        checks.append((_JNE_K, _R3, _TYPES[kind]))
    if major >= 0:
        checks.append((_JNE_K, _R5, major))
    if minor >= 0:
        checks.append((_JNE_K, _R6, minor))
    access_check: list[bytes] = []
    if mask != 7:
        # r0 = r4 & ~mask (allow: some bit outside the rule) or r4 & mask (deny: no bit shared)
        access_check = [_insn(_MOV32_X, _R0, _R4), _insn(_AND32_K, _R0, imm=(~mask & 7) if allow else mask)]
    verdict = [_insn(_MOV64_K, _R0, imm=1 if allow else 0), _insn(_EXIT)]
    n = len(checks) + len(access_check) + (1 if access_check else 0) + len(verdict)
    out = []
    for i, (op, reg, imm) in enumerate(checks):
        out.append(_insn(op, reg, off=n - i - 1, imm=imm))  # jump past the rest of this rule
    if access_check:
        out += access_check
        skip = len(verdict)
        out.append(_insn(_JNE_K if allow else _JEQ_K, _R0, off=skip, imm=0))
    return out + verdict
