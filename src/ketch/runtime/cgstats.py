"""A container's resource usage from its cgroup files, in the shape of runc's `events --stats`.

Parsing is pure: it takes a `read(controller, file)` function that returns the file's text or
None, so tests feed it fixtures shaped like the real v1 and v2 files.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Reader = Callable[[str, str], str | None]

_TICKS_NS = 10_000_000  # cpuacct.stat counts USER_HZ (100) ticks


def _int(text: str | None) -> int:
    if text is None:
        return 0
    text = text.strip()
    return 0 if text in ("", "max") else int(text)


def _limit(text: str | None) -> int:
    """A limit: "max" (v2) or the v1 huge number both mean unlimited, shown as 0 like runc."""
    if text is None or text.strip() == "max":
        return 0
    value = int(text)
    return 0 if value >= 1 << 62 else value


def _kv(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def v1(read: Reader) -> dict[str, Any]:
    cpu_stat, acct = _kv(read("cpu", "cpu.stat")), _kv(read("cpuacct", "cpuacct.stat"))
    mem_stat = _kv(read("memory", "memory.stat"))
    return {
        "cpu": {
            "usage": {
                "total": _int(read("cpuacct", "cpuacct.usage")),
                "percpu": [int(x) for x in (read("cpuacct", "cpuacct.usage_percpu") or "").split()],
                "kernel": acct.get("system", 0) * _TICKS_NS,
                "user": acct.get("user", 0) * _TICKS_NS,
            },
            "throttling": {
                "periods": cpu_stat.get("nr_periods", 0),
                "throttledPeriods": cpu_stat.get("nr_throttled", 0),
                "throttledTime": cpu_stat.get("throttled_time", 0),
            },
        },
        "memory": {
            "usage": {
                "usage": _int(read("memory", "memory.usage_in_bytes")),
                "limit": _limit(read("memory", "memory.limit_in_bytes")),
                "max": _int(read("memory", "memory.max_usage_in_bytes")),
                "failcnt": _int(read("memory", "memory.failcnt")),
            },
            "cache": mem_stat.get("total_cache", mem_stat.get("cache", 0)),
            "oomKills": _kv(read("memory", "memory.oom_control")).get("oom_kill", 0),
            "raw": mem_stat,
        },
        "pids": {"current": _int(read("pids", "pids.current")), "limit": _limit(read("pids", "pids.max"))},
        "blkio": {
            "ioServiceBytesRecursive": _blkio(read("blkio", "blkio.throttle.io_service_bytes_recursive"))
        },
    }


def _blkio(text: str | None) -> list[dict[str, Any]]:
    out = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            major, minor = parts[0].split(":")
            out.append({"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])})
    return out


def v2(read: Reader) -> dict[str, Any]:
    cpu, mem_stat, events = (
        _kv(read("", "cpu.stat")),
        _kv(read("", "memory.stat")),
        _kv(read("", "memory.events")),
    )
    return {
        "cpu": {
            "usage": {
                "total": cpu.get("usage_usec", 0) * 1000,
                "percpu": [],
                "kernel": cpu.get("system_usec", 0) * 1000,
                "user": cpu.get("user_usec", 0) * 1000,
            },
            "throttling": {
                "periods": cpu.get("nr_periods", 0),
                "throttledPeriods": cpu.get("nr_throttled", 0),
                "throttledTime": cpu.get("throttled_usec", 0) * 1000,
            },
        },
        "memory": {
            "usage": {
                "usage": _int(read("", "memory.current")),
                "limit": _limit(read("", "memory.max")),
                "max": _int(read("", "memory.peak")),
                "failcnt": events.get("max", 0),
            },
            "cache": mem_stat.get("file", 0),
            "oomKills": events.get("oom_kill", 0),
            "raw": mem_stat,
        },
        "pids": {"current": _int(read("", "pids.current")), "limit": _limit(read("", "pids.max"))},
        "blkio": {"ioServiceBytesRecursive": _io_v2(read("", "io.stat"))},
    }


def _io_v2(text: str | None) -> list[dict[str, Any]]:
    out = []
    for line in (text or "").splitlines():
        dev, *pairs = line.split()
        major, minor = (int(x) for x in dev.split(":"))
        values = dict(p.split("=", 1) for p in pairs if "=" in p)
        for key, op in (("rbytes", "Read"), ("wbytes", "Write")):
            if key in values:
                out.append({"major": major, "minor": minor, "op": op, "value": int(values[key])})
    return out
