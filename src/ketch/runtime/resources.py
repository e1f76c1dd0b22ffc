"""OCI linux.resources -> cgroup file writes, for cgroup v1 and v2 (pure; applied by cgroups.py).

Each write names the spec field it comes from, so a value the host refuses is reported as
`linux.resources.memory.limit: ...`. v1 writes go to the hierarchy of their controller; v2
writes all go to the one unified directory (controller "").
"""

from __future__ import annotations

from ketch.errors import InvalidArgument, Unsupported
from ketch.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Json = dict[str, Any]
ROOT = "linux.resources"

# runc's default device rules: what every container may use whatever the spec denies
DEFAULT_DEVICE_RULES = (
    ("c", None, None, "m"),
    ("b", None, None, "m"),
    ("c", 1, 3, "rwm"),  # null
    ("c", 1, 8, "rwm"),  # random
    ("c", 1, 7, "rwm"),  # full
    ("c", 5, 0, "rwm"),  # tty
    ("c", 1, 5, "rwm"),  # zero
    ("c", 1, 9, "rwm"),  # urandom
    ("c", 136, None, "rwm"),  # pts
    ("c", 5, 2, "rwm"),  # ptmx
    ("c", 10, 200, "rwm"),  # tun
)


class Write(Record):
    controller: str  # v1: the controller ("memory", "cpuset"); v2: ""
    file: str
    value: str
    field: str  # JSON path in config.json


def _num(section: Json, key: str, path: str) -> int | None:
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{path}.{key}: expected an integer")
    return value


def _section(resources: Json, key: str) -> Json:
    value = resources.get(key) or {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{ROOT}.{key}: expected an object")
    return value


def _entries(section: Json, key: str, path: str) -> list[Json]:
    value = section.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidArgument(f"{path}.{key}: expected an array of objects")
    return value


def _dev(entry: Json, path: str) -> str:
    major, minor = _num(entry, "major", path), _num(entry, "minor", path)
    if major is None or minor is None:
        raise InvalidArgument(f"{path}: major and minor are required")
    return f"{major}:{minor}"


# --- cgroup v1 -----------------------------------------------------------------------------------


def v1_writes(resources: Json) -> list[Write]:
    out: list[Write] = []
    out += _v1_memory(_section(resources, "memory"))
    out += _v1_cpu(_section(resources, "cpu"))
    out += _pids(_section(resources, "pids"), "pids")
    out += _v1_blkio(_section(resources, "blockIO"))
    out += _hugetlb(resources, "limit_in_bytes", "hugetlb")
    out += _v1_network(_section(resources, "network"))
    out += v1_devices(resources)
    if resources.get("unified"):
        raise Unsupported(f"{ROOT}.unified: cgroup v2 keys need a cgroup v2 host")
    return out


def _v1_memory(mem: Json) -> list[Write]:
    path = f"{ROOT}.memory"
    files = (
        ("limit", "memory.limit_in_bytes"),
        ("reservation", "memory.soft_limit_in_bytes"),
        ("swap", "memory.memsw.limit_in_bytes"),
        ("kernelTCP", "memory.kmem.tcp.limit_in_bytes"),
    )
    out = [
        Write("memory", f, str(v), f"{path}.{k}") for k, f in files if (v := _num(mem, k, path)) is not None
    ]
    swappiness = _num(mem, "swappiness", path)
    if swappiness is not None:
        if not 0 <= swappiness <= 100:
            raise InvalidArgument(f"{path}.swappiness: must be between 0 and 100, not {swappiness}")
        out.append(Write("memory", "memory.swappiness", str(swappiness), f"{path}.swappiness"))
    if mem.get("disableOOMKiller"):
        out.append(Write("memory", "memory.oom_control", "1", f"{path}.disableOOMKiller"))
    return out


def _v1_cpu(cpu: Json) -> list[Write]:
    path = f"{ROOT}.cpu"
    files = (
        ("shares", "cpu", "cpu.shares"),
        ("period", "cpu", "cpu.cfs_period_us"),
        ("quota", "cpu", "cpu.cfs_quota_us"),
        ("burst", "cpu", "cpu.cfs_burst_us"),
        ("realtimePeriod", "cpu", "cpu.rt_period_us"),
        ("realtimeRuntime", "cpu", "cpu.rt_runtime_us"),
        ("idle", "cpu", "cpu.idle"),
    )
    out = [Write(c, f, str(v), f"{path}.{k}") for k, c, f in files if (v := _num(cpu, k, path)) is not None]
    return out + _cpuset(cpu, path, "cpuset")


def _cpuset(cpu: Json, path: str, controller: str) -> list[Write]:
    out = []
    for key in ("cpus", "mems"):
        value = cpu.get(key)
        if value:
            if not isinstance(value, str):
                raise InvalidArgument(f"{path}.{key}: expected a string like '0-3,5'")
            out.append(Write(controller, f"cpuset.{key}", value, f"{path}.{key}"))
    return out


def _pids(pids: Json, controller: str) -> list[Write]:
    limit = _num(pids, "limit", f"{ROOT}.pids")
    if limit is None:
        return []
    return [Write(controller, "pids.max", str(limit) if limit > 0 else "max", f"{ROOT}.pids.limit")]


def _v1_blkio(blk: Json) -> list[Write]:
    path = f"{ROOT}.blockIO"
    out = [
        Write("blkio", f, str(v), f"{path}.{k}")
        for k, f in (("weight", "blkio.weight"), ("leafWeight", "blkio.leaf_weight"))
        if (v := _num(blk, k, path)) is not None
    ]
    for i, e in enumerate(_entries(blk, "weightDevice", path)):
        where = f"{path}.weightDevice[{i}]"
        for key, file in (("weight", "blkio.weight_device"), ("leafWeight", "blkio.leaf_weight_device")):
            if (v := _num(e, key, where)) is not None:
                out.append(Write("blkio", file, f"{_dev(e, where)} {v}", where))
    for key, kind in _THROTTLES:
        for i, e in enumerate(_entries(blk, key, path)):
            where = f"{path}.{key}[{i}]"
            out.append(
                Write("blkio", f"blkio.throttle.{kind}_device", f"{_dev(e, where)} {_rate(e, where)}", where)
            )
    return out


_THROTTLES = (
    ("throttleReadBpsDevice", "read_bps"),
    ("throttleWriteBpsDevice", "write_bps"),
    ("throttleReadIOPSDevice", "read_iops"),
    ("throttleWriteIOPSDevice", "write_iops"),
)


def _rate(entry: Json, path: str) -> int:
    rate = _num(entry, "rate", path)
    if rate is None:
        raise InvalidArgument(f"{path}.rate: required")
    return rate


def _hugetlb(resources: Json, suffix: str, controller: str) -> list[Write]:
    out = []
    for i, e in enumerate(_entries(resources, "hugepageLimits", ROOT)):
        where = f"{ROOT}.hugepageLimits[{i}]"
        size, limit = e.get("pageSize"), _num(e, "limit", where)
        if not isinstance(size, str) or limit is None:
            raise InvalidArgument(f"{where}: pageSize and limit are required")
        if not (size[-2:] in ("KB", "MB", "GB") and size[:-2].isascii() and size[:-2].isdigit()):
            raise InvalidArgument(f"{where}.pageSize: expected a size like 2MB or 1GB, not {size!r}")
        out.append(Write(controller, f"hugetlb.{size}.{suffix}", str(limit), where))
    return out


def _v1_network(net: Json) -> list[Write]:
    path = f"{ROOT}.network"
    out = []
    class_id = _num(net, "classID", path)
    if class_id is not None:
        out.append(Write("net_cls", "net_cls.classid", str(class_id), f"{path}.classID"))
    for i, e in enumerate(_entries(net, "priorities", path)):
        where = f"{path}.priorities[{i}]"
        name, priority = e.get("name"), _num(e, "priority", where)
        if not isinstance(name, str) or not name or priority is None:
            raise InvalidArgument(f"{where}: name and priority are required")
        out.append(Write("net_prio", "net_prio.ifpriomap", f"{name} {priority}", where))
    return out


def _star(n: int | None) -> str:
    return "*" if n is None or n < 0 else str(n)


def _device_rule(kind: str, major: int | None, minor: int | None, access: str) -> str:
    return f"{kind} {_star(major)}:{_star(minor)} {access}"


def v1_devices(resources: Json) -> list[Write]:
    """The spec's rules in order, then runc's defaults; nothing at all if the spec has no rules."""
    path = f"{ROOT}.devices"
    rules = _entries(resources, "devices", ROOT)
    if not rules:
        return []
    out = []
    for i, r in enumerate(rules):
        where = f"{path}[{i}]"
        kind = r.get("type") or "a"
        if kind not in ("a", "c", "b"):
            raise InvalidArgument(f"{where}.type: expected a, c or b, not {kind!r}")
        access = r.get("access") or "rwm"
        if not isinstance(access, str) or not access or set(access) - set("rwm"):
            raise InvalidArgument(f"{where}.access: expected letters from 'rwm', not {access!r}")
        line = (
            "a"
            if kind == "a"
            else _device_rule(kind, _num(r, "major", where), _num(r, "minor", where), access)
        )
        out.append(Write("devices", "devices.allow" if r.get("allow") else "devices.deny", line, where))
    out += [Write("devices", "devices.allow", _device_rule(*rule), path) for rule in DEFAULT_DEVICE_RULES]
    return out


# --- cgroup v2 -----------------------------------------------------------------------------------


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) -> cpu.weight (1..10000), the conversion runc and crun use."""
    if shares == 0:
        return 0
    return 1 + _div_toward_zero((shares - 2) * 9999, 262142)


def blkio_to_io_weight(weight: int) -> int:
    """blkio weight (10..1000) -> io.weight (1..10000), as runc converts it."""
    return 1 + _div_toward_zero((weight - 10) * 9999, 990)


def _div_toward_zero(a: int, b: int) -> int:
    """C and Go division: Python's // rounds toward minus infinity instead."""
    return a // b if a >= 0 else -(-a // b)


def v2_writes(resources: Json) -> list[Write]:
    out: list[Write] = []
    out += _v2_memory(_section(resources, "memory"))
    out += _v2_cpu(_section(resources, "cpu"))
    out += _pids(_section(resources, "pids"), "")
    out += _v2_io(_section(resources, "blockIO"))
    out += _hugetlb(resources, "max", "")
    if _section(resources, "network"):
        raise Unsupported(f"{ROOT}.network: net_cls and net_prio do not exist on cgroup v2")
    unified = _section(resources, "unified")
    for key, value in unified.items():
        if not key or "/" in key or key.startswith(".") or not isinstance(value, str):
            raise InvalidArgument(f"{ROOT}.unified.{key}: expected a file name and a string value")
        out.append(Write("", key, value, f"{ROOT}.unified.{key}"))
    return out


def _max(value: int) -> str:
    return "max" if value < 0 else str(value)


def _v2_memory(mem: Json) -> list[Write]:
    path = f"{ROOT}.memory"
    out = []
    limit, swap = _num(mem, "limit", path), _num(mem, "swap", path)
    if limit is not None:
        out.append(Write("", "memory.max", _max(limit), f"{path}.limit"))
    if (v := _num(mem, "reservation", path)) is not None:
        out.append(Write("", "memory.low", _max(v), f"{path}.reservation"))
    if swap is not None:  # OCI's swap is memory+swap, v2's memory.swap.max is swap alone
        if swap >= 0 and (limit is None or limit < 0):
            raise InvalidArgument(f"{path}.swap: on cgroup v2 a swap limit needs a memory limit")
        value = "max" if swap < 0 else str(swap - (limit or 0))
        if swap >= 0 and limit is not None and swap < limit:
            raise InvalidArgument(f"{path}.swap: must not be below the memory limit ({limit})")
        out.append(Write("", "memory.swap.max", value, f"{path}.swap"))
    for key in ("swappiness", "kernelTCP"):
        if mem.get(key) is not None:
            raise Unsupported(f"{path}.{key}: not available on cgroup v2")
    if mem.get("disableOOMKiller"):
        raise Unsupported(f"{path}.disableOOMKiller: not available on cgroup v2")
    return out


def _v2_cpu(cpu: Json) -> list[Write]:
    path = f"{ROOT}.cpu"
    out = []
    if shares := _num(cpu, "shares", path):  # 0 means unset, as for runc
        out.append(Write("", "cpu.weight", str(shares_to_weight(shares)), f"{path}.shares"))
    quota, period = _num(cpu, "quota", path), _num(cpu, "period", path)
    if quota is not None or period is not None:
        q = "max" if quota is None or quota <= 0 else str(quota)
        out.append(Write("", "cpu.max", f"{q} {period or 100000}", f"{path}.quota"))
    if (burst := _num(cpu, "burst", path)) is not None:
        out.append(Write("", "cpu.max.burst", str(burst), f"{path}.burst"))
    if (idle := _num(cpu, "idle", path)) is not None:
        out.append(Write("", "cpu.idle", str(idle), f"{path}.idle"))
    for key in ("realtimePeriod", "realtimeRuntime"):
        if cpu.get(key):
            raise Unsupported(f"{path}.{key}: realtime scheduling limits are not available on cgroup v2")
    return out + _cpuset(cpu, path, "")


def _v2_io(blk: Json) -> list[Write]:
    path = f"{ROOT}.blockIO"
    out = []
    if (weight := _num(blk, "weight", path)) is not None:
        out.append(Write("", "io.weight", f"default {blkio_to_io_weight(weight)}", f"{path}.weight"))
    for i, e in enumerate(_entries(blk, "weightDevice", path)):
        where = f"{path}.weightDevice[{i}]"
        if (w := _num(e, "weight", where)) is not None:
            out.append(Write("", "io.weight", f"{_dev(e, where)} {blkio_to_io_weight(w)}", where))
    keys = {"read_bps": "rbps", "write_bps": "wbps", "read_iops": "riops", "write_iops": "wiops"}
    for key, kind in _THROTTLES:
        for i, e in enumerate(_entries(blk, key, path)):
            where = f"{path}.{key}[{i}]"
            out.append(Write("", "io.max", f"{_dev(e, where)} {keys[kind]}={_rate(e, where)}", where))
    return out
