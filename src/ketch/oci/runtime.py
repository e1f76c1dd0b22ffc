"""Typed, validated view of an OCI runtime-spec config.json (spec 1.1) and state.json.

Parsing is strict: a missing or mistyped field raises InvalidArgument naming the
field by its JSON path (``process.user.uid: expected an integer``).
"""

from __future__ import annotations

from ketch.errors import InvalidArgument
from ketch.record import Record, field

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~2 ms to import; annotations here are never evaluated
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")
    Json = dict[str, Any]

OCI_VERSION = "1.1.0"

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")


# --- small typed readers; each names the JSON path of the field it reads ---------------------


def _fail(path: str, what: str) -> InvalidArgument:
    return InvalidArgument(f"{path}: {what}")


def _at(path: str, key: str) -> str:
    """The JSON path of `key` under `path` ("" is the document itself)."""
    return f"{path}.{key}" if path else key


def _get(d: Json, key: str, default: Any) -> Any:
    """d[key], or `default` when absent or null; a present value of the wrong type is kept (and refused)."""
    value = d.get(key)
    return default if value is None else value


def _obj(value: Any, path: str) -> Json:
    if not isinstance(value, dict):
        raise _fail(path, "expected an object")
    return value


def _sub(d: Json, key: str, path: str) -> Json:
    """An optional nested object: {} when absent."""
    return _obj(_get(d, key, {}), _at(path, key))


def _str(d: Json, key: str, path: str, default: str | None = None) -> str:
    value = _get(d, key, default)
    if value is None:
        raise _fail(_at(path, key), "required string is missing")
    if not isinstance(value, str):
        raise _fail(_at(path, key), "expected a string")
    return value


def _int(d: Json, key: str, path: str, default: int | None = None) -> int:
    value = _get(d, key, default)
    if value is None:
        raise _fail(_at(path, key), "required integer is missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(_at(path, key), "expected an integer")
    return value


def _opt_int(d: Json, key: str, path: str) -> int | None:
    return None if d.get(key) is None else _int(d, key, path)


def _bool(d: Json, key: str, path: str) -> bool:
    value = _get(d, key, False)
    if not isinstance(value, bool):
        raise _fail(_at(path, key), "expected a boolean")
    return value


def _strs(d: Json, key: str, path: str) -> tuple[str, ...]:
    value = _get(d, key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(_at(path, key), "expected an array of strings")
    return tuple(value)


def _ints(d: Json, key: str, path: str) -> tuple[int, ...]:
    value = _get(d, key, [])
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _fail(_at(path, key), "expected an array of integers")
    return tuple(value)


def _list(d: Json, key: str, path: str, item: Callable[[Json, str], T]) -> tuple[T, ...]:
    value = _get(d, key, [])
    where = _at(path, key)
    if not isinstance(value, list):
        raise _fail(where, "expected an array")
    return tuple(item(_obj(v, f"{where}[{i}]"), f"{where}[{i}]") for i, v in enumerate(value))


def _str_map(d: Json, key: str, path: str) -> dict[str, str]:
    value = _sub(d, key, path)
    if not all(isinstance(v, str) for v in value.values()):
        raise _fail(_at(path, key), "expected an object of strings")
    return dict(value)


# --- the spec ----------------------------------------------------------------------------------


class User(Record):
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: tuple[int, ...] = ()

    @classmethod
    def from_json(cls, d: Json, path: str) -> User:
        return cls(
            uid=_int(d, "uid", path),
            gid=_int(d, "gid", path),
            umask=_opt_int(d, "umask", path),
            additional_gids=_ints(d, "additionalGids", path),
        )


class Capabilities(Record):
    bounding: tuple[str, ...] = ()
    effective: tuple[str, ...] = ()
    inheritable: tuple[str, ...] = ()
    permitted: tuple[str, ...] = ()
    ambient: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, d: Json, path: str) -> Capabilities:
        return cls(
            *(_strs(d, k, path) for k in ("bounding", "effective", "inheritable", "permitted", "ambient"))
        )


class Rlimit(Record):
    type: str
    hard: int
    soft: int

    @classmethod
    def from_json(cls, d: Json, path: str) -> Rlimit:
        return cls(_str(d, "type", path), _int(d, "hard", path), _int(d, "soft", path))


class Process(Record):
    args: tuple[str, ...]
    cwd: str
    env: tuple[str, ...] = ()
    user: User = field(default_factory=User)
    terminal: bool = False
    console_size: tuple[int, int] | None = None
    capabilities: Capabilities | None = None
    rlimits: tuple[Rlimit, ...] = ()
    no_new_privileges: bool = False
    apparmor_profile: str = ""
    selinux_label: str = ""
    oom_score_adj: int | None = None

    @classmethod
    def from_json(cls, d: Json, path: str = "process") -> Process:
        args = _strs(d, "args", path)
        if not args:
            raise _fail(f"{path}.args", "must name the program to run")
        cwd = _str(d, "cwd", path)
        if not cwd.startswith("/"):
            raise _fail(f"{path}.cwd", f"must be an absolute path, not {cwd!r}")
        size = None
        if d.get("consoleSize") is not None:
            cs = _obj(d["consoleSize"], f"{path}.consoleSize")
            size = (_int(cs, "height", f"{path}.consoleSize"), _int(cs, "width", f"{path}.consoleSize"))
        caps = d.get("capabilities")
        return cls(
            args=args,
            cwd=cwd,
            env=_strs(d, "env", path),
            user=User.from_json(_sub(d, "user", path), f"{path}.user"),
            terminal=_bool(d, "terminal", path),
            console_size=size,
            capabilities=None
            if caps is None
            else Capabilities.from_json(_obj(caps, f"{path}.capabilities"), f"{path}.capabilities"),
            rlimits=_list(d, "rlimits", path, Rlimit.from_json),
            no_new_privileges=_bool(d, "noNewPrivileges", path),
            apparmor_profile=_str(d, "apparmorProfile", path, ""),
            selinux_label=_str(d, "selinuxLabel", path, ""),
            oom_score_adj=_opt_int(d, "oomScoreAdj", path),
        )


class Root(Record):
    path: str
    readonly: bool = False

    @classmethod
    def from_json(cls, d: Json, path: str = "root") -> Root:
        return cls(_str(d, "path", path), _bool(d, "readonly", path))


class Mount(Record):
    destination: str
    type: str = ""
    source: str = ""
    options: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, d: Json, path: str) -> Mount:
        if d.get("uidMappings") or d.get("gidMappings"):
            raise _fail(path, "id-mapped mounts are not supported")
        dest = _str(d, "destination", path)
        if not dest.startswith("/"):
            raise _fail(f"{path}.destination", f"must be an absolute path, not {dest!r}")
        return cls(dest, _str(d, "type", path, ""), _str(d, "source", path, ""), _strs(d, "options", path))


class Hook(Record):
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None

    @classmethod
    def from_json(cls, d: Json, path: str) -> Hook:
        hook = cls(
            _str(d, "path", path), _strs(d, "args", path), _strs(d, "env", path), _opt_int(d, "timeout", path)
        )
        if hook.timeout is not None and hook.timeout <= 0:
            raise _fail(f"{path}.timeout", "must be greater than zero")
        return hook


HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


class Hooks(Record):
    by_kind: dict[str, tuple[Hook, ...]] = field(default_factory=dict)

    def __getitem__(self, kind: str) -> tuple[Hook, ...]:
        return self.by_kind.get(kind, ())

    @classmethod
    def from_json(cls, d: Json, path: str = "hooks") -> Hooks:
        return cls({k: _list(d, k, path, Hook.from_json) for k in HOOK_KINDS if d.get(k) is not None})


class IDMapping(Record):
    container_id: int
    host_id: int
    size: int

    @classmethod
    def from_json(cls, d: Json, path: str) -> IDMapping:
        return cls(_int(d, "containerID", path), _int(d, "hostID", path), _int(d, "size", path))


class Namespace(Record):
    type: str
    path: str = ""

    @classmethod
    def from_json(cls, d: Json, path: str) -> Namespace:
        ns = cls(_str(d, "type", path), _str(d, "path", path, ""))
        if ns.type not in NAMESPACE_TYPES:
            raise _fail(f"{path}.type", f"unknown namespace {ns.type!r}")
        return ns


class Device(Record):
    path: str
    type: str
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None

    @classmethod
    def from_json(cls, d: Json, path: str) -> Device:
        dev = cls(
            _str(d, "path", path),
            _str(d, "type", path),
            _int(d, "major", path, 0),
            _int(d, "minor", path, 0),
            _opt_int(d, "fileMode", path),
            _opt_int(d, "uid", path),
            _opt_int(d, "gid", path),
        )
        if dev.type not in ("c", "b", "u", "p"):
            raise _fail(f"{path}.type", f"unknown device type {dev.type!r}")
        return dev


class SeccompArg(Record):
    index: int
    value: int
    op: str
    value_two: int = 0

    @classmethod
    def from_json(cls, d: Json, path: str) -> SeccompArg:
        return cls(
            _int(d, "index", path), _int(d, "value", path), _str(d, "op", path), _int(d, "valueTwo", path, 0)
        )


class SyscallRule(Record):
    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[SeccompArg, ...] = ()

    @classmethod
    def from_json(cls, d: Json, path: str) -> SyscallRule:
        return cls(
            _strs(d, "names", path),
            _str(d, "action", path),
            _opt_int(d, "errnoRet", path),
            _list(d, "args", path, SeccompArg.from_json),
        )


class Seccomp(Record):
    default_action: str
    default_errno_ret: int | None = None
    architectures: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    syscalls: tuple[SyscallRule, ...] = ()

    @classmethod
    def from_json(cls, d: Json, path: str = "linux.seccomp") -> Seccomp:
        if d.get("listenerPath"):
            raise _fail(f"{path}.listenerPath", "seccomp notify listeners are not supported")
        return cls(
            _str(d, "defaultAction", path),
            _opt_int(d, "defaultErrnoRet", path),
            _strs(d, "architectures", path),
            _strs(d, "flags", path),
            _list(d, "syscalls", path, SyscallRule.from_json),
        )


class Linux(Record):
    namespaces: tuple[Namespace, ...] = ()
    uid_mappings: tuple[IDMapping, ...] = ()
    gid_mappings: tuple[IDMapping, ...] = ()
    devices: tuple[Device, ...] = ()
    cgroups_path: str = ""
    resources: Json = field(default_factory=dict)
    sysctl: dict[str, str] = field(default_factory=dict)
    seccomp: Seccomp | None = None
    rootfs_propagation: str = ""
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    mount_label: str = ""
    personality: str = ""
    time_offsets: tuple[tuple[str, int, int], ...] = ()  # (clock, secs, nanosecs)

    def namespace(self, kind: str) -> Namespace | None:
        return next((ns for ns in self.namespaces if ns.type == kind), None)

    @classmethod
    def from_json(cls, d: Json, path: str = "linux") -> Linux:
        nss = _list(d, "namespaces", path, Namespace.from_json)
        kinds = [ns.type for ns in nss]
        dup = next((k for k in kinds if kinds.count(k) > 1), None)
        if dup:
            raise _fail(f"{path}.namespaces", f"namespace {dup!r} is listed twice")
        if d.get("intelRdt"):
            raise _fail(f"{path}.intelRdt", "Intel RDT is not supported")
        seccomp = d.get("seccomp")
        personality = ""
        if d.get("personality"):
            personality = _str(_obj(d["personality"], f"{path}.personality"), "domain", f"{path}.personality")
            if personality not in ("LINUX", "LINUX32"):
                raise _fail(f"{path}.personality.domain", f"unknown domain {personality!r}")
        return cls(
            namespaces=nss,
            uid_mappings=_list(d, "uidMappings", path, IDMapping.from_json),
            gid_mappings=_list(d, "gidMappings", path, IDMapping.from_json),
            devices=_list(d, "devices", path, Device.from_json),
            cgroups_path=_str(d, "cgroupsPath", path, ""),
            resources=_sub(d, "resources", path),
            sysctl=_str_map(d, "sysctl", path),
            seccomp=None if seccomp is None else Seccomp.from_json(_obj(seccomp, f"{path}.seccomp")),
            rootfs_propagation=_str(d, "rootfsPropagation", path, ""),
            masked_paths=_strs(d, "maskedPaths", path),
            readonly_paths=_strs(d, "readonlyPaths", path),
            mount_label=_str(d, "mountLabel", path, ""),
            personality=personality,
            time_offsets=_time_offsets(_sub(d, "timeOffsets", path), f"{path}.timeOffsets"),
        )


def _time_offsets(d: Json, path: str) -> tuple[tuple[str, int, int], ...]:
    out = []
    for clock, value in d.items():
        if clock not in ("monotonic", "boottime"):
            raise _fail(f"{path}.{clock}", "only monotonic and boottime clocks can be offset")
        offset = _obj(value, f"{path}.{clock}")
        out.append(
            (
                clock,
                _int(offset, "secs", f"{path}.{clock}", 0),
                _int(offset, "nanosecs", f"{path}.{clock}", 0),
            )
        )
    return tuple(out)


class Spec(Record):
    oci_version: str
    root: Root
    process: Process | None = None
    hostname: str = ""
    domainname: str = ""
    mounts: tuple[Mount, ...] = ()
    hooks: Hooks = field(default_factory=Hooks)
    annotations: dict[str, str] = field(default_factory=dict)
    linux: Linux = field(default_factory=Linux)

    @classmethod
    def from_json(cls, d: Any) -> Spec:
        d = _obj(d, "config.json")
        version = _str(d, "ociVersion", "")
        if not version.startswith("1."):
            raise _fail("ociVersion", f"unsupported version {version!r}")
        proc = d.get("process")
        return cls(
            oci_version=version,
            root=Root.from_json(_obj(d.get("root"), "root")),
            process=None if proc is None else Process.from_json(_obj(proc, "process")),
            hostname=_str(d, "hostname", "", ""),
            domainname=_str(d, "domainname", "", ""),
            mounts=_list(d, "mounts", "", Mount.from_json),
            hooks=Hooks.from_json(_sub(d, "hooks", "")),
            annotations=_str_map(
                d,
                "annotations",
                "",
            ),
            linux=Linux.from_json(_sub(d, "linux", "")),
        )


def validate(spec: Spec) -> None:
    """Cross-field rules that a single field cannot check."""
    linux = spec.linux
    user_ns = linux.namespace("user")
    if (spec.hostname or spec.domainname) and linux.namespace("uts") is None:
        raise _fail("hostname", "setting a hostname needs a private uts namespace")
    if (
        linux.sysctl
        and linux.namespace("network") is None
        and any(k.startswith("net.") for k in linux.sysctl)
    ):
        raise _fail("linux.sysctl", "net.* sysctls need a private network namespace")
    time_ns = linux.namespace("time")
    if linux.time_offsets and (time_ns is None or time_ns.path):
        raise _fail("linux.timeOffsets", "clock offsets need a new time namespace")
    if (linux.uid_mappings or linux.gid_mappings) and user_ns is None:
        raise _fail("linux.uidMappings", "id mappings need a user namespace")
    if user_ns is not None and not user_ns.path and not (linux.uid_mappings and linux.gid_mappings):
        raise _fail("linux.uidMappings", "a new user namespace needs uidMappings and gidMappings")
    if spec.process is None:
        return
    for i, rl in enumerate(spec.process.rlimits):
        if rl.soft > rl.hard:
            raise _fail(f"process.rlimits[{i}]", "soft limit is above the hard limit")


def state_json(container_id: str, status: str, pid: int, bundle: str, annotations: dict[str, str]) -> Json:
    """The state object of the runtime spec, as `state` prints it and hooks read it."""
    state: Json = {"ociVersion": OCI_VERSION, "id": container_id, "status": status, "bundle": bundle}
    if status != "stopped" or pid:
        state["pid"] = pid
    if annotations:
        state["annotations"] = annotations
    return state
