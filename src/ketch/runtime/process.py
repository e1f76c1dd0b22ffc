"""The process that runs in a container (init or exec): planned from the spec, applied before execve.

`plan()` is pure and runs in the runtime's own process (it may be slow: it compiles seccomp);
`finalize()` and `execute()` run in the forked child, inside the container's namespaces.
"""

from __future__ import annotations

import errno
import os
import resource

from ketch.errors import InvalidArgument, SetupFailed
from ketch.oci.runtime import Process, Seccomp
from ketch.record import Record, replace
from ketch.runtime import capabilities

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# setrlimit(2) resource numbers on Linux (the resource module lacks some, e.g. RLIMIT_LOCKS)
RLIMITS = {
    f"RLIMIT_{name}": number
    for number, name in enumerate(
        ("CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK", "AS", "LOCKS",
         "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME")
    )
}  # fmt: skip
_UNLIMITED = 2**64 - 1
_CAP_SYS_RESOURCE = 24


class CapSets(Record):
    bounding: int
    effective: int
    permitted: int
    inheritable: int
    ambient: int


class ProcessPlan(Record):
    args: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    umask: int
    terminal: bool
    console_size: tuple[int, int] | None
    caps: CapSets | None
    last_cap: int
    rlimits: tuple[tuple[int, int, int], ...]
    no_new_privs: bool
    oom_score_adj: int | None
    seccomp: bytes | None
    seccomp_flags: int


def _has_cap(cap: int) -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def plan_rlimits(proc: Process, warn: list[str]) -> tuple[tuple[int, int, int], ...]:
    """Rlimits as (resource, soft, hard); clamped to the host's hard limit where we cannot raise it."""
    out: list[tuple[int, int, int]] = []
    can_raise: bool | None = None
    for i, rl in enumerate(proc.rlimits):
        res = RLIMITS.get(rl.type)
        if res is None:
            raise InvalidArgument(f"process.rlimits[{i}].type: unknown rlimit {rl.type!r}")
        soft, hard = _from_spec(rl.soft), _from_spec(rl.hard)
        host_hard = resource.getrlimit(res)[1]
        if _above(hard, host_hard):
            if can_raise is None:
                can_raise = _has_cap(_CAP_SYS_RESOURCE)
            if not can_raise:
                warn.append(f"{rl.type} hard limit {rl.hard} clamped to the host's {host_hard}")
                hard = host_hard
                soft = hard if _above(soft, hard) else soft
        out.append((res, soft, hard))
    return tuple(out)


def _from_spec(value: int) -> int:
    return resource.RLIM_INFINITY if value >= _UNLIMITED or value < 0 else value


def _above(a: int, b: int) -> bool:
    inf = resource.RLIM_INFINITY
    return b != inf and (a == inf or a > b)


def plan_caps(proc: Process) -> tuple[CapSets | None, int]:
    top = capabilities.last_cap()
    if proc.capabilities is None:
        return None, top
    c = proc.capabilities
    path = "process.capabilities"
    return (
        CapSets(
            bounding=capabilities.mask(c.bounding, f"{path}.bounding", top),
            effective=capabilities.mask(c.effective, f"{path}.effective", top),
            permitted=capabilities.mask(c.permitted, f"{path}.permitted", top),
            inheritable=capabilities.mask(c.inheritable, f"{path}.inheritable", top),
            ambient=capabilities.mask(c.ambient, f"{path}.ambient", top),
        ),
        top,
    )


def check_lsm_labels(proc: Process, warn: list[str]) -> None:
    """Labels for an LSM this host does not run are skipped (runc does the same); an active one is refused."""
    for label, fs, name in (
        (proc.apparmor_profile, "/sys/kernel/security/apparmor", "process.apparmorProfile"),
        (proc.selinux_label, "/sys/fs/selinux/enforce", "process.selinuxLabel"),
    ):
        if not label:
            continue
        if os.path.exists(fs):
            from ketch.errors import Unsupported

            raise Unsupported(f"{name}: applying {label!r} is not implemented yet")
        warn.append(f"debug: {name} {label!r} skipped: the LSM is not active on this host")


def plan(proc: Process, seccomp: Seccomp | None, warn: list[str], seccomp_json: str = "") -> ProcessPlan:
    """`seccomp_json`: the spec's seccomp section as JSON text, if known (a cache key)."""
    check_lsm_labels(proc, warn)
    env: dict[str, str] = {}
    for item in proc.env:
        key, sep, value = item.partition("=")
        if sep and key:
            env[key] = value
    caps, top = plan_caps(proc)
    if caps is not None and caps.ambient & ~(caps.inheritable & caps.permitted):
        # the kernel only raises ambient caps that are permitted and inheritable; runc skips the rest too
        caps = replace(caps, ambient=caps.ambient & caps.inheritable & caps.permitted)
    bpf, flags = None, 0
    if seccomp is not None:
        from ketch.runtime import seccomp as seccomp_plan

        program = seccomp_plan.program_for(seccomp, seccomp_json)
        bpf, flags = program.bpf, program.flags
    return ProcessPlan(
        args=proc.args,
        env=env,
        cwd=proc.cwd,
        uid=proc.user.uid,
        gid=proc.user.gid,
        groups=proc.user.additional_gids,
        umask=0o022 if proc.user.umask is None else proc.user.umask,
        terminal=proc.terminal,
        console_size=proc.console_size,
        caps=caps,
        last_cap=top,
        rlimits=plan_rlimits(proc, warn),
        no_new_privs=proc.no_new_privileges,
        oom_score_adj=proc.oom_score_adj,
        seccomp=bpf,
        seccomp_flags=flags,
    )


# --- acting: runs in the child, inside the container ------------------------------------------


def lookup(args0: str, env: dict[str, str]) -> str:
    """Resolve the program like execvp(3) would, in the container's root, with its PATH."""
    if "/" in args0:
        if not os.path.exists(args0):
            raise SetupFailed(f"exec: {args0!r}: no such file or directory", errno.ENOENT)
        if os.path.isdir(args0) or not os.access(args0, os.X_OK):
            raise SetupFailed(f"exec: {args0!r}: permission denied", errno.EACCES)
        return args0
    for d in env.get("PATH", DEFAULT_PATH).split(":"):
        candidate = os.path.join(d or ".", args0)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise SetupFailed(f'exec: "{args0}": executable file not found in $PATH', errno.ENOENT)


def set_oom_score_adj(p: ProcessPlan) -> None:
    if p.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(p.oom_score_adj))


def _switch_user(p: ProcessPlan, setgroups_allowed: bool) -> None:
    from ketch.linux import syscalls as sc

    sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    if setgroups_allowed:
        os.setgroups(list(p.groups))
    os.setresgid(p.gid, p.gid, p.gid)
    os.setresuid(p.uid, p.uid, p.uid)
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)


def _apply_caps(caps: CapSets, top: int) -> None:
    from ketch.linux import syscalls as sc

    sc.capset(caps.effective, caps.permitted, caps.inheritable)
    for cap in range(top + 1):
        if caps.ambient >> cap & 1:
            sc.ambient_raise(cap)


def _drop_bounding(caps: CapSets, top: int) -> None:
    from ketch.linux import syscalls as sc

    for cap in range(top + 1):
        if not caps.bounding >> cap & 1:
            sc.capbset_drop(cap)


def _load_seccomp(p: ProcessPlan) -> None:
    if p.seccomp is not None:
        from ketch.linux import seccomp as lsec

        lsec.load_bpf(p.seccomp, p.seccomp_flags)


def finalize(p: ProcessPlan, setgroups_allowed: bool) -> str:
    """Everything up to execve that may fail visibly: returns the resolved program path."""
    from ketch.linux import syscalls as sc

    for res, soft, hard in p.rlimits:
        resource.setrlimit(res, (soft, hard))
    try:  # as root, before seccomp: a profile may deny getcwd(2), a user may lack search rights
        os.chdir(p.cwd)
    except OSError as exc:
        raise SetupFailed(
            f"chdir to cwd ({p.cwd!r}) set in config.json failed: {exc.strerror}", exc.errno
        ) from exc
    _check_cwd_inside()
    if p.no_new_privs:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    else:
        _load_seccomp(p)  # needs CAP_SYS_ADMIN without no_new_privs: before the caps go
    if p.caps is not None:
        _drop_bounding(p.caps, p.last_cap)
    _switch_user(p, setgroups_allowed)
    if p.caps is not None:
        _apply_caps(p.caps, p.last_cap)
    os.umask(p.umask)
    return lookup(p.args[0], p.env)


def _check_cwd_inside() -> None:
    """A cwd reached through a leaked host fd lies outside the root: getcwd(3) then fails (CVE-2024-21626)."""
    try:
        cwd = os.getcwd()
    except FileNotFoundError as exc:
        raise SetupFailed("current working directory is outside of the container root", errno.ENOENT) from exc
    if not cwd.startswith("/"):
        raise SetupFailed("current working directory is outside of the container root", errno.ENOENT)


def execute(p: ProcessPlan, path: str) -> None:
    """The last steps: seccomp as late as possible when no_new_privs allows it, then execve."""
    if p.no_new_privs:
        _load_seccomp(p)
    os.execve(path, list(p.args), p.env)
