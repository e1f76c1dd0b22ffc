"""Validate an OCI seccomp profile and describe the filter the linux layer compiles and loads.

"Describe first, then act": :func:`describe` is pure (no ctypes, no libseccomp) and turns a
parsed ``linux.seccomp`` into a :class:`FilterDescription` that already carries the
libseccomp encodings (action words, comparison operators, architecture tokens) and the
seccomp(2) flags. :func:`compile_program` runs in the container's parent process (libseccomp
may be slow); :func:`install` is what the forked child calls right before exec.

Behaviour follows runc: ERRNO/TRACE return EPERM when no errnoRet is given, rules whose
action equals the default action are dropped, syscall names this architecture does not
know are skipped at compile time, and a rule with several conditions on the same argument
becomes one rule per condition (libseccomp cannot AND comparisons on one argument).
"""

from __future__ import annotations

import errno

from ketch.errors import InvalidArgument, SetupFailed, Unsupported
from ketch.oci.runtime import Seccomp, SeccompArg, SyscallRule
from ketch.record import Record

# --- libseccomp encodings (seccomp.h, libseccomp 2.5) ------------------------------------------

_ACT_KILL_PROCESS = 0x80000000
_ACT_KILL_THREAD = 0x00000000
_ACT_TRAP = 0x00030000
_ACT_ERRNO = 0x00050000  # | (errno & 0xffff)
_ACT_TRACE = 0x7FF00000  # | (msg & 0xffff)
_ACT_LOG = 0x7FFC0000
_ACT_ALLOW = 0x7FFF0000
_RET_DATA = 0x0000FFFF

# actions that take a 16-bit return value (errnoRet), and those that take none
_ACTIONS_WITH_DATA = {"SCMP_ACT_ERRNO": _ACT_ERRNO, "SCMP_ACT_TRACE": _ACT_TRACE}
_ACTIONS_PLAIN = {
    "SCMP_ACT_KILL": _ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": _ACT_KILL_PROCESS,
    "SCMP_ACT_KILL_THREAD": _ACT_KILL_THREAD,
    "SCMP_ACT_TRAP": _ACT_TRAP,
    "SCMP_ACT_ALLOW": _ACT_ALLOW,
    "SCMP_ACT_LOG": _ACT_LOG,
}
_ACTIONS_REFUSED = ("SCMP_ACT_NOTIFY",)

# enum scmp_compare
_OPERATORS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

# SCMP_ARCH_* = AUDIT_ARCH_* (EM_* | __AUDIT_ARCH_64BIT 0x80000000 | __AUDIT_ARCH_LE 0x40000000)
_ARCHITECTURES = {
    "SCMP_ARCH_X86": 0x40000003,
    "SCMP_ARCH_X86_64": 0xC000003E,
    "SCMP_ARCH_X32": 0x4000003E,
    "SCMP_ARCH_ARM": 0x40000028,
    "SCMP_ARCH_AARCH64": 0xC00000B7,
    "SCMP_ARCH_MIPS": 0x00000008,
    "SCMP_ARCH_MIPS64": 0x80000008,
    "SCMP_ARCH_MIPS64N32": 0xA0000008,
    "SCMP_ARCH_MIPSEL": 0x40000008,
    "SCMP_ARCH_MIPSEL64": 0xC0000008,
    "SCMP_ARCH_MIPSEL64N32": 0xE0000008,
    "SCMP_ARCH_PPC": 0x00000014,
    "SCMP_ARCH_PPC64": 0x80000015,
    "SCMP_ARCH_PPC64LE": 0xC0000015,
    "SCMP_ARCH_S390": 0x00000016,
    "SCMP_ARCH_S390X": 0x80000016,
    "SCMP_ARCH_PARISC": 0x0000000F,
    "SCMP_ARCH_PARISC64": 0x8000000F,
    "SCMP_ARCH_RISCV64": 0xC00000F3,
}

# seccomp(2) SECCOMP_FILTER_FLAG_*; WAIT_KILLABLE_RECV only makes sense with a notify listener
_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1 << 0,
    "SECCOMP_FILTER_FLAG_LOG": 1 << 1,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 1 << 2,
}
_FLAGS_REFUSED = ("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",)

_MAX_ARGS = 6
_U64_MAX = (1 << 64) - 1

# the names ketch accepts, for `ketch-oci features`
ACTIONS: tuple[str, ...] = (*_ACTIONS_PLAIN, *_ACTIONS_WITH_DATA)
OPERATORS: tuple[str, ...] = tuple(_OPERATORS)
ARCHITECTURES: tuple[str, ...] = tuple(_ARCHITECTURES)
FLAGS: tuple[str, ...] = tuple(_FLAGS)
KNOWN_FLAGS: tuple[str, ...] = (*_FLAGS, *_FLAGS_REFUSED)


# --- the description ---------------------------------------------------------------------------


class ArgCondition(Record):
    """One ``struct scmp_arg_cmp``: compare syscall argument ``index`` with ``op``."""

    index: int
    op: int
    value: int
    value_two: int = 0


class RuleDescription(Record):
    """Apply ``action`` to ``syscall`` when all ``conditions`` hold (always, if none)."""

    syscall: str
    action: int
    conditions: tuple[ArgCondition, ...] = ()


class FilterDescription(Record):
    """Everything needed to build and load the filter; numbers are libseccomp/kernel encodings."""

    default_action: int
    architectures: tuple[int, ...] = ()
    flags: int = 0
    rules: tuple[RuleDescription, ...] = ()


class Program(Record):
    """A compiled classic-BPF program (raw ``struct sock_filter`` array) and its seccomp(2) flags."""

    bpf: bytes
    flags: int


# --- validation --------------------------------------------------------------------------------


def _action(name: str, errno_ret: int | None, path: str, errno_path: str) -> int:
    if name in _ACTIONS_REFUSED:
        raise Unsupported(f"{path}: action {name!r} (seccomp user notification) is not supported")
    if name in _ACTIONS_WITH_DATA:
        data = errno.EPERM if errno_ret is None else errno_ret
        if not 0 <= data <= _RET_DATA:
            raise InvalidArgument(f"{errno_path}: {data} is out of range 0-{_RET_DATA}")
        return _ACTIONS_WITH_DATA[name] | data
    if name not in _ACTIONS_PLAIN:
        raise InvalidArgument(f"{path}: unknown action {name!r}")
    if errno_ret is not None:  # the runtime-spec says MUST fail; runc ignores it
        raise InvalidArgument(f"{errno_path}: action {name!r} does not return an errno")
    return _ACTIONS_PLAIN[name]


def _condition(arg: SeccompArg, path: str) -> ArgCondition:
    if not 0 <= arg.index < _MAX_ARGS:
        raise InvalidArgument(f"{path}.index: {arg.index} is out of range 0-{_MAX_ARGS - 1}")
    if arg.op not in _OPERATORS:
        raise InvalidArgument(f"{path}.op: unknown operator {arg.op!r}")
    for key, value in (("value", arg.value), ("valueTwo", arg.value_two)):
        if not 0 <= value <= _U64_MAX:
            raise InvalidArgument(f"{path}.{key}: {value} is not an unsigned 64-bit integer")
    return ArgCondition(arg.index, _OPERATORS[arg.op], arg.value, arg.value_two)


def _condition_sets(conds: tuple[ArgCondition, ...]) -> tuple[tuple[ArgCondition, ...], ...]:
    """All conditions in one set, or (runc's fallback) one set per condition if an index repeats."""
    indexes = [c.index for c in conds]
    if len(set(indexes)) == len(indexes):
        return (conds,)
    return tuple((c,) for c in conds)


def _rules(rule: SyscallRule, default_action: int, path: str) -> list[RuleDescription]:
    if not rule.names:
        raise InvalidArgument(f"{path}.names: must name at least one syscall")
    if "" in rule.names:
        raise InvalidArgument(f"{path}.names[{rule.names.index('')}]: empty syscall name")
    action = _action(rule.action, rule.errno_ret, f"{path}.action", f"{path}.errnoRet")
    conds = tuple(_condition(a, f"{path}.args[{i}]") for i, a in enumerate(rule.args))
    if action == default_action:
        return []  # libseccomp refuses rules that repeat the default action; runc drops them too
    sets = _condition_sets(conds)
    return [RuleDescription(name, action, cs) for name in rule.names for cs in sets]


def _lookup(table: dict[str, int], names: tuple[str, ...], path: str, what: str) -> list[int]:
    unknown = next((n for n in names if n not in table), None)
    if unknown is not None:
        raise InvalidArgument(f"{path}[{names.index(unknown)}]: unknown {what} {unknown!r}")
    return [table[n] for n in names]


def _flags(names: tuple[str, ...], path: str) -> int:
    refused = next((n for n in names if n in _FLAGS_REFUSED), None)
    if refused is not None:
        raise Unsupported(f"{path}[{names.index(refused)}]: flag {refused!r} needs a notify listener")
    bits = 0
    for bit in _lookup(_FLAGS, names, path, "flag"):
        bits |= bit
    return bits


def describe(seccomp: Seccomp, path: str = "linux.seccomp") -> FilterDescription:
    """Validate ``seccomp`` and describe its filter; raises InvalidArgument or Unsupported."""
    default = _action(
        seccomp.default_action, seccomp.default_errno_ret, f"{path}.defaultAction", f"{path}.defaultErrnoRet"
    )
    arches = _lookup(_ARCHITECTURES, seccomp.architectures, f"{path}.architectures", "architecture")
    rules = [r for i, s in enumerate(seccomp.syscalls) for r in _rules(s, default, f"{path}.syscalls[{i}]")]
    flags = _flags(seccomp.flags, f"{path}.flags")
    return FilterDescription(default, tuple(dict.fromkeys(arches)), flags, tuple(rules))


# --- acting on it (imports the linux layer lazily) ---------------------------------------------


_compiled: dict[FilterDescription, Program] = {}  # a long-lived caller (ketch's supervisor) compiles once
_by_json: dict[str, Program] = {}  # the same, keyed by the spec's seccomp section as JSON text


def program_for(seccomp: Seccomp, as_json: str = "") -> Program:
    """describe() then compile_program(); `as_json`, the section's JSON text when the caller has
    it, keys a cache that skips both (~1 ms for Docker's profile) when it was seen before."""
    if as_json:
        cached = _by_json.get(as_json)
        if cached is not None:
            return cached
    program = compile_program(describe(seccomp))
    if as_json:
        _by_json[as_json] = program
    return program


def compile_program(description: FilterDescription) -> Program:
    """Compile the description to BPF with libseccomp (~20 ms for Docker's profile; cached per
    process); run this in the parent, before fork."""
    cached = _compiled.get(description)
    if cached is not None:
        return cached
    from ketch.linux import seccomp as linux_seccomp

    try:
        program = _compiled[description] = Program(linux_seccomp.compile_bpf(description), description.flags)
        return program
    except OSError as exc:
        if not exc.errno:  # libseccomp.so.2 could not be loaded
            raise Unsupported(f"seccomp needs libseccomp: {exc}") from exc
        raise SetupFailed(f"compiling the seccomp filter: {exc.strerror}", exc.errno) from exc


def install(program: Program) -> None:
    """Load the filter on the calling thread (every thread with TSYNC); the child calls this before exec."""
    from ketch.linux import seccomp as linux_seccomp

    try:
        linux_seccomp.load_bpf(program.bpf, program.flags)
    except OSError as exc:
        raise SetupFailed(f"loading the seccomp filter: {exc.strerror}", exc.errno or 0) from exc
