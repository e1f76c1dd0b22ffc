"""Parsing of cgroup v1 and v2 usage files into runc's stats shape."""

from __future__ import annotations

from ketch.runtime import cgstats

V1_FILES = {
    ("cpuacct", "cpuacct.usage"): "1500000000\n",
    ("cpuacct", "cpuacct.usage_percpu"): "1000000000 500000000 \n",
    ("cpuacct", "cpuacct.stat"): "user 120\nsystem 30\n",
    ("cpu", "cpu.stat"): "nr_periods 20\nnr_throttled 7\nthrottled_time 123456\n",
    ("memory", "memory.usage_in_bytes"): "1048576\n",
    ("memory", "memory.limit_in_bytes"): "9223372036854771712\n",
    ("memory", "memory.max_usage_in_bytes"): "2097152\n",
    ("memory", "memory.failcnt"): "3\n",
    ("memory", "memory.stat"): "cache 4096\nrss 8192\ntotal_cache 4096\n",
    ("memory", "memory.oom_control"): "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    ("pids", "pids.current"): "4\n",
    ("pids", "pids.max"): "max\n",
    ("blkio", "blkio.throttle.io_service_bytes_recursive"): "8:0 Read 4096\n8:0 Write 512\nTotal 4608\n",
}
V2_FILES = {
    "cpu.stat": "usage_usec 1500000\nuser_usec 1200000\nsystem_usec 300000\nnr_periods 20\nnr_throttled 7\n"
    "throttled_usec 5000\n",
    "memory.current": "1048576\n",
    "memory.max": "33554432\n",
    "memory.peak": "2097152\n",
    "memory.events": "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n",
    "memory.stat": "anon 8192\nfile 4096\n",
    "pids.current": "4\n",
    "pids.max": "12\n",
    "io.stat": "8:0 rbytes=4096 wbytes=512 rios=1 wios=1 dbytes=0 dios=0\n",
}


def test_v1_stats() -> None:
    s = cgstats.v1(lambda c, f: V1_FILES.get((c, f)))
    assert s["cpu"]["usage"] == {"total": 1_500_000_000, "percpu": [1_000_000_000, 500_000_000],
                                 "kernel": 300_000_000, "user": 1_200_000_000}  # fmt: skip
    assert s["cpu"]["throttling"] == {"periods": 20, "throttledPeriods": 7, "throttledTime": 123456}
    assert s["memory"]["usage"] == {"usage": 1 << 20, "limit": 0, "max": 2 << 20, "failcnt": 3}
    assert s["memory"]["oomKills"] == 2 and s["memory"]["cache"] == 4096
    assert s["pids"] == {"current": 4, "limit": 0}
    assert s["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 4096},
        {"major": 8, "minor": 0, "op": "Write", "value": 512},
    ]


def test_v2_stats() -> None:
    s = cgstats.v2(lambda c, f: V2_FILES.get(f) if c == "" else None)
    assert s["cpu"]["usage"]["total"] == 1_500_000_000 and s["cpu"]["usage"]["user"] == 1_200_000_000
    assert s["cpu"]["throttling"] == {"periods": 20, "throttledPeriods": 7, "throttledTime": 5_000_000}
    assert s["memory"]["usage"] == {"usage": 1 << 20, "limit": 32 << 20, "max": 2 << 20, "failcnt": 5}
    assert s["memory"]["oomKills"] == 1
    assert s["pids"] == {"current": 4, "limit": 12}
    assert [e["op"] for e in s["blkio"]["ioServiceBytesRecursive"]] == ["Read", "Write"]


def test_missing_files_read_as_zero() -> None:
    s = cgstats.v1(lambda c, f: None)
    assert s["memory"]["usage"]["usage"] == 0 and s["pids"]["current"] == 0
    assert s["cpu"]["usage"]["percpu"] == []
