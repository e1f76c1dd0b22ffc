"""Run options + image config -> the OCI config.json a container runs with, by Docker's rules.

Pure: everything read from the host (the resolved user, volume directories, device numbers, the
init binary, the cgroup version) comes in through SpecInputs, so one input gives one spec. The
defaults follow moby's oci/defaults.go and daemon/oci_linux.go (Docker Engine 28):

- mounts /proc, /dev (tmpfs 755, 64 MiB), /dev/pts, /sys (ro), /sys/fs/cgroup (ro), /dev/mqueue,
  /dev/shm (64 MiB); user mounts replace a default at the same place, a user /dev replaces all of
  /dev/*; user mounts are ordered parents first
- Docker's 14 capabilities in the bounding, effective and permitted sets (none inheritable or
  ambient, since Docker 20.10.14); --cap-add/--cap-drop take ALL, names with or without CAP_
- Docker's masked and readonly paths; Docker's device cgroup allow list plus --device
- namespaces mount, network (not with --network host), uts, pid, ipc, and cgroup on cgroup v2;
  user with the engine's userns-remap mappings (uid_mappings), then no ping_group_range sysctl
- Docker's default seccomp profile (engine.seccomp_default) for the final capabilities, none for
  --privileged or seccomp=unconfined, a Docker-format profile from seccomp=<file or JSON>
- --privileged: every capability, no masked/readonly paths, /sys and cgroupfs writable, no
  seccomp, the device rule "a rwm" and whatever host devices the caller lists in device_nodes
- no rlimits unless --ulimit (the container inherits the caller's limits, as it would dockerd's)
- oomScoreAdj 0; net.ipv4.ping_group_range and ip_unprivileged_port_start opened up in a private
  network namespace (Docker's default sysctls)
- --init: the caller's init binary bind-mounted read-only at /dev/init and put before the command
  (Docker uses /sbin/docker-init; /dev is a tmpfs, so a read-only or /sbin-less image still works)
"""

from __future__ import annotations

import os
import stat

from ketch.engine.options import (
    Device,
    Health,
    Mount,
    RunOptions,
    check,
    clean_path,
    merge_tmpfs_options,
    parse_security_opts,
    quote,
)
from ketch.engine.runconfig import command_of, env_of, hostname_of, workdir_of
from ketch.errors import InvalidArgument, NotFound, Unsupported
from ketch.oci.runtime import OCI_VERSION
from ketch.record import Record, field
from ketch.runtime import capabilities as _caps

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    Json = dict[str, Any]

DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)  # fmt: skip
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)  # fmt: skip
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
# (type, major, minor, allow): null, zero, urandom, random, tty, console allowed; fuse (10:229) denied
DEFAULT_DEVICE_RULES = (
    ("c", 1, 5, True), ("c", 1, 3, True), ("c", 1, 9, True), ("c", 1, 8, True), ("c", 5, 0, True),
    ("c", 5, 1, True), ("c", 10, 229, False),
)  # fmt: skip
DEFAULT_SYSCTLS = {"net.ipv4.ping_group_range": "0 2147483647", "net.ipv4.ip_unprivileged_port_start": "0"}
SHM_SIZE = 64 << 20
INIT_PATH = "/dev/init"
ANNOTATION_ID = "io.github.ketch.container.id"
ANNOTATION_NAME = "io.github.ketch.container.name"
# mounts a read-only rootfs leaves writable (daemon/oci_linux.go WithMounts)
_WRITABLE_WHEN_READONLY = ("/proc", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev")


class DeviceNode(Record):
    """A device to create in the container: `path` inside it, numbers from the host's node."""

    path: str
    type: str  # "c" | "b"
    major: int
    minor: int
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0
    permissions: str = "rwm"


class SpecInputs(Record):
    options: RunOptions
    image_config: dict[str, Any]  # the image config's "config" object (Env, Cmd, WorkingDir...)
    container_id: str
    rootfs: str
    user: tuple[int, int, tuple[int, ...], str] = (0, 0, (), "/")  # users.resolve_user()
    hosts_file: str = ""  # host files bind-mounted at /etc/...; "" leaves the image's
    resolv_file: str = ""
    hostname_file: str = ""
    volume_sources: dict[str, str] = field(default_factory=dict)  # target -> host dir, see volume_mounts()
    cgroups_path: str = ""
    arch: str = ""  # seccomp architecture (uname machine or SCMP_ARCH_*); "" is the host's
    cgroup_v2: bool = True
    init_path: str = ""  # the host's init binary for --init
    # resolve_devices(options.devices), plus host_devices() when privileged
    device_nodes: tuple[DeviceNode, ...] = ()
    hostname: str = ""  # "" is hostname_of(options, container_id)
    network_path: str = ""  # a network namespace to join (--network container:)
    last_cap: int | None = None  # the kernel's highest capability; None reads /proc
    kernel: str = ""  # uname release for seccomp minKernel rules; "" is the host's
    default_sysctls: bool = True  # False where they cannot be set (a rootless user namespace)
    environ: dict[str, str] | None = None  # for -e VAR lookups; None is os.environ
    # a user namespace of its own with these (container id, host id, size) ranges (userns-remap)
    uid_mappings: tuple[tuple[int, int, int], ...] = ()
    gid_mappings: tuple[tuple[int, int, int], ...] = ()


# --- process: capabilities (command, environment and user: engine.runconfig) ----------------------


def _normalize_caps(names: Iterable[str]) -> list[str]:
    out = []
    for name in names:
        cap = name.upper()
        if cap != "ALL":
            cap = cap if cap.startswith("CAP_") else "CAP_" + cap
            if cap not in _caps.NUMBERS:
                raise InvalidArgument(f"unknown capability: {quote(cap)}")
        out.append(cap)
    return out


def capabilities_of(options: RunOptions, last_cap: int | None = None) -> list[str]:
    """caps.TweakCapabilities: privileged gets all; add ALL minus drops; drop ALL then adds; else
    Docker's defaults minus drops plus adds. "All" is every capability this kernel knows."""
    top = _caps.last_cap() if last_cap is None else last_cap
    every = list(_caps.NAMES[: top + 1])
    if last_cap is None:  # on the host: only what we hold can be given (Docker: the bounding set)
        held = _bounding_set()
        every = [c for i, c in enumerate(every) if held >> i & 1]
    if options.privileged:
        return every
    if not options.cap_add and not options.cap_drop:
        return list(DEFAULT_CAPABILITIES)
    drop, add = _normalize_caps(options.cap_drop), _normalize_caps(options.cap_add)
    if "ALL" in add:
        caps = [c for c in every if c not in drop]
    elif "ALL" in drop:
        caps = add
    else:
        caps = [c for c in DEFAULT_CAPABILITIES if c not in drop] + add
    return list(dict.fromkeys(caps))


def _bounding_set() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return (1 << 64) - 1


def _rlimits(options: RunOptions) -> list[Json]:
    by_name = {u.name: u for u in options.ulimits}  # a later --ulimit of the same name wins
    infinity = (1 << 64) - 1  # RLIM_INFINITY, what Docker's -1 becomes as a uint64
    return [
        {
            "type": "RLIMIT_" + u.name.upper(),
            "hard": infinity if u.hard < 0 else u.hard,
            "soft": infinity if u.soft < 0 else u.soft,
        }
        for u in by_name.values()
    ]


def _process(inputs: SpecInputs, caps: list[str], hostname: str, no_new_privs: bool) -> Json:
    o, image = inputs.options, inputs.image_config
    uid, gid, groups, home = inputs.user
    args = command_of(o, image)
    if o.init:
        args = [INIT_PATH, "--", *args]
    user: Json = {"uid": uid, "gid": gid}
    if groups:
        user["additionalGids"] = list(groups)
    process: Json = {
        "terminal": o.tty,
        "user": user,
        "args": args,
        "env": env_of(o, image, hostname, home or "/", inputs.environ),
        "cwd": workdir_of(o, image),
        "capabilities": {"bounding": caps, "effective": list(caps), "permitted": list(caps)},
        "noNewPrivileges": no_new_privs,
        "oomScoreAdj": 0,
    }
    rlimits = _rlimits(o)
    if rlimits:
        process["rlimits"] = rlimits
    return process


# --- mounts ------------------------------------------------------------------------------------


def default_mounts() -> list[Json]:
    """moby's DefaultLinuxSpec mounts, /dev/shm sized as --shm-size's default."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={SHM_SIZE}"]},
    ]  # fmt: skip


def volume_mounts(options: RunOptions, image_config: Json) -> tuple[Mount, ...]:
    """The volumes the caller must provide (in SpecInputs.volume_sources, by target): named and
    anonymous ones from -v/--mount, then the image's Volumes no user mount covers (anonymous)."""
    user = tuple(m for m in options.mounts if m.type == "volume")
    taken = {m.target for m in options.mounts}
    image = tuple(
        Mount("volume", "", target)
        for target in dict.fromkeys(clean_path(t) for t in image_config.get("Volumes") or {})
        if target not in taken and target != "/"
    )
    return user + image


def _user_mount(m: Mount, inputs: SpecInputs) -> Json:
    if m.type == "tmpfs":
        data = ["noexec", "nosuid", "nodev", "rprivate"] + (["ro"] if m.readonly else []) + list(m.options)
        return {
            "destination": m.target,
            "type": "tmpfs",
            "source": "tmpfs",
            "options": merge_tmpfs_options(data),
        }
    source = m.source
    if m.type == "volume":
        source = inputs.volume_sources.get(m.target, "")
        if not source:
            raise NotFound(f"no volume was prepared for {m.target}")
    options = ["bind" if "bind-nonrecursive" in m.options else "rbind"] + (["ro"] if m.readonly else [])
    propagation = [o for o in m.options if o not in ("nocopy", "bind-nonrecursive")]
    if m.type == "bind":
        options += propagation or ["rprivate"]
    return {"destination": m.target, "type": "bind", "source": source, "options": options}


def _network_files(inputs: SpecInputs, taken: set[str]) -> list[Mount]:
    files = (("/etc/resolv.conf", inputs.resolv_file), ("/etc/hostname", inputs.hostname_file),
             ("/etc/hosts", inputs.hosts_file))  # fmt: skip
    return [
        Mount("bind", path, target, readonly=inputs.options.read_only)
        for target, path in files
        if path and target not in taken
    ]


def _depth(m: Mount) -> int:
    return len(m.target.rstrip("/").split("/"))


def mounts_of(inputs: SpecInputs) -> list[Json]:
    """Defaults (minus what user mounts replace), the init binary, then user mounts parents first."""
    o = inputs.options
    user = _user_mounts(inputs)
    targets = {m.target for m in user}
    mounts = [
        m
        for m in default_mounts()
        if m["destination"] not in targets
        and not ("/dev" in targets and m["destination"].startswith("/dev/"))
    ]
    if o.init:
        mounts.append(_init_mount(inputs.init_path))
    for m in mounts:
        if o.read_only and m["destination"] not in _WRITABLE_WHEN_READONLY and "ro" not in m["options"]:
            m["options"].append("ro")
        if o.privileged and m["type"] in ("sysfs", "cgroup"):
            m["options"] = [x for x in m["options"] if x != "ro"]
    return mounts + [_user_mount(m, inputs) for m in user]


def _user_mounts(inputs: SpecInputs) -> list[Mount]:
    """-v/--mount/--tmpfs, the image's volumes and the network files, ordered parents first."""
    user = list(inputs.options.mounts)
    taken = {m.target for m in user}
    user += [m for m in volume_mounts(inputs.options, inputs.image_config) if m.target not in taken]
    user += _network_files(inputs, taken)
    user.sort(key=_depth)  # stable: equal depths keep the user's order
    return user


def _init_mount(init_path: str) -> Json:
    if not init_path:
        raise Unsupported("--init needs an init binary (docker-init, tini or catatonit) and none was found")
    return {"destination": INIT_PATH, "type": "bind", "source": init_path, "options": ["bind", "ro"]}


def _rootfs_propagation(options: RunOptions) -> str:
    """A shared or slave bind needs the rootfs to propagate too (WithMounts)."""
    modes = {o for m in options.mounts if m.type == "bind" for o in m.options}
    if modes & {"shared", "rshared"}:
        return "shared"
    if modes & {"slave", "rslave"}:
        return "rslave"
    return ""


# --- devices and resources ---------------------------------------------------------------------


def resolve_devices(
    devices: Iterable[Device], stat_path: Callable[[str], os.stat_result] = os.stat
) -> tuple[DeviceNode, ...]:
    """--device entries as nodes (reads the host): a device node, or every device under a directory."""
    out: list[DeviceNode] = []
    for dev in devices:
        host = os.path.realpath(dev.host) if os.path.islink(dev.host) else dev.host
        node = _node(host, dev.container, dev.permissions, stat_path)
        if node is not None:
            out.append(node)
            continue
        found = [
            n
            for path in _walk(host)
            if (n := _node(path, dev.container + path[len(host) :], dev.permissions, stat_path)) is not None
        ]
        if not found:
            raise InvalidArgument(
                f"error gathering device information while adding custom device {quote(dev.host)}: "
                "not a device node"
            )
        out += found
    return tuple(out)


def _node(
    path: str, target: str, permissions: str, stat_path: Callable[[str], os.stat_result]
) -> DeviceNode | None:
    try:
        st = stat_path(path)
    except OSError:
        return None
    kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else ""
    if not kind:
        return None
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return DeviceNode(target, kind, major, minor, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, permissions)


def _walk(top: str) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, files in os.walk(top) for f in files)


_HOST_DEV_SKIP = ("pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev")


def host_devices(root: str = "/dev") -> tuple[DeviceNode, ...]:
    """Every char/block device of the host, for --privileged (runc's HostDevices skips)."""
    out: list[DeviceNode] = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not (d == root and x in _HOST_DEV_SKIP)]
        for f in sorted(files):
            path = os.path.join(d, f)
            node = None if path == os.path.join(root, "console") else _node(path, path, "rwm", os.lstat)
            if node is not None:
                out.append(node)
    return tuple(out)


def _device_rules(options: RunOptions, nodes: tuple[DeviceNode, ...]) -> list[Json]:
    if options.privileged:
        return [{"allow": True, "access": "rwm"}]
    rules: list[Json] = [{"allow": False, "access": "rwm"}]
    rules += [
        {"allow": a, "type": t, "major": ma, "minor": mi, "access": "rwm"}
        for t, ma, mi, a in DEFAULT_DEVICE_RULES
    ]
    rules += [
        {"allow": True, "type": n.type, "major": n.major, "minor": n.minor, "access": n.permissions}
        for n in nodes
    ]
    return rules


def resources_of(options: RunOptions, nodes: tuple[DeviceNode, ...] = ()) -> Json:
    """linux.resources: device rules, memory, cpu (--cpus as quota over a 100 ms period), pids."""
    o = options
    resources: Json = {"devices": _device_rules(o, nodes)}
    memory: Json = {}
    if o.memory > 0:
        memory["limit"] = o.memory
    if o.memory_reservation > 0:
        memory["reservation"] = o.memory_reservation
    swap = o.memory_swap or (2 * o.memory if o.memory > 0 else 0)  # Docker: swap as large as memory
    if swap:
        memory["swap"] = swap
    if memory:
        resources["memory"] = memory
    cpu: Json = {}
    if o.cpu_shares > 0:
        cpu["shares"] = o.cpu_shares
    if o.nano_cpus > 0:
        cpu["quota"], cpu["period"] = o.nano_cpus * 100_000 // 1_000_000_000, 100_000
    if o.cpuset_cpus:
        cpu["cpus"] = o.cpuset_cpus
    if cpu:
        resources["cpu"] = cpu
    if o.pids_limit:
        resources["pids"] = {"limit": o.pids_limit if o.pids_limit > 0 else -1}
    return resources


def _device_json(n: DeviceNode) -> Json:
    return {"path": n.path, "type": n.type, "major": n.major, "minor": n.minor,
            "fileMode": n.file_mode, "uid": n.uid, "gid": n.gid}  # fmt: skip


# --- seccomp -----------------------------------------------------------------------------------

# uname machine -> (OCI architecture, moby's arch name used in profile includes/excludes)
_ARCHES = {
    "x86_64": ("SCMP_ARCH_X86_64", "amd64"), "amd64": ("SCMP_ARCH_X86_64", "amd64"),
    "i386": ("SCMP_ARCH_X86", "x86"), "i686": ("SCMP_ARCH_X86", "x86"), "x86": ("SCMP_ARCH_X86", "x86"),
    "aarch64": ("SCMP_ARCH_AARCH64", "arm64"), "arm64": ("SCMP_ARCH_AARCH64", "arm64"),
    "armv7l": ("SCMP_ARCH_ARM", "arm"), "armv6l": ("SCMP_ARCH_ARM", "arm"), "arm": ("SCMP_ARCH_ARM", "arm"),
    "ppc64le": ("SCMP_ARCH_PPC64LE", "ppc64le"), "ppc64": ("SCMP_ARCH_PPC64", "ppc64"),
    "s390x": ("SCMP_ARCH_S390X", "s390x"), "s390": ("SCMP_ARCH_S390", "s390"),
    "riscv64": ("SCMP_ARCH_RISCV64", "riscv64"), "mips64": ("SCMP_ARCH_MIPS64", "mips64"),
}  # fmt: skip


def _arch_names(arch: str) -> tuple[str, str]:
    machine = arch or os.uname().machine
    if machine in _ARCHES:
        return _ARCHES[machine]
    native = next((n for o, n in _ARCHES.values() if o == machine), "")
    return machine, native


def _kernel_version(release: str) -> tuple[int, int]:
    major, _, rest = release.partition(".")
    minor = rest[: len(rest) - len(rest.lstrip("0123456789"))]
    return (int(major), int(minor)) if major.isdigit() and minor else (0, 0)


def _selected(rule: Json, caps: list[str], native: str, kernel: tuple[int, int]) -> bool:
    """setupSeccomp's filters: excluded arches and caps, required arches, caps and kernel."""
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if native in (exc.get("arches") or []) or any(c in caps for c in exc.get("caps") or []):
        return False
    if inc.get("arches") and native not in inc["arches"]:
        return False
    if not all(c in caps for c in inc.get("caps") or []):
        return False
    return not inc.get("minKernel") or kernel >= _kernel_version(str(inc["minKernel"]))


def seccomp_from_docker(profile: Json, caps: list[str], arch: str = "", kernel: str = "") -> Json | None:
    """A Docker-format seccomp profile (archMap, names/name, includes/excludes) as OCI linux.seccomp,
    as moby's setupSeccomp converts it; None when it names no default action and no syscalls."""
    if not isinstance(profile, dict):
        raise InvalidArgument("seccomp profile: expected a JSON object")
    if not profile.get("defaultAction") and not profile.get("syscalls"):
        return None
    if profile.get("architectures") and profile.get("archMap"):
        raise InvalidArgument(
            "both 'architectures' and 'archMap' are specified in the seccomp profile, use either 'architectures' or 'archMap'"
        )
    oci_arch, native = _arch_names(arch)
    out: Json = {
        k: profile[k]
        for k in ("defaultAction", "defaultErrnoRet", "architectures", "flags")
        if profile.get(k) is not None
    }
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == oci_arch:
            out["architectures"] = [oci_arch, *(entry.get("subArchitectures") or [])]
    version = _kernel_version(kernel or os.uname().release)
    out["syscalls"] = [
        _syscall(r, out) for r in profile.get("syscalls") or [] if _selected(r, caps, native, version)
    ]
    return out


def _syscall(rule: Json, profile: Json) -> Json:
    names = list(rule.get("names") or [])
    if rule.get("name"):
        if names:
            raise InvalidArgument("use either 'name' or 'names'")
        names = [rule["name"]]
    out: Json = {"names": names, "action": rule.get("action", "")}
    errno_ret = rule.get("errnoRet")
    if errno_ret is None and out["action"] == profile.get("defaultAction"):
        errno_ret = profile.get("defaultErrnoRet")
    if errno_ret is not None:
        out["errnoRet"] = errno_ret
    if rule.get("args"):
        out["args"] = rule["args"]
    return out


def seccomp_of(options: RunOptions, caps: list[str], arch: str = "", kernel: str = "") -> Json | None:
    """None for --privileged or seccomp=unconfined; Docker's default; or the given profile."""
    choice = parse_security_opts(options.security_opt).seccomp
    if options.privileged or choice == "unconfined":
        return None
    if choice in ("", "builtin"):
        from ketch.engine import seccomp_default  # large tables: load only when a spec is made

        extra = {"kernel": kernel} if kernel else {}
        return seccomp_default.default_profile(caps, arch, **extra)
    text = choice
    if not choice.lstrip().startswith("{"):
        try:
            with open(choice) as f:  # options.resolve_files() normally inlined it already
                text = f.read()
        except OSError as exc:
            raise InvalidArgument(
                f"opening seccomp profile ({choice}) failed: {exc.strerror or exc}"
            ) from None
    try:
        import json  # only for a --security-opt seccomp=profile: `ketch run` should not pay for it

        profile = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"Decoding seccomp profile failed: {exc}") from None
    return seccomp_from_docker(profile, caps, arch, kernel)


# --- the spec ----------------------------------------------------------------------------------


def namespaces_of(
    options: RunOptions, cgroup_v2: bool = True, network_path: str = "", user: bool = False
) -> list[Json]:
    kinds = (
        ["mount", "network", "uts", "pid", "ipc"]
        + (["cgroup"] if cgroup_v2 else [])
        + (["user"] if user else [])
    )
    if options.network == "host":
        kinds.remove("network")  # the host's network namespace is shared
    return [
        {"type": k, "path": network_path} if k == "network" and network_path else {"type": k} for k in kinds
    ]


def _linux(inputs: SpecInputs, caps: list[str]) -> Json:
    o = inputs.options
    user = bool(inputs.uid_mappings)
    linux: Json = {
        "namespaces": namespaces_of(o, inputs.cgroup_v2, inputs.network_path, user),
        "resources": resources_of(o, inputs.device_nodes),
        "devices": [_device_json(n) for n in {n.path: n for n in inputs.device_nodes}.values()],
    }
    if user:
        linux["uidMappings"] = [{"containerID": c, "hostID": h, "size": n} for c, h, n in inputs.uid_mappings]
        linux["gidMappings"] = [{"containerID": c, "hostID": h, "size": n} for c, h, n in inputs.gid_mappings]
    if inputs.cgroups_path:
        linux["cgroupsPath"] = inputs.cgroups_path
    if not o.privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
    if inputs.default_sysctls and o.network != "host" and not inputs.network_path:
        linux["sysctl"] = dict(DEFAULT_SYSCTLS)
        if user:  # moby: "We cannot set up ping socket support in a user namespace"
            del linux["sysctl"]["net.ipv4.ping_group_range"]
    seccomp = seccomp_of(o, caps, inputs.arch, inputs.kernel)
    if seccomp is not None:
        linux["seccomp"] = seccomp
    propagation = _rootfs_propagation(o)
    if propagation:
        linux["rootfsPropagation"] = propagation
    return linux


def container_spec(inputs: SpecInputs) -> dict[str, Any]:
    """The config.json for this container; it passes ketch.oci.runtime's Spec.from_json and validate."""
    o = inputs.options
    check(o)
    caps = capabilities_of(o, inputs.last_cap)
    hostname = inputs.hostname or hostname_of(o, inputs.container_id)
    no_new_privs = parse_security_opts(o.security_opt).no_new_privileges
    return {
        "ociVersion": OCI_VERSION,
        "process": _process(inputs, caps, hostname, no_new_privs),
        "root": {"path": inputs.rootfs, "readonly": o.read_only},
        "hostname": hostname,
        "mounts": mounts_of(inputs),
        "annotations": {ANNOTATION_ID: inputs.container_id, ANNOTATION_NAME: o.name},
        "linux": _linux(inputs, caps),
    }


# --- what the monitor needs from the same inputs -------------------------------------------------


def stop_signal_of(options: RunOptions, image_config: Json) -> str:
    return options.stop_signal or image_config.get("StopSignal") or "SIGTERM"


def health_of(options: RunOptions, image_config: Json) -> Health | None:
    """The healthcheck to run: --health-* over the image's HEALTHCHECK; None when disabled or absent.
    Image durations are Go nanoseconds; a zero one takes Docker's default."""
    if options.no_healthcheck:
        return None
    image = image_config.get("Healthcheck") or {}
    test = tuple(options.health.test if options.health and options.health.test else image.get("Test") or ())
    if not test or test[0] == "NONE":
        return None
    if options.health is not None:
        return Health(test, options.health.interval, options.health.timeout, options.health.retries,
                      options.health.start_period)  # fmt: skip
    return Health(test, _seconds(image, "Interval", 30.0), _seconds(image, "Timeout", 30.0),
                  image.get("Retries") or 3, _seconds(image, "StartPeriod", 0.0))  # fmt: skip


def _seconds(healthcheck: Json, key: str, default: float) -> float:
    nanoseconds = healthcheck.get(key) or 0
    return nanoseconds / 1e9 if nanoseconds else default
