"""Unit tests for ketch.runtime.resources: OCI linux.resources -> cgroup v1 and v2 file writes.

The expected values follow runc/crun and the kernel's cgroup documentation; every test names
the JSON path a refused or unsupported value is reported under.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from ketch.errors import InvalidArgument, Unsupported
from ketch.runtime.resources import (
    DEFAULT_DEVICE_RULES,
    Write,
    shares_to_weight,
    v1_devices,
    v1_writes,
    v2_writes,
)

Json = dict[str, Any]
R = "linux.resources"

# runc's default device rules as v1 writes, appended after the spec's own rules
DEFAULT_DEVICE_WRITES = [
    Write("devices", "devices.allow", line, f"{R}.devices")
    for line in (
        "c *:* m",
        "b *:* m",
        "c 1:3 rwm",
        "c 1:8 rwm",
        "c 1:7 rwm",
        "c 5:0 rwm",
        "c 1:5 rwm",
        "c 1:9 rwm",
        "c 136:* rwm",
        "c 5:2 rwm",
        "c 10:200 rwm",
    )
]


def mem(file: str, value: str, key: str) -> Write:
    return Write("memory", file, value, f"{R}.memory.{key}")


def cpu(file: str, value: str, key: str) -> Write:
    return Write("cpu", file, value, f"{R}.cpu.{key}")


def blkio(file: str, value: str, where: str) -> Write:
    return Write("blkio", file, value, f"{R}.blockIO.{where}")


def v2(file: str, value: str, field: str) -> Write:
    return Write("", file, value, f"{R}.{field}")


# --- cgroup v1 -----------------------------------------------------------------------------------

V1_CASES: list[tuple[str, Json, list[Write]]] = [
    ("empty", {}, []),
    ("empty sections", {"memory": {}, "cpu": {}, "pids": {}, "blockIO": {}, "network": {}}, []),
    ("null sections", {"memory": None, "cpu": None, "devices": None, "hugepageLimits": None}, []),
    ("empty unified is fine on v1", {"unified": {}}, []),
    # memory
    ("memory.limit", {"memory": {"limit": 1048576}}, [mem("memory.limit_in_bytes", "1048576", "limit")]),
    ("memory.limit -1", {"memory": {"limit": -1}}, [mem("memory.limit_in_bytes", "-1", "limit")]),
    (
        "memory.reservation",
        {"memory": {"reservation": 524288}},
        [mem("memory.soft_limit_in_bytes", "524288", "reservation")],
    ),
    ("memory.swap", {"memory": {"swap": 2097152}}, [mem("memory.memsw.limit_in_bytes", "2097152", "swap")]),
    (
        "memory.kernelTCP",
        {"memory": {"kernelTCP": 65536}},
        [mem("memory.kmem.tcp.limit_in_bytes", "65536", "kernelTCP")],
    ),
    ("memory.swappiness 0", {"memory": {"swappiness": 0}}, [mem("memory.swappiness", "0", "swappiness")]),
    (
        "memory.swappiness 100",
        {"memory": {"swappiness": 100}},
        [mem("memory.swappiness", "100", "swappiness")],
    ),
    (
        "memory.disableOOMKiller",
        {"memory": {"disableOOMKiller": True}},
        [mem("memory.oom_control", "1", "disableOOMKiller")],
    ),
    ("memory.disableOOMKiller false", {"memory": {"disableOOMKiller": False}}, []),
    (
        "memory: every field, limit before memsw",
        {
            "memory": {
                "limit": 100,
                "reservation": 50,
                "swap": 200,
                "kernelTCP": 10,
                "swappiness": 60,
                "disableOOMKiller": True,
            }
        },
        [
            mem("memory.limit_in_bytes", "100", "limit"),
            mem("memory.soft_limit_in_bytes", "50", "reservation"),
            mem("memory.memsw.limit_in_bytes", "200", "swap"),
            mem("memory.kmem.tcp.limit_in_bytes", "10", "kernelTCP"),
            mem("memory.swappiness", "60", "swappiness"),
            mem("memory.oom_control", "1", "disableOOMKiller"),
        ],
    ),
    # cpu
    ("cpu.shares", {"cpu": {"shares": 1024}}, [cpu("cpu.shares", "1024", "shares")]),
    (
        "cpu: every cfs and rt field",
        {
            "cpu": {
                "shares": 512,
                "period": 100000,
                "quota": 50000,
                "burst": 1000,
                "realtimePeriod": 1000000,
                "realtimeRuntime": 950000,
                "idle": 1,
            }
        },
        [
            cpu("cpu.shares", "512", "shares"),
            cpu("cpu.cfs_period_us", "100000", "period"),
            cpu("cpu.cfs_quota_us", "50000", "quota"),
            cpu("cpu.cfs_burst_us", "1000", "burst"),
            cpu("cpu.rt_period_us", "1000000", "realtimePeriod"),
            cpu("cpu.rt_runtime_us", "950000", "realtimeRuntime"),
            cpu("cpu.idle", "1", "idle"),
        ],
    ),
    ("cpu.quota -1 is unlimited on v1", {"cpu": {"quota": -1}}, [cpu("cpu.cfs_quota_us", "-1", "quota")]),
    (
        "cpuset",
        {"cpu": {"cpus": "0-3,5", "mems": "0"}},
        [
            Write("cpuset", "cpuset.cpus", "0-3,5", f"{R}.cpu.cpus"),
            Write("cpuset", "cpuset.mems", "0", f"{R}.cpu.mems"),
        ],
    ),
    ("empty cpuset strings are skipped", {"cpu": {"cpus": "", "mems": ""}}, []),
    (
        "cpu before cpuset",
        {"cpu": {"mems": "1", "shares": 2}},
        [cpu("cpu.shares", "2", "shares"), Write("cpuset", "cpuset.mems", "1", f"{R}.cpu.mems")],
    ),
    # pids
    ("pids.limit", {"pids": {"limit": 32}}, [Write("pids", "pids.max", "32", f"{R}.pids.limit")]),
    ("pids.limit 1", {"pids": {"limit": 1}}, [Write("pids", "pids.max", "1", f"{R}.pids.limit")]),
    ("pids.limit 0 is max", {"pids": {"limit": 0}}, [Write("pids", "pids.max", "max", f"{R}.pids.limit")]),
    ("pids.limit -1 is max", {"pids": {"limit": -1}}, [Write("pids", "pids.max", "max", f"{R}.pids.limit")]),
    # blkio
    (
        "blkio weights",
        {"blockIO": {"weight": 500, "leafWeight": 300}},
        [blkio("blkio.weight", "500", "weight"), blkio("blkio.leaf_weight", "300", "leafWeight")],
    ),
    (
        "blkio weightDevice",
        {
            "blockIO": {
                "weightDevice": [
                    {"major": 8, "minor": 0, "weight": 100, "leafWeight": 50},
                    {"major": 8, "minor": 16, "weight": 200},
                    {"major": 8, "minor": 32, "leafWeight": 70},
                    {"major": 8, "minor": 48},
                ]
            }
        },
        [
            blkio("blkio.weight_device", "8:0 100", "weightDevice[0]"),
            blkio("blkio.leaf_weight_device", "8:0 50", "weightDevice[0]"),
            blkio("blkio.weight_device", "8:16 200", "weightDevice[1]"),
            blkio("blkio.leaf_weight_device", "8:32 70", "weightDevice[2]"),
        ],
    ),
    (
        "blkio throttles",
        {
            "blockIO": {
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                "throttleWriteBpsDevice": [
                    {"major": 8, "minor": 0, "rate": 2097152},
                    {"major": 253, "minor": 1, "rate": 0},
                ],
                "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 200}],
            }
        },
        [
            blkio("blkio.throttle.read_bps_device", "8:0 1048576", "throttleReadBpsDevice[0]"),
            blkio("blkio.throttle.write_bps_device", "8:0 2097152", "throttleWriteBpsDevice[0]"),
            blkio("blkio.throttle.write_bps_device", "253:1 0", "throttleWriteBpsDevice[1]"),
            blkio("blkio.throttle.read_iops_device", "8:0 100", "throttleReadIOPSDevice[0]"),
            blkio("blkio.throttle.write_iops_device", "8:0 200", "throttleWriteIOPSDevice[0]"),
        ],
    ),
    (
        "blkio weight before weightDevice before throttles",
        {
            "blockIO": {
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1}],
                "weightDevice": [{"major": 8, "minor": 0, "weight": 10}],
                "weight": 10,
            }
        },
        [
            blkio("blkio.weight", "10", "weight"),
            blkio("blkio.weight_device", "8:0 10", "weightDevice[0]"),
            blkio("blkio.throttle.read_bps_device", "8:0 1", "throttleReadBpsDevice[0]"),
        ],
    ),
    # hugetlb
    (
        "hugetlb",
        {"hugepageLimits": [{"pageSize": "2MB", "limit": 209715200}, {"pageSize": "1GB", "limit": 0}]},
        [
            Write("hugetlb", "hugetlb.2MB.limit_in_bytes", "209715200", f"{R}.hugepageLimits[0]"),
            Write("hugetlb", "hugetlb.1GB.limit_in_bytes", "0", f"{R}.hugepageLimits[1]"),
        ],
    ),
    # network
    (
        "net_cls.classid",
        {"network": {"classID": 1048577}},
        [Write("net_cls", "net_cls.classid", "1048577", f"{R}.network.classID")],
    ),
    (
        "net_prio.ifpriomap",
        {"network": {"priorities": [{"name": "eth0", "priority": 500}, {"name": "lo", "priority": 0}]}},
        [
            Write("net_prio", "net_prio.ifpriomap", "eth0 500", f"{R}.network.priorities[0]"),
            Write("net_prio", "net_prio.ifpriomap", "lo 0", f"{R}.network.priorities[1]"),
        ],
    ),
    # sections in order: memory, cpu, cpuset, pids, blkio, hugetlb, network, devices
    (
        "sections in order",
        {
            "devices": [{"allow": False, "access": "rwm"}],
            "network": {"classID": 1},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 1}],
            "blockIO": {"weight": 100},
            "pids": {"limit": 5},
            "cpu": {"shares": 2, "cpus": "0"},
            "memory": {"limit": 4096},
        },
        [
            mem("memory.limit_in_bytes", "4096", "limit"),
            cpu("cpu.shares", "2", "shares"),
            Write("cpuset", "cpuset.cpus", "0", f"{R}.cpu.cpus"),
            Write("pids", "pids.max", "5", f"{R}.pids.limit"),
            blkio("blkio.weight", "100", "weight"),
            Write("hugetlb", "hugetlb.2MB.limit_in_bytes", "1", f"{R}.hugepageLimits[0]"),
            Write("net_cls", "net_cls.classid", "1", f"{R}.network.classID"),
            Write("devices", "devices.deny", "a", f"{R}.devices[0]"),
            *DEFAULT_DEVICE_WRITES,
        ],
    ),
]


@pytest.mark.parametrize(("resources", "expected"), [c[1:] for c in V1_CASES], ids=[c[0] for c in V1_CASES])
def test_v1_writes(resources: Json, expected: list[Write]) -> None:
    assert v1_writes(resources) == expected


def test_v1_writes_does_not_modify_its_input() -> None:
    resources = V1_CASES[-1][1]
    before = copy.deepcopy(resources)
    v1_writes(resources)
    assert resources == before


# --- v1 devices ----------------------------------------------------------------------------------

DEVICE_CASES: list[tuple[str, Json, tuple[str, str]]] = [
    ("deny all", {"allow": False, "access": "rwm"}, ("devices.deny", "a")),
    ("allow all", {"allow": True, "type": "a"}, ("devices.allow", "a")),
    (
        "type a ignores major and minor",
        {"allow": False, "type": "a", "major": 1, "minor": 3},
        ("devices.deny", "a"),
    ),
    ("missing type is a", {"allow": True, "access": "r"}, ("devices.allow", "a")),
    (
        "char device",
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"},
        ("devices.allow", "c 10:229 rw"),
    ),
    (
        "block device denied",
        {"allow": False, "type": "b", "major": 8, "minor": 0, "access": "m"},
        ("devices.deny", "b 8:0 m"),
    ),
    (
        "missing major and minor are wildcards",
        {"allow": True, "type": "c", "access": "m"},
        ("devices.allow", "c *:* m"),
    ),
    (
        "-1 major and minor are wildcards",
        {"allow": True, "type": "b", "major": -1, "minor": -1, "access": "rwm"},
        ("devices.allow", "b *:* rwm"),
    ),
    (
        "only the minor is a wildcard",
        {"allow": True, "type": "c", "major": 136, "minor": -1, "access": "rwm"},
        ("devices.allow", "c 136:* rwm"),
    ),
    (
        "only the major is a wildcard",
        {"allow": True, "type": "c", "minor": 1, "access": "rwm"},
        ("devices.allow", "c *:1 rwm"),
    ),
    (
        "missing access is rwm",
        {"allow": True, "type": "c", "major": 1, "minor": 3},
        ("devices.allow", "c 1:3 rwm"),
    ),
    (
        "empty access is rwm",
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": ""},
        ("devices.allow", "c 1:3 rwm"),
    ),
    (
        "missing allow denies",
        {"type": "c", "major": 1, "minor": 3, "access": "w"},
        ("devices.deny", "c 1:3 w"),
    ),
]


@pytest.mark.parametrize(
    ("rule", "expected"), [c[1:] for c in DEVICE_CASES], ids=[c[0] for c in DEVICE_CASES]
)
def test_v1_device_rule(rule: Json, expected: tuple[str, str]) -> None:
    file, line = expected
    out = v1_devices({"devices": [rule]})
    assert out == [Write("devices", file, line, f"{R}.devices[0]"), *DEFAULT_DEVICE_WRITES]


def test_v1_devices_keeps_the_spec_order_then_runc_defaults() -> None:
    rules = [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
        {"allow": False, "type": "c", "major": 10, "minor": 229, "access": "m"},
    ]
    assert v1_devices({"devices": rules}) == [
        Write("devices", "devices.deny", "a", f"{R}.devices[0]"),
        Write("devices", "devices.allow", "c 10:229 rwm", f"{R}.devices[1]"),
        Write("devices", "devices.deny", "c 10:229 m", f"{R}.devices[2]"),
        *DEFAULT_DEVICE_WRITES,
    ]


@pytest.mark.parametrize("devices", [None, []])
def test_v1_devices_without_rules_writes_nothing(devices: Any) -> None:
    assert v1_devices({"devices": devices}) == []
    assert v1_devices({}) == []


def test_default_device_rules_are_runcs() -> None:
    """runc's AllowedDevices: mknod of any c/b, null, random, full, tty, zero, urandom, pts, ptmx, tun."""
    assert DEFAULT_DEVICE_RULES == (
        ("c", None, None, "m"),
        ("b", None, None, "m"),
        ("c", 1, 3, "rwm"),
        ("c", 1, 8, "rwm"),
        ("c", 1, 7, "rwm"),
        ("c", 5, 0, "rwm"),
        ("c", 1, 5, "rwm"),
        ("c", 1, 9, "rwm"),
        ("c", 136, None, "rwm"),
        ("c", 5, 2, "rwm"),
        ("c", 10, 200, "rwm"),
    )
    assert v1_devices({"devices": [{"allow": True}]})[1:] == DEFAULT_DEVICE_WRITES


# --- v1 errors -----------------------------------------------------------------------------------

V1_ERRORS: list[tuple[Json, type[Exception], str]] = [
    # sections
    ({"memory": [1]}, InvalidArgument, f"{R}.memory: expected an object"),
    ({"memory": "1g"}, InvalidArgument, f"{R}.memory: expected an object"),
    ({"cpu": [1]}, InvalidArgument, f"{R}.cpu: expected an object"),
    ({"pids": 5}, InvalidArgument, f"{R}.pids: expected an object"),
    ({"blockIO": "x"}, InvalidArgument, f"{R}.blockIO: expected an object"),
    ({"network": ["eth0"]}, InvalidArgument, f"{R}.network: expected an object"),
    # integers
    ({"memory": {"limit": "1g"}}, InvalidArgument, f"{R}.memory.limit: expected an integer"),
    ({"memory": {"limit": True}}, InvalidArgument, f"{R}.memory.limit: expected an integer"),
    ({"memory": {"limit": 1.5}}, InvalidArgument, f"{R}.memory.limit: expected an integer"),
    ({"memory": {"reservation": "1"}}, InvalidArgument, f"{R}.memory.reservation: expected an integer"),
    ({"memory": {"swap": [1]}}, InvalidArgument, f"{R}.memory.swap: expected an integer"),
    ({"memory": {"kernelTCP": "1"}}, InvalidArgument, f"{R}.memory.kernelTCP: expected an integer"),
    ({"memory": {"swappiness": "60"}}, InvalidArgument, f"{R}.memory.swappiness: expected an integer"),
    ({"memory": {"swappiness": 101}}, InvalidArgument, f"{R}.memory.swappiness: must be between 0 and 100"),
    ({"memory": {"swappiness": -1}}, InvalidArgument, f"{R}.memory.swappiness: must be between 0 and 100"),
    ({"cpu": {"shares": 1.0}}, InvalidArgument, f"{R}.cpu.shares: expected an integer"),
    ({"cpu": {"period": "100000"}}, InvalidArgument, f"{R}.cpu.period: expected an integer"),
    ({"cpu": {"quota": False}}, InvalidArgument, f"{R}.cpu.quota: expected an integer"),
    ({"cpu": {"burst": "1"}}, InvalidArgument, f"{R}.cpu.burst: expected an integer"),
    ({"cpu": {"realtimePeriod": "1"}}, InvalidArgument, f"{R}.cpu.realtimePeriod: expected an integer"),
    ({"cpu": {"realtimeRuntime": "1"}}, InvalidArgument, f"{R}.cpu.realtimeRuntime: expected an integer"),
    ({"cpu": {"idle": "1"}}, InvalidArgument, f"{R}.cpu.idle: expected an integer"),
    ({"cpu": {"cpus": 3}}, InvalidArgument, f"{R}.cpu.cpus: expected a string"),
    ({"cpu": {"mems": ["0"]}}, InvalidArgument, f"{R}.cpu.mems: expected a string"),
    ({"pids": {"limit": "10"}}, InvalidArgument, f"{R}.pids.limit: expected an integer"),
    # blkio
    ({"blockIO": {"weight": "500"}}, InvalidArgument, f"{R}.blockIO.weight: expected an integer"),
    ({"blockIO": {"leafWeight": "500"}}, InvalidArgument, f"{R}.blockIO.leafWeight: expected an integer"),
    (
        {"blockIO": {"weightDevice": {"major": 8}}},
        InvalidArgument,
        f"{R}.blockIO.weightDevice: expected an array of objects",
    ),
    ({"blockIO": {"weightDevice": [8]}}, InvalidArgument, f"{R}.blockIO.weightDevice: expected an array"),
    (
        {"blockIO": {"weightDevice": [{"major": 8, "weight": 10}]}},
        InvalidArgument,
        f"{R}.blockIO.weightDevice[0]: major and minor are required",
    ),
    (
        {"blockIO": {"weightDevice": [{"major": 8, "minor": 0}, {"minor": 0, "leafWeight": 1}]}},
        InvalidArgument,
        f"{R}.blockIO.weightDevice[1]: major and minor are required",
    ),
    (
        {"blockIO": {"weightDevice": [{"major": "8", "minor": 0, "weight": 1}]}},
        InvalidArgument,
        f"{R}.blockIO.weightDevice[0].major: expected an integer",
    ),
    (
        {"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "weight": "1"}]}},
        InvalidArgument,
        f"{R}.blockIO.weightDevice[0].weight: expected an integer",
    ),
    (
        {"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0}]}},
        InvalidArgument,
        f"{R}.blockIO.throttleReadBpsDevice[0].rate: required",
    ),
    (
        {"blockIO": {"throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": "1"}]}},
        InvalidArgument,
        f"{R}.blockIO.throttleWriteIOPSDevice[0].rate: expected an integer",
    ),
    (
        {"blockIO": {"throttleWriteBpsDevice": [{"rate": 1}]}},
        InvalidArgument,
        f"{R}.blockIO.throttleWriteBpsDevice[0]: major and minor are required",
    ),
    (
        {"blockIO": {"throttleReadIOPSDevice": "8:0 1"}},
        InvalidArgument,
        f"{R}.blockIO.throttleReadIOPSDevice: expected an array of objects",
    ),
    # hugetlb
    ({"hugepageLimits": {"2MB": 1}}, InvalidArgument, f"{R}.hugepageLimits: expected an array of objects"),
    (
        {"hugepageLimits": [{"limit": 1}]},
        InvalidArgument,
        f"{R}.hugepageLimits[0]: pageSize and limit are required",
    ),
    (
        {"hugepageLimits": [{"pageSize": "2MB"}]},
        InvalidArgument,
        f"{R}.hugepageLimits[0]: pageSize and limit are required",
    ),
    (
        {"hugepageLimits": [{"pageSize": 2, "limit": 1}]},
        InvalidArgument,
        f"{R}.hugepageLimits[0]: pageSize and limit are required",
    ),
    (
        {"hugepageLimits": [{"pageSize": "2MB", "limit": "1"}]},
        InvalidArgument,
        f"{R}.hugepageLimits[0].limit: expected an integer",
    ),
    # network
    ({"network": {"classID": "0x10001"}}, InvalidArgument, f"{R}.network.classID: expected an integer"),
    (
        {"network": {"priorities": [{"name": "eth0", "priority": "1"}]}},
        InvalidArgument,
        f"{R}.network.priorities[0].priority: expected an integer",
    ),
    (
        {"network": {"priorities": {"eth0": 1}}},
        InvalidArgument,
        f"{R}.network.priorities: expected an array of objects",
    ),
    # devices
    ({"devices": {"allow": False}}, InvalidArgument, f"{R}.devices: expected an array of objects"),
    ({"devices": ["a"]}, InvalidArgument, f"{R}.devices: expected an array of objects"),
    ({"devices": [{"type": "x"}]}, InvalidArgument, f"{R}.devices[0].type: expected a, c or b, not 'x'"),
    ({"devices": [{"type": "u"}]}, InvalidArgument, f"{R}.devices[0].type: expected a, c or b"),
    ({"devices": [{"type": 99}]}, InvalidArgument, f"{R}.devices[0].type: expected a, c or b"),
    (
        {"devices": [{"type": "a"}, {"type": "c", "access": "rwx"}]},
        InvalidArgument,
        f"{R}.devices[1].access: expected letters from 'rwm', not 'rwx'",
    ),
    ({"devices": [{"access": 7}]}, InvalidArgument, f"{R}.devices[0].access: expected letters from 'rwm'"),
    ({"devices": [{"access": "RW"}]}, InvalidArgument, f"{R}.devices[0].access: expected letters from 'rwm'"),
    (
        {"devices": [{"type": "c", "major": "10"}]},
        InvalidArgument,
        f"{R}.devices[0].major: expected an integer",
    ),
    (
        {"devices": [{"type": "b", "major": 8, "minor": 1.0}]},
        InvalidArgument,
        f"{R}.devices[0].minor: expected an integer",
    ),
    # v2-only keys
    ({"unified": {"memory.high": "1G"}}, Unsupported, f"{R}.unified: cgroup v2 keys need a cgroup v2 host"),
]


@pytest.mark.parametrize(("resources", "exc", "message"), V1_ERRORS, ids=[e[2] for e in V1_ERRORS])
def test_v1_errors(resources: Json, exc: type[Exception], message: str) -> None:
    with pytest.raises(exc) as info:
        v1_writes(resources)
    assert type(info.value) is exc
    assert str(info.value).startswith(message)


# --- cgroup v2 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shares", "weight"),
    [
        (2, 1),
        (3, 1),
        (100, 4),
        (512, 20),
        (1024, 39),
        (2048, 79),
        (131072, 5000),
        (262143, 9999),
        (262144, 10000),
        (0, 0),
    ],
)
def test_shares_to_weight(shares: int, weight: int) -> None:
    assert shares_to_weight(shares) == weight


def test_shares_to_weight_is_runcs_formula() -> None:
    for shares in range(2, 262145, 997):
        assert shares_to_weight(shares) == 1 + ((shares - 2) * 9999) // 262142
        assert 1 <= shares_to_weight(shares) <= 10000


V2_CASES: list[tuple[str, Json, list[Write]]] = [
    ("empty", {}, []),
    (
        "empty sections",
        {"memory": {}, "cpu": {}, "pids": {}, "blockIO": {}, "network": {}, "unified": {}},
        [],
    ),
    ("null sections", {"memory": None, "network": None, "unified": None, "hugepageLimits": None}, []),
    # memory
    ("memory.limit", {"memory": {"limit": 1048576}}, [v2("memory.max", "1048576", "memory.limit")]),
    ("memory.limit -1 is max", {"memory": {"limit": -1}}, [v2("memory.max", "max", "memory.limit")]),
    (
        "memory.reservation",
        {"memory": {"reservation": 4096}},
        [v2("memory.low", "4096", "memory.reservation")],
    ),
    (
        "memory.reservation -1 is max",
        {"memory": {"reservation": -1}},
        [v2("memory.low", "max", "memory.reservation")],
    ),
    (
        "memory.swap is memory+swap",
        {"memory": {"limit": 1000, "swap": 3000}},
        [v2("memory.max", "1000", "memory.limit"), v2("memory.swap.max", "2000", "memory.swap")],
    ),
    (
        "memory.swap equal to the limit is no swap",
        {"memory": {"limit": 1000, "swap": 1000}},
        [v2("memory.max", "1000", "memory.limit"), v2("memory.swap.max", "0", "memory.swap")],
    ),
    (
        "memory.swap -1 is max",
        {"memory": {"limit": 1000, "swap": -1}},
        [v2("memory.max", "1000", "memory.limit"), v2("memory.swap.max", "max", "memory.swap")],
    ),
    (
        "memory.swap -1 without a limit",
        {"memory": {"swap": -1}},
        [v2("memory.swap.max", "max", "memory.swap")],
    ),
    (
        "memory.swap -1 with an unlimited limit",
        {"memory": {"limit": -1, "swap": -1}},
        [v2("memory.max", "max", "memory.limit"), v2("memory.swap.max", "max", "memory.swap")],
    ),
    (
        "memory: limit, low, swap in order",
        {"memory": {"swap": 300, "reservation": 50, "limit": 100}},
        [
            v2("memory.max", "100", "memory.limit"),
            v2("memory.low", "50", "memory.reservation"),
            v2("memory.swap.max", "200", "memory.swap"),
        ],
    ),
    ("memory.disableOOMKiller false", {"memory": {"disableOOMKiller": False}}, []),
    # cpu
    ("cpu.shares 1024", {"cpu": {"shares": 1024}}, [v2("cpu.weight", "39", "cpu.shares")]),
    ("cpu.shares 2", {"cpu": {"shares": 2}}, [v2("cpu.weight", "1", "cpu.shares")]),
    ("cpu.shares 262144", {"cpu": {"shares": 262144}}, [v2("cpu.weight", "10000", "cpu.shares")]),
    (
        "cpu.quota and period",
        {"cpu": {"quota": 50000, "period": 200000}},
        [v2("cpu.max", "50000 200000", "cpu.quota")],
    ),
    (
        "cpu.quota alone: period 100000",
        {"cpu": {"quota": 25000}},
        [v2("cpu.max", "25000 100000", "cpu.quota")],
    ),
    ("cpu.period alone: quota max", {"cpu": {"period": 50000}}, [v2("cpu.max", "max 50000", "cpu.quota")]),
    ("cpu.quota -1 is max", {"cpu": {"quota": -1}}, [v2("cpu.max", "max 100000", "cpu.quota")]),
    ("cpu.quota 0 is max", {"cpu": {"quota": 0, "period": 10000}}, [v2("cpu.max", "max 10000", "cpu.quota")]),
    (
        "cpu.period 0 is 100000",
        {"cpu": {"quota": 5000, "period": 0}},
        [v2("cpu.max", "5000 100000", "cpu.quota")],
    ),
    ("cpu.burst", {"cpu": {"burst": 1000}}, [v2("cpu.max.burst", "1000", "cpu.burst")]),
    ("cpu.idle", {"cpu": {"idle": 1}}, [v2("cpu.idle", "1", "cpu.idle")]),
    ("zero realtime values are ignored", {"cpu": {"realtimePeriod": 0, "realtimeRuntime": 0}}, []),
    (
        "cpuset",
        {"cpu": {"cpus": "0-1", "mems": "0"}},
        [v2("cpuset.cpus", "0-1", "cpu.cpus"), v2("cpuset.mems", "0", "cpu.mems")],
    ),
    (
        "cpu: weight, max, burst, idle, cpuset in order",
        {"cpu": {"mems": "0", "idle": 0, "burst": 5, "period": 100000, "quota": 1, "shares": 1024}},
        [
            v2("cpu.weight", "39", "cpu.shares"),
            v2("cpu.max", "1 100000", "cpu.quota"),
            v2("cpu.max.burst", "5", "cpu.burst"),
            v2("cpu.idle", "0", "cpu.idle"),
            v2("cpuset.mems", "0", "cpu.mems"),
        ],
    ),
    # pids
    ("pids.limit", {"pids": {"limit": 100}}, [v2("pids.max", "100", "pids.limit")]),
    ("pids.limit 0 is max", {"pids": {"limit": 0}}, [v2("pids.max", "max", "pids.limit")]),
    ("pids.limit -1 is max", {"pids": {"limit": -1}}, [v2("pids.max", "max", "pids.limit")]),
    # io
    ("blockIO.leafWeight is ignored", {"blockIO": {"leafWeight": 500}}, []),
    (
        "weightDevice without a weight is skipped",
        {"blockIO": {"weightDevice": [{"major": 8, "minor": 16, "leafWeight": 10}]}},
        [],
    ),
    (
        "io.max",
        {
            "blockIO": {
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 2097152}],
                "throttleReadIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}],
                "throttleWriteIOPSDevice": [
                    {"major": 8, "minor": 16, "rate": 200},
                    {"major": 253, "minor": 0, "rate": 300},
                ],
            }
        },
        [
            v2("io.max", "8:0 rbps=1048576", "blockIO.throttleReadBpsDevice[0]"),
            v2("io.max", "8:0 wbps=2097152", "blockIO.throttleWriteBpsDevice[0]"),
            v2("io.max", "8:16 riops=100", "blockIO.throttleReadIOPSDevice[0]"),
            v2("io.max", "8:16 wiops=200", "blockIO.throttleWriteIOPSDevice[0]"),
            v2("io.max", "253:0 wiops=300", "blockIO.throttleWriteIOPSDevice[1]"),
        ],
    ),
    # hugetlb
    (
        "hugetlb",
        {"hugepageLimits": [{"pageSize": "2MB", "limit": 2097152}, {"pageSize": "1GB", "limit": 0}]},
        [
            v2("hugetlb.2MB.max", "2097152", "hugepageLimits[0]"),
            v2("hugetlb.1GB.max", "0", "hugepageLimits[1]"),
        ],
    ),
    # unified
    (
        "unified keys, in order, last",
        {"unified": {"memory.high": "1G", "io.latency": "8:0 target=75"}, "pids": {"limit": 3}},
        [
            v2("pids.max", "3", "pids.limit"),
            v2("memory.high", "1G", "unified.memory.high"),
            v2("io.latency", "8:0 target=75", "unified.io.latency"),
        ],
    ),
    # devices are the eBPF filter's business, not a file write
    ("devices write nothing", {"devices": [{"allow": False, "access": "rwm"}]}, []),
    # sections in order: memory, cpu, pids, io, hugetlb, unified
    (
        "sections in order",
        {
            "unified": {"cgroup.max.depth": "2"},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 1}],
            "blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1}]},
            "pids": {"limit": 5},
            "cpu": {"shares": 2},
            "memory": {"limit": 4096},
        },
        [
            v2("memory.max", "4096", "memory.limit"),
            v2("cpu.weight", "1", "cpu.shares"),
            v2("pids.max", "5", "pids.limit"),
            v2("io.max", "8:0 rbps=1", "blockIO.throttleReadBpsDevice[0]"),
            v2("hugetlb.2MB.max", "1", "hugepageLimits[0]"),
            v2("cgroup.max.depth", "2", "unified.cgroup.max.depth"),
        ],
    ),
]


@pytest.mark.parametrize(("resources", "expected"), [c[1:] for c in V2_CASES], ids=[c[0] for c in V2_CASES])
def test_v2_writes(resources: Json, expected: list[Write]) -> None:
    assert v2_writes(resources) == expected


def test_v2_io_weight_writes() -> None:
    """The file, format and order of io.weight writes (the value's scale is pinned by a bug test below)."""
    resources = {
        "blockIO": {
            "weightDevice": [{"major": 8, "minor": 16, "weight": 200}],
            "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1}],
            "weight": 100,
        }
    }
    out = v2_writes(resources)
    assert [(w.controller, w.file, w.field) for w in out] == [
        ("", "io.weight", f"{R}.blockIO.weight"),
        ("", "io.weight", f"{R}.blockIO.weightDevice[0]"),
        ("", "io.max", f"{R}.blockIO.throttleReadBpsDevice[0]"),
    ]
    assert re.fullmatch(r"default [1-9][0-9]*", out[0].value)
    assert re.fullmatch(r"8:16 [1-9][0-9]*", out[1].value)


def test_v2_writes_go_to_the_unified_directory() -> None:
    resources = V2_CASES[-1][1]
    assert {w.controller for w in v2_writes(resources)} == {""}


# --- v2 errors -----------------------------------------------------------------------------------

V2_ERRORS: list[tuple[Json, type[Exception], str]] = [
    # what v2 cannot do
    ({"memory": {"swappiness": 60}}, Unsupported, f"{R}.memory.swappiness: not available on cgroup v2"),
    ({"memory": {"swappiness": 0}}, Unsupported, f"{R}.memory.swappiness: not available on cgroup v2"),
    ({"memory": {"kernelTCP": 1024}}, Unsupported, f"{R}.memory.kernelTCP: not available on cgroup v2"),
    (
        {"memory": {"disableOOMKiller": True}},
        Unsupported,
        f"{R}.memory.disableOOMKiller: not available on cgroup v2",
    ),
    ({"cpu": {"realtimePeriod": 1000000}}, Unsupported, f"{R}.cpu.realtimePeriod: realtime scheduling"),
    ({"cpu": {"realtimeRuntime": 950000}}, Unsupported, f"{R}.cpu.realtimeRuntime: realtime scheduling"),
    (
        {"network": {"classID": 1}},
        Unsupported,
        f"{R}.network: net_cls and net_prio do not exist on cgroup v2",
    ),
    (
        {"network": {"priorities": [{"name": "eth0", "priority": 1}]}},
        Unsupported,
        f"{R}.network: net_cls and net_prio",
    ),
    # swap needs a limit it is not below
    (
        {"memory": {"swap": 1000}},
        InvalidArgument,
        f"{R}.memory.swap: on cgroup v2 a swap limit needs a memory",
    ),
    (
        {"memory": {"limit": -1, "swap": 1000}},
        InvalidArgument,
        f"{R}.memory.swap: on cgroup v2 a swap limit needs a memory limit",
    ),
    (
        {"memory": {"limit": 2000, "swap": 1000}},
        InvalidArgument,
        f"{R}.memory.swap: must not be below the memory limit (2000)",
    ),
    # unified keys
    (
        {"unified": {"../memory.max": "1"}},
        InvalidArgument,
        f"{R}.unified.../memory.max: expected a file name",
    ),
    ({"unified": {"sub/memory.max": "1"}}, InvalidArgument, f"{R}.unified.sub/memory.max: expected a file"),
    ({"unified": {".hidden": "1"}}, InvalidArgument, f"{R}.unified..hidden: expected a file name"),
    ({"unified": {"memory.high": 1024}}, InvalidArgument, f"{R}.unified.memory.high: expected a file name"),
    ({"unified": ["memory.high=1"]}, InvalidArgument, f"{R}.unified: expected an object"),
    # types
    ({"memory": "x"}, InvalidArgument, f"{R}.memory: expected an object"),
    ({"memory": {"limit": "1G"}}, InvalidArgument, f"{R}.memory.limit: expected an integer"),
    ({"memory": {"swap": True}}, InvalidArgument, f"{R}.memory.swap: expected an integer"),
    ({"memory": {"reservation": 1.0}}, InvalidArgument, f"{R}.memory.reservation: expected an integer"),
    ({"cpu": {"shares": "1024"}}, InvalidArgument, f"{R}.cpu.shares: expected an integer"),
    ({"cpu": {"quota": "max"}}, InvalidArgument, f"{R}.cpu.quota: expected an integer"),
    ({"cpu": {"period": 1.5}}, InvalidArgument, f"{R}.cpu.period: expected an integer"),
    ({"cpu": {"burst": "1"}}, InvalidArgument, f"{R}.cpu.burst: expected an integer"),
    ({"cpu": {"idle": True}}, InvalidArgument, f"{R}.cpu.idle: expected an integer"),
    ({"cpu": {"cpus": 0.5}}, InvalidArgument, f"{R}.cpu.cpus: expected a string"),
    (
        {"pids": {"limit": None, "x": 1}, "cpu": {"mems": [0]}},
        InvalidArgument,
        f"{R}.cpu.mems: expected a string",
    ),
    ({"pids": {"limit": "max"}}, InvalidArgument, f"{R}.pids.limit: expected an integer"),
    ({"pids": [1]}, InvalidArgument, f"{R}.pids: expected an object"),
    ({"blockIO": {"weight": "100"}}, InvalidArgument, f"{R}.blockIO.weight: expected an integer"),
    ({"blockIO": {"weightDevice": 1}}, InvalidArgument, f"{R}.blockIO.weightDevice: expected an array"),
    (
        {"blockIO": {"weightDevice": [{"minor": 0, "weight": 10}]}},
        InvalidArgument,
        f"{R}.blockIO.weightDevice[0]: major and minor are required",
    ),
    (
        {"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "weight": "10"}]}},
        InvalidArgument,
        f"{R}.blockIO.weightDevice[0].weight: expected an integer",
    ),
    (
        {"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0}]}},
        InvalidArgument,
        f"{R}.blockIO.throttleReadBpsDevice[0].rate: required",
    ),
    (
        {"blockIO": {"throttleWriteIOPSDevice": [{"major": 8, "minor": "0", "rate": 1}]}},
        InvalidArgument,
        f"{R}.blockIO.throttleWriteIOPSDevice[0].minor: expected an integer",
    ),
    (
        {"hugepageLimits": [{"pageSize": "2MB", "limit": 1}, {"pageSize": "1GB"}]},
        InvalidArgument,
        f"{R}.hugepageLimits[1]: pageSize and limit are required",
    ),
    ({"hugepageLimits": "2MB"}, InvalidArgument, f"{R}.hugepageLimits: expected an array of objects"),
    ({"network": "eth0"}, InvalidArgument, f"{R}.network: expected an object"),
]


@pytest.mark.parametrize(("resources", "exc", "message"), V2_ERRORS, ids=[e[2] for e in V2_ERRORS])
def test_v2_errors(resources: Json, exc: type[Exception], message: str) -> None:
    with pytest.raises(exc) as info:
        v2_writes(resources)
    assert type(info.value) is exc
    assert str(info.value).startswith(message)


# --- bugs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mapping", [v1_writes, v2_writes], ids=["v1", "v2"])
@pytest.mark.parametrize("page_size", ["2MB/../../escape", "1GB/x"])
def test_hugetlb_page_size_must_be_a_size(mapping: Any, page_size: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^linux\.resources\.hugepageLimits\[0\]"):
        mapping({"hugepageLimits": [{"pageSize": page_size, "limit": 1}]})


@pytest.mark.parametrize("entry", [{"priority": 5}, {"name": "eth0"}, {"name": 7, "priority": 5}])
def test_net_prio_needs_a_name_and_a_priority(entry: Json) -> None:
    with pytest.raises(InvalidArgument, match=r"^linux\.resources\.network\.priorities\[0\]"):
        v1_writes({"network": {"priorities": [entry]}})


def test_shares_1_maps_to_a_valid_weight() -> None:
    assert shares_to_weight(1) == 1


def test_v2_shares_0_writes_no_weight() -> None:
    assert v2_writes({"cpu": {"shares": 0}}) == []


@pytest.mark.parametrize(("weight", "io_weight"), [(10, 1), (100, 910), (500, 4950), (1000, 10000)])
def test_v2_io_weight_is_converted_from_blkio_weight(weight: int, io_weight: int) -> None:
    assert v2_writes({"blockIO": {"weight": weight}}) == [
        v2("io.weight", f"default {io_weight}", "blockIO.weight")
    ]


def test_v2_io_weight_device_is_converted_from_blkio_weight() -> None:
    resources = {"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "weight": 500}]}}
    assert v2_writes(resources) == [v2("io.weight", "8:0 4950", "blockIO.weightDevice[0]")]


def test_v2_empty_unified_key_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"^linux\.resources\.unified\."):
        v2_writes({"unified": {"": "1"}})
