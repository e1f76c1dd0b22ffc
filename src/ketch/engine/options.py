"""Typed `run`/`create` options and the parsers of their flags, with Docker's syntax and wording.

Parsers are pure (text in, record out) and raise InvalidArgument with the message Docker prints.
Flag-level errors read as pflag words them: ``invalid argument "10xb" for "-m, --memory" flag:
invalid suffix: 'xb'`` (go-units >= 0.5, what Docker 24+ ships). Errors the Docker daemon raises
(-v, --tmpfs, --restart, resource checks) keep the daemon's wording, without a flag prefix.

Two steps touch files, as the docker CLI does on the client side before it sends the config:
`parse_env_file` and `resolve_files` (env files, -e VAR lookups, seccomp profile paths).

Every `ketch run` imports this module, so it imports only what is nearly free: no `re` (with
`enum`, ~9 ms), and `csv`, `json` and `fractions` (which pulls in `decimal` and `re`) only in
the parsers that need them. The syntax checks are small scanners; "digit" in them means what
`\\d` means to `re` (any Unicode decimal digit, str.isdecimal), as the code they replace did.
"""

from __future__ import annotations

import math
import os
import posixpath

from ketch.errors import InvalidArgument, Unsupported
from ketch.record import Record, field, replace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any


class Mount(Record):
    """A user mount after parsing -v/--mount/--tmpfs.

    options: for bind/volume the propagation ("rslave", ...), "nocopy" and "bind-nonrecursive";
    for tmpfs the mount data in order ("size=64m", "mode=1777", "exec", ...). Label modes
    ("z", "Z") and consistency modes ("cached", ...) are accepted and dropped.
    create_source: -v creates a missing bind source (Docker's legacy rule); --mount refuses it.
    """

    type: str  # "bind" | "volume" | "tmpfs"
    source: str  # host path (bind), volume name ("" = anonymous), "" for tmpfs
    target: str
    readonly: bool = False
    options: tuple[str, ...] = ()
    create_source: bool = False


class Ulimit(Record):
    name: str  # "nofile", as --ulimit spells it; -1 is unlimited
    soft: int
    hard: int


class Device(Record):
    host: str
    container: str
    permissions: str = "rwm"


class Health(Record):
    test: tuple[str, ...]  # ("CMD-SHELL", "curl -f localhost") | ("CMD", ...) | ("NONE",)
    interval: float = 30
    timeout: float = 30
    retries: int = 3
    start_period: float = 0


class RunOptions(Record):
    """What `ketch run`/`create` was asked for; sizes in bytes, cpus in billionths.

    network: "bridge" (Docker's default, also "default"), "none", "host", "container:<name|id>"
    or a user-defined network's name or id.
    """

    image: str
    command: tuple[str, ...] = ()
    name: str = ""
    detach: bool = False
    interactive: bool = False
    tty: bool = False
    remove: bool = False
    env: tuple[str, ...] = ()
    env_files: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    user: str = ""
    entrypoint: tuple[str, ...] | None = None  # None: the image's; () or ("",): none
    hostname: str = ""
    restart: str = "no"
    mounts: tuple[Mount, ...] = ()
    read_only: bool = False
    memory: int = 0
    memory_swap: int = 0  # memory + swap; -1 unlimited; 0: twice the memory (Docker's default)
    memory_reservation: int = 0
    nano_cpus: int = 0
    cpu_shares: int = 0
    cpuset_cpus: str = ""
    pids_limit: int = 0  # 0 unset, negative unlimited
    ulimits: tuple[Ulimit, ...] = ()
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    security_opt: tuple[str, ...] = ()
    devices: tuple[Device, ...] = ()
    init: bool = False
    stop_signal: str = ""
    stop_timeout: int | None = None
    health: Health | None = None
    no_healthcheck: bool = False
    network: str = "bridge"
    publish: tuple[str, ...] = ()  # -p specs, parsed by ketch.network.ports at each start
    publish_all: bool = False
    expose: tuple[str, ...] = ()  # "80/tcp"
    ip: str = ""
    ip6: str = ""
    mac_address: str = ""
    aliases: tuple[str, ...] = ()  # --network-alias
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    add_hosts: tuple[str, ...] = ()  # "name:ip" (ip may be host-gateway)
    userns: str = ""
    pull: str = "missing"
    platform: str = ""
    log_driver: str = ""  # "": the engine's default (engine.json "log-driver", else json-file)
    log_opts: dict[str, str] = field(default_factory=dict)  # --log-opt KEY=VALUE


class SecurityOptions(Record):
    no_new_privileges: bool = False
    seccomp: str = ""  # "" (default profile), "builtin", "unconfined", a path, or the profile's JSON
    apparmor: str = ""  # accepted and ignored: ketch has no AppArmor support
    labels: tuple[str, ...] = ()  # SELinux label options: accepted and ignored


def quote(text: str) -> str:
    """Go's %q, near enough for messages: double quotes with backslash escapes."""
    from _json import encode_basestring  # what json.dumps(text, ensure_ascii=False) calls

    return encode_basestring(text)


def invalid(value: str, flag: str, reason: str) -> InvalidArgument:
    """pflag's wording for a flag value its parser refused."""
    return InvalidArgument(f"invalid argument {quote(value)} for {quote(flag)} flag: {reason}")


# --- numbers: sizes, cpus, durations -------------------------------------------------------------

_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}


def _unsigned(text: str) -> str:
    """`text` without one leading "+" or "-"."""
    return text[1:] if text[:1] in ("+", "-") else text


def _is_int(text: str) -> bool:
    """[+-]?\\d+"""
    return _unsigned(text).isdecimal()


def _is_float(text: str) -> bool:
    """[+-]?(\\d+\\.?\\d*|\\.\\d+)([eE][+-]?\\d+)?"""
    mantissa, e, exponent = _unsigned(text).replace("E", "e").partition("e")
    whole, _, frac = mantissa.partition(".")
    if not (whole or frac) or not all(part.isdecimal() for part in (whole, frac) if part):
        return False
    return not e or _is_int(exponent)


def _go_float(num: str) -> float:
    if not _is_float(num):
        raise ValueError(f"strconv.ParseFloat: parsing {quote(num)}: invalid syntax")
    value = float(num)
    if not math.isfinite(value):
        raise ValueError(f"strconv.ParseFloat: parsing {quote(num)}: value out of range")
    return value


def ram_in_bytes(text: str, units: Mapping[str, int] | None = None) -> int:
    """go-units' RAMInBytes: "512k", "1.5g", "100", "10 MiB"; raises ValueError with its message.
    With `units` (_DECIMAL), go-units' FromHumanSize: the same syntax, powers of 1000."""
    units = _BINARY if units is None else units
    sep = max(text.rfind(c) for c in "0123456789. ")
    if sep == -1:
        raise ValueError(f"invalid size: '{text}'")
    num, sfx = (text[:sep], text[sep + 1 :]) if text[sep] == " " else (text[: sep + 1], text[sep + 1 :])
    size = _go_float(num)
    if size < 0:
        raise ValueError(f"invalid size: '{text}'")
    if not sfx:
        return int(size)
    if len(sfx) > 3:
        raise ValueError(f"invalid suffix: '{sfx}'")
    sfx = sfx.lower()
    if sfx == "b":
        return int(size)
    if sfx[0] not in units or sfx[1:] not in ("", "b", "ib"):
        raise ValueError(f"invalid suffix: '{sfx}'")
    return int(size * units[sfx[0]])


def parse_size(text: str, flag: str, *, unlimited: bool = False) -> int:
    """A size flag (-m, --memory-reservation, --shm-size...); `unlimited` lets "-1" through (--memory-swap)."""
    if unlimited and text == "-1":
        return -1
    try:
        return ram_in_bytes(text)
    except ValueError as exc:
        raise invalid(text, flag, str(exc)) from None


def parse_cpus(text: str) -> int:
    """--cpus as nano cpus: "1.5" -> 1_500_000_000; fractions like "3/2" too (Go's big.Rat syntax)."""
    from fractions import Fraction

    try:
        if text != text.strip() or "_" in text:
            raise ValueError(text)
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise invalid(text, "--cpus", f"failed to parse {text} as a rational number") from None
    nano = value * 1_000_000_000
    if nano.denominator != 1:
        raise invalid(text, "--cpus", "value is too precise")
    if nano < 0:
        # the daemon's range check; its upper bound (the host's cpu count) is the engine's to apply
        raise InvalidArgument("Range of CPUs is from 0.01 to the number of CPUs available")
    return int(nano)


# seconds per unit, as (numerator, denominator)
_DURATION_UNITS = {
    "ns": (1, 10**9), "us": (1, 10**6), "µs": (1, 10**6), "μs": (1, 10**6),
    "ms": (1, 1000), "s": (1, 1), "m": (60, 1), "h": (3600, 1),
}  # fmt: skip


def _digits_end(text: str, start: int) -> int:
    end = start
    while end < len(text) and text[end].isdecimal():
        end += 1
    return end


def _unit_end(text: str, start: int) -> int:
    end = start
    while end < len(text) and text[end] != "." and not text[end].isdecimal():
        end += 1
    return end


def _duration_part(text: str) -> tuple[str, str, str, str]:
    """One step of Go's duration lexer: (whole digits, fraction digits, unit, the rest); the
    unit is the run of anything but digits and "." (checked by the caller)."""
    end = _digits_end(text, 0)
    whole, frac = text[:end], ""
    if text[end : end + 1] == ".":
        start, end = end + 1, _digits_end(text, end + 1)
        frac = text[start:end]
    unit_end = _unit_end(text, end)
    return whole, frac, text[end:unit_end], text[unit_end:]


def go_duration(text: str) -> float:
    """Go's time.ParseDuration ("1m30s", "500ms", "-1.5h") in seconds; ValueError with Go's message."""
    bad = ValueError(f"time: invalid duration {quote(text)}")
    rest = text[1:] if text[:1] in ("-", "+") else text
    sign = -1 if text[:1] == "-" else 1
    if rest == "0":
        return 0.0
    if not rest:
        raise bad
    from fractions import Fraction

    total = Fraction(0)
    while rest:
        whole, frac, unit, after = _duration_part(rest)
        if not whole and not frac:
            raise bad
        if not unit:
            raise ValueError(f"time: missing unit in duration {quote(text)}")
        if unit not in _DURATION_UNITS:
            raise ValueError(f"time: unknown unit {quote(unit)} in duration {quote(text)}")
        number = Fraction(int(whole or "0")) + (Fraction(int(frac), 10 ** len(frac)) if frac else 0)
        total += number * Fraction(*_DURATION_UNITS[unit])
        rest = after
    return float(sign * total)


def parse_duration(text: str, flag: str) -> float:
    """A Go duration flag (--health-interval, --stop-timeout-like): seconds as a float."""
    try:
        return go_duration(text)
    except ValueError as exc:
        raise invalid(text, flag, str(exc)) from None


# --- mounts: -v, --mount, --tmpfs ------------------------------------------------------------------

_RW_MODES = ("rw", "ro")
_LABEL_MODES = ("z", "Z")
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
_CONSISTENCY = ("consistent", "cached", "delegated", "default")
_ASCII_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_VOLUME_NAME_CHARS = _ASCII_ALNUM | frozenset("_.-")
_MODE_KINDS = (
    ("rw", _RW_MODES),
    ("label", _LABEL_MODES),
    ("propagation", PROPAGATIONS),
    ("copy", ("nocopy",)),
    ("consistency", _CONSISTENCY),
)


def clean_path(path: str) -> str:
    """Go's path.Clean: normalised, "." for empty, a single leading slash."""
    cleaned = posixpath.normpath(path) if path else "."
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _valid_mode(mode: str) -> bool:
    """linuxValidMountMode: comma-separated words, at most one of each kind."""
    if not mode:
        return True
    kinds: list[str] = []
    for word in mode.split(","):
        kind = next((k for k, words in _MODE_KINDS if word in words), None)
        if kind is None or kind in kinds:
            return False
        kinds.append(kind)
    return True


def _spec_error(raw: str, kind: str, reason: str) -> InvalidArgument:
    return InvalidArgument(
        f"invalid volume specification: '{raw}': invalid mount config for type {quote(kind)}: {reason}"
    )


def _check_target(target: str, fail: Callable[[str], InvalidArgument]) -> str:
    if not target.startswith("/"):
        raise fail(f"invalid mount path: '{target}' mount path must be absolute")
    target = clean_path(target)
    if target == "/":
        raise fail("invalid specification: destination can't be '/'")
    return target


def _check_volume_name(name: str) -> None:
    valid = len(name) > 1 and name[0] in _ASCII_ALNUM and _VOLUME_NAME_CHARS.issuperset(name)
    if name and not valid:
        raise InvalidArgument(
            f"create {name}: {quote(name)} includes invalid characters for a local volume name, only "
            f'"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path'
        )


def parse_volume(text: str) -> Mount:
    """-v: "/host:/ctr[:mode]", "name:/ctr[:mode]" or "/ctr" (an anonymous volume)."""
    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise InvalidArgument(f"invalid volume specification: '{text}'")
    if len(parts) == 2 and _valid_mode(parts[1]):
        raise InvalidArgument(f"invalid volume specification: '{text}'")  # "/ctr:ro": no source
    source, target = ("", parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    mode = parts[2] if len(parts) == 3 else ""
    if not _valid_mode(mode):
        raise InvalidArgument(f"invalid mode: {mode}")
    kind = "bind" if source.startswith("/") else "volume"
    words = mode.split(",") if mode else []
    target = _check_target(target, lambda reason: _spec_error(text, kind, reason))
    propagation = [w for w in words if w in PROPAGATIONS]
    if kind == "volume":
        if propagation:
            raise _spec_error(text, kind, "field BindOptions must not be specified")
        _check_volume_name(source)
    options = tuple(propagation) + (("nocopy",) if "nocopy" in words else ())
    return Mount(
        kind,
        clean_path(source) if kind == "bind" else source,
        target,
        readonly="ro" in words,
        options=options,
        create_source=kind == "bind",
    )


_MOUNT_FLAGS = {
    "readonly": "ro",
    "ro": "ro",
    "volume-nocopy": "nocopy",
    "bind-nonrecursive": "bind-nonrecursive",
}
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def _go_bool(text: str) -> bool | None:
    return True if text in _GO_TRUE else False if text in _GO_FALSE else None


class _MountFields(Record, frozen=False):
    type: str = "volume"
    source: str = ""
    target: str = ""
    readonly: bool = False
    options: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)  # "volume", "bind", "tmpfs": the option families used


def parse_mount(text: str) -> Mount:
    """--mount: CSV of key=value (type, source/src, target/dst/destination, readonly/ro, bind-*, volume-*, tmpfs-*)."""

    def fail(reason: str) -> InvalidArgument:
        return invalid(text, "--mount", reason)

    import csv

    try:
        fields = next(csv.reader([text], strict=True))
    except (csv.Error, StopIteration) as exc:
        raise fail(f"parse error: {exc}") from None
    m = _MountFields()
    for item in fields:
        _mount_field(m, item, fail)
    if not m.target:
        raise fail("target is required")
    for family in m.prefixes:
        if family != m.type:
            raise fail(f"cannot mix '{family}-*' options with mount type '{m.type}'")
    return _mount_of(m)


def _mount_field(m: _MountFields, item: str, fail: Callable[[str], InvalidArgument]) -> None:
    key, eq, value = item.partition("=")
    key = key.lower()
    if not eq:
        if key not in _MOUNT_FLAGS:
            raise fail(f"invalid field '{item}' must be a key=value pair")
        value = "true"
    if key == "type":
        m.type = value.lower()
    elif key in ("source", "src"):
        m.source = os.path.abspath(value) if value == "." or value.startswith("./") else value
    elif key in ("target", "dst", "destination"):
        m.target = value
    elif key in ("readonly", "ro", "volume-nocopy", "bind-nonrecursive"):
        flag = _go_bool(value)
        if flag is None:
            raise fail(f"invalid value for {key}: {value}")
        _set_flag(m, _MOUNT_FLAGS[key], flag)
    elif key == "bind-propagation":
        _family(m, "bind").append(value.lower())
    elif key == "tmpfs-size":
        try:
            _family(m, "tmpfs").append(f"size={_tmpfs_size(ram_in_bytes(value))}")
        except ValueError:
            raise fail(f"invalid value for {key}: {value}") from None
    elif key == "tmpfs-mode":
        if not value or not _OCTAL.issuperset(value) or int(value, 8) >= 1 << 32:
            raise fail(f"invalid value for {key}: {value}")
        _family(m, "tmpfs").append(f"mode={int(value, 8):o}")
    elif key in ("consistency", "volume-driver", "volume-label", "volume-opt"):
        _check_volume_extra(m, key, value, fail)
    else:
        raise fail(f"unexpected key '{key}' in '{item}'")


_OCTAL = frozenset("01234567")


def _family(m: _MountFields, family: str) -> list[str]:
    if family not in m.prefixes:
        m.prefixes.append(family)
    return m.options


def _set_flag(m: _MountFields, word: str, on: bool) -> None:
    if word == "ro":
        m.readonly = on
        return
    opts = _family(m, "volume" if word == "nocopy" else "bind")
    if word in opts:
        opts.remove(word)
    if on:
        opts.append(word)


def _check_volume_extra(
    m: _MountFields, key: str, value: str, fail: Callable[[str], InvalidArgument]
) -> None:
    if key == "consistency":
        return  # macOS-only tuning; Docker on Linux ignores it too
    _family(m, "volume")
    if key == "volume-driver" and value not in ("", "local"):
        raise Unsupported(f"volume driver {value!r} is not supported: only the local driver is")
    if key == "volume-opt":
        raise Unsupported("volume options (volume-opt) are not supported")


def _tmpfs_size(size: int) -> str:
    """ConvertTmpfsOptions: the largest of k/m/g that divides the size evenly."""
    suffix = ""
    for unit in "kmg":
        if size % 1024:
            break
        size, suffix = size // 1024, unit
    return f"{size}{suffix}"


def _mount_of(m: _MountFields) -> Mount:
    def fail(reason: str) -> InvalidArgument:
        return InvalidArgument(f"invalid mount config for type {quote(m.type)}: {reason}")

    if m.type not in ("bind", "volume", "tmpfs"):
        raise fail("mount type unknown")
    target = _check_target(m.target, fail)
    propagation = [o for o in m.options if o not in ("nocopy", "bind-nonrecursive") and "=" not in o]
    for mode in propagation:
        if mode not in PROPAGATIONS:
            raise fail(f"invalid propagation mode: {mode}")
    if m.type == "bind" and not m.source:
        raise fail("field Source must not be empty")
    if m.type == "bind" and not m.source.startswith("/"):
        raise fail(f"invalid mount path: '{m.source}' mount path must be absolute")
    if m.type == "tmpfs" and m.source:
        raise fail("field Source must not be specified")
    if m.type == "volume":
        _check_volume_name(m.source)
    source = clean_path(m.source) if m.type == "bind" else m.source
    return Mount(m.type, source, target, m.readonly, tuple(m.options))


# mount(8) flags tmpfs data may carry, grouped by the flag they set: later ones override earlier
# ones of the same group (moby/sys/mount MergeTmpfsOptions); propagation is one group
_TMPFS_FLAG_GROUPS = (
    ("ro", "rw"), ("suid", "nosuid"), ("dev", "nodev"), ("exec", "noexec"), ("sync", "async"),
    ("dirsync",), ("remount",), ("mand", "nomand"), ("atime", "noatime"), ("diratime", "nodiratime"),
    ("bind",), ("rbind",), ("relatime", "norelatime"), ("strictatime", "nostrictatime"),
    ("unbindable", "runbindable", *PROPAGATIONS),
)  # fmt: skip
_TMPFS_FLAGS = {word: i for i, group in enumerate(_TMPFS_FLAG_GROUPS) for word in group}
_TMPFS_DATA = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol")


def merge_tmpfs_options(options: Iterable[str]) -> list[str]:
    """MergeTmpfsOptions: drop "defaults", keep the last of each flag group and of each data key."""
    seen: set[object] = set()
    out: list[str] = []
    for option in reversed(list(options)):
        if option == "defaults":
            continue
        key: object = _TMPFS_FLAGS.get(option)
        if key is None:
            name, eq, _ = option.partition("=")
            if not eq or name not in _TMPFS_DATA:
                parts = " ".join(quote(p) for p in option.split("=", 1))
                raise InvalidArgument(f"invalid tmpfs option [{parts}]")
            key = "data:" + name
        if key not in seen:
            seen.add(key)
            out.insert(0, option)
    return out


def parse_tmpfs(text: str) -> Mount:
    """--tmpfs: "/run" or "/run:rw,size=64m,mode=1777" (options are mount(8) tmpfs options)."""
    target, _, data = text.partition(":")
    target = _check_target(target, InvalidArgument)
    options = tuple(o for o in data.split(",") if o) if data else ()
    merge_tmpfs_options(options)  # refuse unknown options now rather than at start
    rw = [o for o in options if o in ("ro", "rw")]
    return Mount("tmpfs", "", target, readonly=bool(rw) and rw[-1] == "ro", options=options)


# --- ulimits, devices, env files, restart policies ---------------------------------------------

ULIMIT_NAMES = (
    "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss",
    "rtprio", "rttime", "sigpending", "stack",
)  # fmt: skip


def _go_int(text: str) -> int:
    if not _is_int(text):
        raise ValueError(f"strconv.ParseInt: parsing {quote(text)}: invalid syntax")
    value = int(text)
    if not -(1 << 63) <= value < 1 << 63:
        raise ValueError(f"strconv.ParseInt: parsing {quote(text)}: value out of range")
    return value


def parse_ulimit(text: str) -> Ulimit:
    """--ulimit: "nofile=1024:2048" (soft:hard) or "nproc=512" (both); -1 is unlimited."""
    name, eq, values = text.partition("=")
    if not eq:
        raise invalid(text, "--ulimit", f"invalid ulimit argument: {text}")
    if name not in ULIMIT_NAMES:
        raise invalid(text, "--ulimit", f"invalid ulimit type: {name}")
    limits = values.split(":")
    if len(limits) > 2:
        raise invalid(
            text,
            "--ulimit",
            f"too many limit value arguments - {values}, can only have up to two, `soft[:hard]`",
        )
    try:
        soft = _go_int(limits[0])
        hard = _go_int(limits[1]) if len(limits) == 2 else soft
    except ValueError as exc:
        raise invalid(text, "--ulimit", str(exc)) from None
    # Docker lets soft=-1 (unlimited) pass with a finite hard limit; the kernel would refuse it
    if hard != -1 and (soft > hard or soft == -1):
        raise invalid(
            text, "--ulimit", f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
        )
    return Ulimit(name, soft, hard)


def _device_mode(mode: str) -> bool:
    return bool(mode) and len(set(mode)) == len(mode) and set(mode) <= set("rwm")


def parse_device(text: str) -> Device:
    """--device: "/dev/fuse", "/dev/sda:/dev/xvda", "/dev/sda:rw" or "/dev/sda:/dev/xvda:rwm"."""
    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise invalid(text, "--device", f"bad format for path: {text}")
    host, container, mode = parts[0], parts[0], "rwm"
    if len(parts) == 2:
        if _device_mode(parts[1]):
            mode = parts[1]
        else:
            container = parts[1]
    elif len(parts) == 3:
        container, mode = parts[1], parts[2]
        if not _device_mode(mode):
            raise invalid(text, "--device", f"bad mode specified: {mode}")
    if not container.startswith("/"):
        raise invalid(text, "--device", f"{container} is not an absolute path")
    if len(parts) == 1:
        host = clean_path(host)
    return Device(host, clean_path(container), mode)


def parse_env_text(data: bytes, name: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """The lines of an env file: comments and blank lines skipped, "VAR" alone taken from `environ`."""
    env = os.environ if environ is None else environ
    out: list[str] = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.removesuffix(b"\r")
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            line = raw.decode().lstrip()
        except UnicodeDecodeError:
            raise InvalidArgument(f"env file {name} contains invalid utf8 bytes at line {number}") from None
        if not line or line.startswith("#"):
            continue
        variable, eq, value = line.partition("=")
        variable = variable.lstrip(" \t")
        if " " in variable or "\t" in variable:
            raise InvalidArgument(f"poorly formatted environment: variable '{variable}' contains whitespaces")
        if not variable:
            raise InvalidArgument(f"poorly formatted environment: no variable name on line '{line}'")
        if eq:
            out.append(f"{variable}={value}")  # the value passes through untrimmed
        elif line.strip() in env:
            out.append(f"{line.strip()}={env[line.strip()]}")
    return out


def parse_env_file(text: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """--env-file: read the file named `text` by Docker's rules (see parse_env_text)."""
    try:
        with open(text, "rb") as f:
            data = f.read()
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise InvalidArgument(f"open {text}: {reason}") from None
    return parse_env_text(data, text, environ)


def parse_env(text: str, environ: Mapping[str, str] | None = None) -> str:
    """-e: "VAR=value" as is; "VAR" takes the caller's value, or stays bare (it unsets VAR then)."""
    name, eq, _ = text.partition("=")
    if not name:
        raise InvalidArgument(f"invalid environment variable: {text}")
    env = os.environ if environ is None else environ
    if not eq and name in env:
        return f"{name}={env[name]}"
    return text


RESTART_POLICIES = ("no", "always", "on-failure", "unless-stopped")


def parse_restart(text: str) -> tuple[str, int]:
    """--restart: "no", "always", "unless-stopped", "on-failure[:N]" -> (policy, maximum retries)."""
    if not text:
        return ("no", 0)
    name, colon, count = text.partition(":")
    if colon and not name:
        raise InvalidArgument("invalid restart policy format: no policy provided before colon")
    retries = 0
    if count:
        try:
            retries = _go_int(count)
        except ValueError:
            raise InvalidArgument(
                "invalid restart policy format: maximum retry count must be an integer"
            ) from None
    if name not in RESTART_POLICIES:
        raise InvalidArgument(
            f"invalid restart policy: unknown policy '{name}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
        )
    if name != "on-failure" and retries:
        tail = " and cannot be negative" if retries < 0 else ""
        raise InvalidArgument(
            f"invalid restart policy: maximum retry count can only be used with 'on-failure'{tail}"
        )
    if retries < 0:
        raise InvalidArgument("invalid restart policy: maximum retry count cannot be negative")
    return (name, retries)


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    """--label: "key=value" or "key" (an empty value); later ones win."""
    labels: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid label: {item!r}: the key is empty")
        labels[key] = value
    return labels


# --- security options --------------------------------------------------------------------------


def parse_security_opts(items: Iterable[str]) -> SecurityOptions:
    """--security-opt: no-new-privileges[=bool], seccomp=unconfined|builtin|<file>|<json>, apparmor=, label=."""
    out = SecurityOptions()
    for item in items:
        if item == "no-new-privileges":
            out = replace(out, no_new_privileges=True)
            continue
        sep = "=" if "=" in item else ":"
        key, found, value = item.partition(sep)
        if not found or not value:
            raise InvalidArgument(f"Invalid --security-opt: {quote(item)}")
        if key == "no-new-privileges":
            flag = _go_bool(value)
            if flag is None:
                raise InvalidArgument(f"invalid --security-opt 2: {quote(item)}")
            out = replace(out, no_new_privileges=flag)
        elif key == "seccomp":
            out = replace(out, seccomp=value)
        elif key == "apparmor":
            out = replace(out, apparmor=value)
        elif key == "label":
            out = replace(out, labels=(*out.labels, value))
        else:
            raise InvalidArgument(f"invalid --security-opt 2: {quote(item)}")
    return out


# --- logging: --log-driver, --log-opt --------------------------------------------------------------

LOG_DRIVERS = ("json-file", "none")
_JSON_FILE_OPTS = ("max-file", "max-size", "compress", "labels", "labels-regex", "env", "env-regex", "tag")
_BUILTIN_LOG_OPTS = ("mode", "max-buffer-size")  # dockerd takes these for every driver


class JsonFileSettings(Record):
    max_size: int = -1  # bytes (powers of 1000, go-units' FromHumanSize); -1: never rotate
    max_file: int = 1
    compress: bool = False


def parse_log_opts(items: Iterable[str]) -> dict[str, str]:
    """--log-opt KEY=VALUE, as the docker CLI reads them: a bare KEY has an empty value, the last wins."""
    opts: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        opts[key] = value
    return opts


def log_config(driver: str, opts: Mapping[str, str], engine: Mapping[str, Any]) -> dict[str, Any]:
    """HostConfig.LogConfig as dockerd makes it: the driver (engine.json's "log-driver" when not
    given, else json-file); when it is the engine's driver, engine.json's "log-opts" fill the
    options not given. Checked as dockerd checks it, so a bad one creates nothing."""
    default = engine.get("log-driver") or "json-file"
    defaults = engine.get("log-opts") or {}
    if not isinstance(default, str) or not isinstance(defaults, dict):
        raise InvalidArgument('engine.json: "log-driver" must be a string and "log-opts" an object')
    kind = driver or default
    config = dict(opts)
    if kind == default:
        for key, value in defaults.items():
            if not isinstance(value, str):  # daemon.json's rule: numbers and booleans quoted too
                raise InvalidArgument(f'engine.json: the value of log-opts "{key}" must be a string')
            config.setdefault(key, value)
    check_log_config(kind, config)
    return {"Type": kind, "Config": config}


def check_log_config(kind: str, config: Mapping[str, str]) -> None:
    """dockerd's ValidateLogOpts and the json-file driver's own checks, with their messages (dockerd
    checks the values only when the container starts; ketch refuses them at create)."""
    if kind == "none":
        return
    mode = config.get("mode", "")
    if mode not in ("", "blocking", "non-blocking"):
        raise InvalidArgument(f"logger: logging mode not supported: {mode}")
    if "max-buffer-size" in config:
        if mode != "non-blocking":
            raise InvalidArgument("logger: max-buffer-size option is only supported with 'mode=non-blocking'")
        try:
            ram_in_bytes(config["max-buffer-size"])
        except ValueError as exc:
            raise InvalidArgument(f"error parsing option max-buffer-size: {exc}") from None
    if kind not in LOG_DRIVERS:
        raise InvalidArgument(f"logger: no log driver named '{kind}' is registered")
    unknown = next((k for k in config if k not in _JSON_FILE_OPTS and k not in _BUILTIN_LOG_OPTS), None)
    if unknown is not None:
        raise InvalidArgument(f"unknown log opt '{unknown}' for json-file log driver")
    if mode == "non-blocking":
        raise Unsupported(
            "logger: mode=non-blocking is not supported: the monitor writes each line as it reads it"
        )
    json_file_settings(config)
    for key in ("labels-regex", "env-regex"):
        if config.get(key):
            import re

            try:
                re.compile(config[key])
            except re.error as exc:
                raise InvalidArgument(f"error parsing regexp: {exc}: `{config[key]}`") from None
    if config.get("tag"):
        from ketch.engine.logs import render_tag

        render_tag(config["tag"], {})


def json_file_settings(config: Mapping[str, str]) -> JsonFileSettings:
    """max-size, max-file and compress, with the json-file driver's messages."""
    max_size = -1
    if "max-size" in config:
        try:
            max_size = ram_in_bytes(config["max-size"], _DECIMAL)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        if max_size <= 0:
            raise InvalidArgument("max-size must be a positive number")
    max_file = 1
    if "max-file" in config:
        text = config["max-file"]
        if not _is_int(text) or not -(1 << 63) <= int(text) < 1 << 63:
            reason = "invalid syntax" if not _is_int(text) else "value out of range"
            raise InvalidArgument(f"strconv.Atoi: parsing {quote(text)}: {reason}")
        max_file = int(text)
        if max_file < 1:
            raise InvalidArgument("max-file cannot be less than 1")
    compress = False
    if "compress" in config:
        flag = _go_bool(config["compress"])
        if flag is None:
            raise InvalidArgument(f"strconv.ParseBool: parsing {quote(config['compress'])}: invalid syntax")
        if flag and (max_file == 1 or max_size == -1):
            raise InvalidArgument(
                "compress cannot be true when max-file is less than 2 or max-size is not set"
            )
        compress = flag
    return JsonFileSettings(max_size, max_file, compress)


# --- whole-options checks and the client-side file step -----------------------------------------

_MIN_MEMORY = 6 * 1024 * 1024


def _is_cpuset(text: str) -> bool:
    """\\d+(-\\d+)?(,\\d+(-\\d+)?)*: "0-3,6"."""
    for item in text.split(","):
        first, dash, last = item.partition("-")
        if not first.isdecimal() or (dash and not last.isdecimal()):
            return False
    return True


def check(options: RunOptions) -> None:
    """The checks Docker's CLI and daemon make on a whole configuration, with their messages."""
    policy, _ = parse_restart(options.restart)
    if options.remove and policy != "no":
        raise InvalidArgument("Conflicting options: --restart and --rm")
    _check_resources(options)
    _check_mounts(options)
    _check_process(options)
    _check_health(options)
    if options.pull not in ("missing", "always", "never"):
        raise InvalidArgument(
            f'invalid pull option: \'{options.pull}\': must be one of "always", "missing" or "never"'
        )
    check_network(options)
    if options.userns not in ("", "host"):  # a private one comes from the engine's userns-remap
        raise InvalidArgument("--userns: invalid USER mode")
    if options.platform:
        from ketch.oci.image import Platform

        Platform.parse(options.platform)
    if options.log_driver == "none" and options.log_opts:
        raise InvalidArgument("invalid logging opts for driver none")  # the docker CLI's check


def _check_mounts(o: RunOptions) -> None:
    targets = [m.target for m in o.mounts]
    duplicate = next((t for i, t in enumerate(targets) if t in targets[:i]), None)
    if duplicate:
        raise InvalidArgument(f"Duplicate mount point: {duplicate}")


def _check_process(o: RunOptions) -> None:
    if o.workdir and not o.workdir.startswith("/"):
        raise InvalidArgument(
            f"the working directory '{o.workdir}' is invalid, it needs to be an absolute path"
        )
    if o.stop_signal:
        _check_signal(o.stop_signal)
    parse_security_opts(o.security_opt)


def _check_resources(o: RunOptions) -> None:
    if o.memory and o.memory < _MIN_MEMORY:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if o.memory_swap > 0 and not o.memory:
        raise InvalidArgument("You should always set the Memory limit when using Memoryswap limit, see usage")
    if o.memory and 0 < o.memory_swap < o.memory:
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, see usage")
    if o.memory_reservation and o.memory_reservation < _MIN_MEMORY:
        raise InvalidArgument("Minimum memory reservation allowed is 6MB")
    if o.memory and o.memory_reservation and o.memory < o.memory_reservation:
        raise InvalidArgument("Minimum memory limit can not be less than memory reservation limit, see usage")
    if o.nano_cpus < 0:
        raise InvalidArgument("Range of CPUs is from 0.01 to the number of CPUs available")
    if o.cpu_shares < 0:
        raise InvalidArgument(f"invalid CPU shares ({o.cpu_shares}): value must not be negative")
    if o.cpuset_cpus and not _is_cpuset(o.cpuset_cpus):
        raise InvalidArgument(f"Invalid value {o.cpuset_cpus} for cpuset cpus")


def check_network(o: RunOptions) -> None:
    """The network flags make sense together (whether a named network exists is checked at create)."""
    mode = o.network
    if not mode:
        raise InvalidArgument("invalid network mode: empty")
    if mode.startswith("container:") and not mode.partition(":")[2]:
        raise InvalidArgument(f"invalid network mode: {mode}: a container name or id is needed")
    joins = mode.startswith("container:")
    if joins and o.hostname:
        raise InvalidArgument("conflicting options: hostname and the network mode")
    if joins and (o.publish or o.publish_all):
        raise InvalidArgument("conflicting options: port publishing and the container type network mode")
    if joins and (o.dns or o.dns_search or o.dns_options or o.add_hosts or o.mac_address):
        raise InvalidArgument("conflicting options: dns and the network mode")
    if (o.ip or o.ip6) and (joins or mode in ("bridge", "default", "host", "none")):
        raise InvalidArgument("user specified IP address is supported on user defined networks only")
    if o.aliases and (mode in ("bridge", "default", "host", "none") or joins):
        raise InvalidArgument(
            "network-scoped alias is supported only for containers in user defined networks"
        )
    if o.publish or o.expose:
        from ketch.network import ports

        for spec in o.publish:
            ports.parse(spec)
        ports.exposed(o.expose)
    for entry in o.add_hosts:
        name, sep, address = entry.partition(":")
        if not sep or not name or not address:
            raise InvalidArgument(
                f'invalid argument "{entry}" for "--add-host" flag: bad format for add-host'
            )
    if o.mac_address:
        parts = o.mac_address.split(":")
        if len(parts) != 6 or not all(len(p) == 2 and _is_hex(p) for p in parts):
            raise InvalidArgument(f"{o.mac_address} is not a valid mac address")


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _check_signal(text: str) -> None:
    from ketch.runtime.signals import parse_signal

    try:
        parse_signal(text)
    except InvalidArgument:
        raise InvalidArgument(f"Invalid signal: {text}") from None


def _check_health(o: RunOptions) -> None:
    h = o.health
    if h is None:
        return
    if o.no_healthcheck:
        raise InvalidArgument("--no-healthcheck conflicts with --health-* options")
    for value, flag in ((h.interval, "interval"), (h.timeout, "timeout"), (h.start_period, "start-period")):
        if value < 0:
            raise InvalidArgument(f"--health-{flag} cannot be negative")
    if h.retries < 0:
        raise InvalidArgument("--health-retries cannot be negative")


def resolve_files(options: RunOptions, environ: Mapping[str, str] | None = None) -> RunOptions:
    """What the docker CLI does before it sends a config: env files read, -e VAR looked up,
    seccomp profile files read into JSON. The result no longer depends on the caller's files."""
    env = [line for path in options.env_files for line in parse_env_file(path, environ)]
    env += [parse_env(e, environ) for e in options.env]
    security = tuple(_inline_seccomp(item) for item in options.security_opt)
    return replace(options, env=tuple(env), env_files=(), security_opt=security)


def _inline_seccomp(item: str) -> str:
    key, found, value = item.partition("=")
    if key != "seccomp" or not found or value in ("unconfined", "builtin") or value.lstrip().startswith("{"):
        return item
    import json

    try:
        with open(value, "rb") as f:
            profile = json.load(f)
    except OSError as exc:
        raise InvalidArgument(f"opening seccomp profile ({value}) failed: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InvalidArgument(f"compacting json for seccomp profile ({value}) failed: {exc}") from None
    return "seccomp=" + json.dumps(profile, separators=(",", ":"))
