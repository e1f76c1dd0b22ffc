"""Unit tests for Cgroup.apply, Cgroup.dir_of and the v2 side of Cgroup.create on temp-dir trees.

The trees are plain directories shaped like a host's cgroup mounts: a write to a missing file is
what the kernel does for a file a controller lacks (ENOENT), and the errno paths are driven by a
stand-in for open() in ketch.runtime.cgroups. Nothing here needs root or touches /sys.
"""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path
from typing import Any

import pytest

from ketch.errors import InvalidArgument, SetupFailed, Unsupported
from ketch.runtime import cgroups
from ketch.runtime.cgroups import Cgroup
from ketch.runtime.resources import v1_writes, v2_writes

Json = dict[str, Any]
PATH = "/ketch/c1"

MEMORY_FILES = [
    "memory.limit_in_bytes",
    "memory.soft_limit_in_bytes",
    "memory.memsw.limit_in_bytes",
    "memory.kmem.tcp.limit_in_bytes",
    "memory.swappiness",
    "memory.oom_control",
]
CPU_FILES = [
    "cpu.shares",
    "cpu.cfs_period_us",
    "cpu.cfs_quota_us",
    "cpu.cfs_burst_us",
    "cpu.rt_period_us",
    "cpu.rt_runtime_us",
    "cpu.idle",
]
BLKIO_FILES = [
    "blkio.weight",
    "blkio.leaf_weight",
    "blkio.weight_device",
    "blkio.leaf_weight_device",
    "blkio.throttle.read_bps_device",
    "blkio.throttle.write_bps_device",
    "blkio.throttle.read_iops_device",
    "blkio.throttle.write_iops_device",
]

# a v1 hybrid host: one hierarchy per controller, plus the empty v2 "unified" mount
V1_LAYOUT: dict[str, list[str]] = {
    "cpu": CPU_FILES,
    "cpuacct": ["cpuacct.usage"],
    "cpuset": ["cpuset.cpus", "cpuset.mems"],
    "memory": MEMORY_FILES,
    "pids": ["pids.max"],
    "devices": ["devices.allow", "devices.deny"],
    "blkio": BLKIO_FILES,
    "hugetlb": ["hugetlb.2MB.limit_in_bytes", "hugetlb.1GB.limit_in_bytes"],
    "net_cls": ["net_cls.classid"],
    "net_prio": ["net_prio.ifpriomap"],
    "freezer": ["freezer.state"],
    "unified": ["cgroup.procs"],
}

# the usual systemd layout: cpu and cpuacct (and net_cls and net_prio) co-mounted
COMOUNTED_LAYOUT: dict[str, list[str]] = {
    "cpu,cpuacct": [*CPU_FILES, "cpuacct.usage"],
    "cpuset": ["cpuset.cpus", "cpuset.mems"],
    "memory": MEMORY_FILES,
    "pids": ["pids.max"],
    "devices": ["devices.allow", "devices.deny"],
    "blkio": BLKIO_FILES,
    "hugetlb": ["hugetlb.2MB.limit_in_bytes", "hugetlb.1GB.limit_in_bytes"],
    "net_cls,net_prio": ["net_cls.classid", "net_prio.ifpriomap"],
    "systemd": ["cgroup.procs"],
}

V2_FILES = [
    "memory.max",
    "memory.low",
    "memory.high",
    "memory.swap.max",
    "cpu.weight",
    "cpu.max",
    "cpu.max.burst",
    "cpu.idle",
    "cpuset.cpus",
    "cpuset.mems",
    "pids.max",
    "io.weight",
    "io.max",
    "hugetlb.2MB.max",
    "hugetlb.1GB.max",
    "cgroup.procs",
]

FULL_V1: Json = {
    "memory": {
        "limit": 104857600,
        "reservation": 52428800,
        "swap": 209715200,
        "kernelTCP": 1048576,
        "swappiness": 10,
        "disableOOMKiller": True,
    },
    "cpu": {
        "shares": 512,
        "period": 100000,
        "quota": 50000,
        "burst": 1000,
        "realtimePeriod": 1000000,
        "realtimeRuntime": 0,
        "idle": 0,
        "cpus": "0-1",
        "mems": "0",
    },
    "pids": {"limit": 64},
    "blockIO": {
        "weight": 300,
        "leafWeight": 200,
        "weightDevice": [{"major": 8, "minor": 0, "weight": 400, "leafWeight": 100}],
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
        "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 2097152}],
        "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}],
        "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 200}],
    },
    "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}, {"pageSize": "1GB", "limit": 0}],
    "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]},
    "devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
    ],
}

# controller -> file -> the last value written there
FULL_V1_FILES: dict[str, dict[str, str]] = {
    "memory": {
        "memory.limit_in_bytes": "104857600",
        "memory.soft_limit_in_bytes": "52428800",
        "memory.memsw.limit_in_bytes": "209715200",
        "memory.kmem.tcp.limit_in_bytes": "1048576",
        "memory.swappiness": "10",
        "memory.oom_control": "1",
    },
    "cpu": {
        "cpu.shares": "512",
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "50000",
        "cpu.cfs_burst_us": "1000",
        "cpu.rt_period_us": "1000000",
        "cpu.rt_runtime_us": "0",
        "cpu.idle": "0",
    },
    "cpuset": {"cpuset.cpus": "0-1", "cpuset.mems": "0"},
    "pids": {"pids.max": "64"},
    "blkio": {
        "blkio.weight": "300",
        "blkio.leaf_weight": "200",
        "blkio.weight_device": "8:0 400",
        "blkio.leaf_weight_device": "8:0 100",
        "blkio.throttle.read_bps_device": "8:0 1048576",
        "blkio.throttle.write_bps_device": "8:0 2097152",
        "blkio.throttle.read_iops_device": "8:0 100",
        "blkio.throttle.write_iops_device": "8:0 200",
    },
    "hugetlb": {"hugetlb.2MB.limit_in_bytes": "4194304", "hugetlb.1GB.limit_in_bytes": "0"},
    "net_cls": {"net_cls.classid": "1048577"},
    "net_prio": {"net_prio.ifpriomap": "eth0 5"},
    # plain files keep only the last write: deny all, then the last of runc's defaults (tun)
    "devices": {"devices.deny": "a", "devices.allow": "c 10:200 rwm"},
}

FULL_V2: Json = {
    "memory": {"limit": 104857600, "reservation": 52428800, "swap": 209715200},
    "cpu": {
        "shares": 1024,
        "quota": 50000,
        "period": 200000,
        "burst": 1000,
        "idle": 1,
        "cpus": "0-1",
        "mems": "0",
    },
    "pids": {"limit": 64},
    "blockIO": {
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}],
    },
    "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}, {"pageSize": "1GB", "limit": 0}],
    "unified": {"memory.high": "94371840"},
}

FULL_V2_FILES: dict[str, str] = {
    "memory.max": "104857600",
    "memory.low": "52428800",
    "memory.swap.max": "104857600",
    "memory.high": "94371840",
    "cpu.weight": "39",
    "cpu.max": "50000 200000",
    "cpu.max.burst": "1000",
    "cpu.idle": "1",
    "cpuset.cpus": "0-1",
    "cpuset.mems": "0",
    "pids.max": "64",
    "io.max": "8:16 wiops=100",  # the last of the two io.max writes
    "hugetlb.2MB.max": "4194304",
    "hugetlb.1GB.max": "0",
}


def build(root: Path, layout: dict[str, list[str]]) -> Cgroup:
    """A v1 tree: root/<hierarchy>/ketch/c1 holding the layout's files, created empty."""
    dirs = {}
    for name, files in layout.items():
        leaf = root / name / "ketch" / "c1"
        leaf.mkdir(parents=True)
        for file in files:
            (leaf / file).write_text("")
        dirs[name] = str(leaf)
    return Cgroup(PATH, dirs)


def build_v2(root: Path, files: list[str] = V2_FILES) -> Cgroup:
    leaf = root / "ketch" / "c1"
    leaf.mkdir(parents=True)
    for file in files:
        (leaf / file).write_text("")
    return Cgroup(PATH, {"": str(leaf)})


def contents(cg: Cgroup) -> dict[str, dict[str, str]]:
    """hierarchy -> file -> content, for every file in the tree."""
    return {
        name: {e.name: Path(e.path).read_text() for e in os.scandir(d) if e.is_file()}
        for name, d in cg.dirs.items()
    }


def expected_tree(
    layout: dict[str, list[str]], values: dict[str, dict[str, str]]
) -> dict[str, dict[str, str]]:
    """The layout's files, empty, with the values of each controller in its (co-mounted) hierarchy."""
    tree = {name: dict.fromkeys(files, "") for name, files in layout.items()}
    for controller, files in values.items():
        (name,) = [n for n in layout if controller in n.split(",")]
        tree[name].update(files)
    return tree


class FakeKernel:
    """Stands in for open() in ketch.runtime.cgroups: logs each write and refuses chosen ones.

    refuse maps a file name to the errnos its successive writes fail with (then they succeed).
    """

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.refuse: dict[str, list[int]] = {}

    def __call__(self, path: str, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" not in mode:
            return builtins.open(path, mode, *args, **kwargs)
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return _FakeFile(self, path)


class _FakeFile:
    def __init__(self, kernel: FakeKernel, path: str) -> None:
        self.kernel, self.path = kernel, path

    def __enter__(self) -> _FakeFile:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def write(self, value: str) -> int:
        pending = self.kernel.refuse.get(os.path.basename(self.path))
        if pending:
            err = pending.pop(0)
            raise OSError(err, os.strerror(err), self.path)
        self.kernel.log.append((self.path, value))
        Path(self.path).write_text(value)
        return len(value)


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    fake = FakeKernel()
    monkeypatch.setattr(cgroups, "open", fake, raising=False)
    return fake


# --- dir_of --------------------------------------------------------------------------------------


def test_dir_of_finds_each_v1_hierarchy(tmp_path: Path) -> None:
    cg = build(tmp_path, V1_LAYOUT)
    for name in V1_LAYOUT:
        assert cg.dir_of(name, "f") == cg.dirs[name]


@pytest.mark.parametrize(
    ("controller", "hierarchy"),
    [
        ("cpu", "cpu,cpuacct"),
        ("cpuacct", "cpu,cpuacct"),
        ("net_cls", "net_cls,net_prio"),
        ("net_prio", "net_cls,net_prio"),
        ("cpuset", "cpuset"),
        ("memory", "memory"),
    ],
)
def test_dir_of_finds_co_mounted_controllers(tmp_path: Path, controller: str, hierarchy: str) -> None:
    cg = build(tmp_path, COMOUNTED_LAYOUT)
    assert cg.dir_of(controller, "f") == str(tmp_path / hierarchy / "ketch" / "c1")


def test_dir_of_does_not_take_a_prefix_for_a_controller() -> None:
    """ "cpu" is not "cpuset", and "net" is in neither "net_cls" nor "net_prio"."""
    cg = Cgroup(PATH, {"cpuset": "/s", "net_cls,net_prio": "/n"})
    with pytest.raises(Unsupported):
        cg.dir_of("cpu", "linux.resources.cpu.shares")
    with pytest.raises(Unsupported):
        cg.dir_of("net", "x")


def test_dir_of_a_missing_controller_names_the_field() -> None:
    cg = Cgroup(PATH, {"memory": "/m", "unified": "/u"})
    with pytest.raises(Unsupported) as info:
        cg.dir_of("hugetlb", "linux.resources.hugepageLimits[0]")
    assert str(info.value) == (
        "linux.resources.hugepageLimits[0]: the hugetlb cgroup controller is not available on this host"
    )


@pytest.mark.parametrize("controller", ["", "memory", "cpu", "anything"])
def test_dir_of_on_v2_is_the_unified_directory(controller: str) -> None:
    assert Cgroup(PATH, {"": "/sys/fs/cgroup/ketch/c1"}).dir_of(controller, "f") == "/sys/fs/cgroup/ketch/c1"


def test_a_hybrid_unified_mount_is_not_v2() -> None:
    assert not Cgroup(PATH, {"unified": "/u", "memory": "/m"}).is_v2
    assert not Cgroup(PATH, {"unified": "/u"}).is_v2
    assert Cgroup(PATH, {"": "/u"}).is_v2


# --- apply on v1 ---------------------------------------------------------------------------------


def test_v1_values_land_in_their_files(tmp_path: Path) -> None:
    cg = build(tmp_path, V1_LAYOUT)
    assert cg.apply(FULL_V1) == []
    assert contents(cg) == expected_tree(V1_LAYOUT, FULL_V1_FILES)


def test_v1_co_mounted_values_land_in_the_shared_hierarchy(tmp_path: Path) -> None:
    cg = build(tmp_path, COMOUNTED_LAYOUT)
    assert cg.apply(FULL_V1) == []
    tree = contents(cg)
    assert tree == expected_tree(COMOUNTED_LAYOUT, FULL_V1_FILES)
    assert tree["cpu,cpuacct"]["cpu.shares"] == "512"
    assert tree["cpu,cpuacct"]["cpuacct.usage"] == ""
    assert tree["net_cls,net_prio"]["net_prio.ifpriomap"] == "eth0 5"


@pytest.mark.parametrize("layout", [V1_LAYOUT, COMOUNTED_LAYOUT], ids=["separate", "co-mounted"])
def test_v1_every_write_in_order(tmp_path: Path, kernel: FakeKernel, layout: dict[str, list[str]]) -> None:
    cg = build(tmp_path, layout)
    cg.apply(FULL_V1)
    home = {c: d for name, d in cg.dirs.items() for c in name.split(",")}
    expected = [(os.path.join(home[w.controller], w.file), w.value) for w in v1_writes(FULL_V1)]
    assert kernel.log == expected
    devices = [v for p, v in kernel.log if p.startswith(home["devices"])]
    assert devices[:3] == ["a", "c 10:229 rwm", "c *:* m"]
    assert len(devices) == 2 + 11


def test_v1_empty_resources_write_nothing(tmp_path: Path) -> None:
    cg = build(tmp_path, V1_LAYOUT)
    assert cg.apply({}) == []
    assert contents(cg) == expected_tree(V1_LAYOUT, {})


def test_v1_applies_only_what_the_spec_sets(tmp_path: Path) -> None:
    """No device rules in the spec: not even runc's defaults are written."""
    cg = build(tmp_path, V1_LAYOUT)
    cg.apply({"memory": {"limit": 4096}, "pids": {"limit": -1}})
    assert contents(cg) == expected_tree(
        V1_LAYOUT, {"memory": {"memory.limit_in_bytes": "4096"}, "pids": {"pids.max": "max"}}
    )


@pytest.mark.parametrize(
    ("resources", "field", "file", "hierarchy"),
    [
        (
            {"memory": {"kernelTCP": 1}},
            "linux.resources.memory.kernelTCP",
            "memory.kmem.tcp.limit_in_bytes",
            "memory",
        ),
        ({"memory": {"swap": 1}}, "linux.resources.memory.swap", "memory.memsw.limit_in_bytes", "memory"),
        ({"cpu": {"burst": 1}}, "linux.resources.cpu.burst", "cpu.cfs_burst_us", "cpu"),
        ({"cpu": {"realtimeRuntime": 1}}, "linux.resources.cpu.realtimeRuntime", "cpu.rt_runtime_us", "cpu"),
        ({"cpu": {"idle": 1}}, "linux.resources.cpu.idle", "cpu.idle", "cpu"),
        (
            {"hugepageLimits": [{"pageSize": "2MB", "limit": 1}, {"pageSize": "1GB", "limit": 1}]},
            "linux.resources.hugepageLimits[1]",
            "hugetlb.1GB.limit_in_bytes",
            "hugetlb",
        ),
        (
            {"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "leafWeight": 1}]}},
            "linux.resources.blockIO.weightDevice[0]",
            "blkio.leaf_weight_device",
            "blkio",
        ),
    ],
)
def test_v1_missing_file_is_unsupported(
    tmp_path: Path, resources: Json, field: str, file: str, hierarchy: str
) -> None:
    cg = build(tmp_path, V1_LAYOUT)
    (Path(cg.dirs[hierarchy]) / file).unlink()
    with pytest.raises(Unsupported) as info:
        cg.apply(resources)
    assert str(info.value) == f"{field}: {file} is not available on this host"
    assert isinstance(info.value.__cause__, FileNotFoundError)


@pytest.mark.parametrize(
    ("resources", "field", "controller"),
    [
        ({"network": {"classID": 1}}, "linux.resources.network.classID", "net_cls"),
        (
            {"network": {"priorities": [{"name": "lo", "priority": 1}]}},
            "linux.resources.network.priorities[0]",
            "net_prio",
        ),
        (
            {"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]},
            "linux.resources.hugepageLimits[0]",
            "hugetlb",
        ),
        ({"blockIO": {"weight": 100}}, "linux.resources.blockIO.weight", "blkio"),
        ({"devices": [{"allow": False}]}, "linux.resources.devices[0]", "devices"),
        ({"cpu": {"cpus": "0"}}, "linux.resources.cpu.cpus", "cpuset"),
        ({"cpu": {"shares": 2}}, "linux.resources.cpu.shares", "cpu"),
        ({"pids": {"limit": 1}}, "linux.resources.pids.limit", "pids"),
        ({"memory": {"swappiness": 1}}, "linux.resources.memory.swappiness", "memory"),
    ],
)
def test_v1_missing_controller_is_unsupported(
    tmp_path: Path, resources: Json, field: str, controller: str
) -> None:
    layout = {name: files for name, files in V1_LAYOUT.items() if name != controller}
    cg = build(tmp_path, layout)
    with pytest.raises(Unsupported) as info:
        cg.apply(resources)
    assert str(info.value) == f"{field}: the {controller} cgroup controller is not available on this host"


@pytest.mark.parametrize("cgroup", ["v1", "v2"])
def test_enoent_from_the_kernel_is_unsupported_naming_the_field(
    tmp_path: Path, kernel: FakeKernel, cgroup: str
) -> None:
    """The ENOENT branch of Cgroup._write, with an open() that does not create files (like runc's)."""
    if cgroup == "v1":
        cg = build(tmp_path, V1_LAYOUT)
        (Path(cg.dirs["memory"]) / "memory.memsw.limit_in_bytes").unlink()
        resources: Json = {"memory": {"limit": 1, "swap": 2}}
        field, file = "linux.resources.memory.swap", "memory.memsw.limit_in_bytes"
    else:
        cg = build_v2(tmp_path, [f for f in V2_FILES if f != "cpu.max.burst"])
        resources = {"cpu": {"quota": 1, "burst": 1}}
        field, file = "linux.resources.cpu.burst", "cpu.max.burst"
    with pytest.raises(Unsupported) as info:
        cg.apply(resources)
    assert str(info.value) == f"{field}: {file} is not available on this host"
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert len(kernel.log) == 1


def test_v1_missing_cgroup_directory_is_unsupported(tmp_path: Path) -> None:
    cg = Cgroup(PATH, {"pids": str(tmp_path / "pids" / "ketch" / "c1")})
    with pytest.raises(Unsupported, match=r"^linux\.resources\.pids\.limit: pids\.max is not available"):
        cg.apply({"pids": {"limit": 1}})


def test_v1_refused_spec_writes_nothing(tmp_path: Path) -> None:
    """The mapping is checked whole before the first write."""
    cg = build(tmp_path, V1_LAYOUT)
    with pytest.raises(Unsupported, match=r"^linux\.resources\.unified: "):
        cg.apply({"memory": {"limit": 1}, "pids": {"limit": 1}, "unified": {"memory.high": "1"}})
    with pytest.raises(InvalidArgument, match=r"^linux\.resources\.devices\[0\]\.type: "):
        cg.apply({"memory": {"limit": 1}, "devices": [{"type": "x"}]})
    assert contents(cg) == expected_tree(V1_LAYOUT, {})


def test_v1_devices_give_no_warning(tmp_path: Path) -> None:
    cg = build(tmp_path, V1_LAYOUT)
    assert cg.apply({"devices": [{"allow": False, "access": "rwm"}]}) == []


# --- apply on v2 ---------------------------------------------------------------------------------


def test_v2_values_land_in_the_unified_directory(tmp_path: Path) -> None:
    cg = build_v2(tmp_path)
    assert cg.apply(FULL_V2) == []
    expected = dict.fromkeys(V2_FILES, "") | FULL_V2_FILES
    assert contents(cg) == {"": expected}


def test_v2_every_write_in_order(tmp_path: Path, kernel: FakeKernel) -> None:
    cg = build_v2(tmp_path)
    cg.apply(FULL_V2)
    leaf = cg.dirs[""]
    assert kernel.log == [(os.path.join(leaf, w.file), w.value) for w in v2_writes(FULL_V2)]
    assert [v for p, v in kernel.log if p.endswith("/io.max")] == ["8:0 rbps=1048576", "8:16 wiops=100"]
    assert kernel.log[-1] == (os.path.join(leaf, "memory.high"), "94371840")


def test_v2_device_rules_cannot_change_live(tmp_path: Path) -> None:
    cg = build_v2(tmp_path)
    with pytest.raises(Unsupported, match=r"^linux\.resources\.devices: device rules cannot change"):
        cg.apply({"devices": [{"allow": False, "access": "rwm"}]}, live=True)


@pytest.mark.parametrize("devices", [None, []])
def test_v2_without_device_rules_no_warning(tmp_path: Path, devices: Any) -> None:
    assert build_v2(tmp_path).apply({"devices": devices}) == []


@pytest.mark.parametrize(
    ("resources", "field", "file"),
    [
        ({"memory": {"limit": 1, "swap": 2}}, "linux.resources.memory.swap", "memory.swap.max"),
        ({"cpu": {"burst": 1}}, "linux.resources.cpu.burst", "cpu.max.burst"),
        ({"cpu": {"mems": "0"}}, "linux.resources.cpu.mems", "cpuset.mems"),
        (
            {"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]},
            "linux.resources.hugepageLimits[0]",
            "hugetlb.2MB.max",
        ),
        (
            {"unified": {"memory.oom.group": "1"}},
            "linux.resources.unified.memory.oom.group",
            "memory.oom.group",
        ),
    ],
)
def test_v2_missing_file_is_unsupported(tmp_path: Path, resources: Json, field: str, file: str) -> None:
    cg = build_v2(tmp_path, [f for f in V2_FILES if f != file])
    with pytest.raises(Unsupported) as info:
        cg.apply(resources)
    assert str(info.value) == f"{field}: {file} is not available on this host"


def test_v2_refused_spec_writes_nothing(tmp_path: Path) -> None:
    cg = build_v2(tmp_path)
    with pytest.raises(Unsupported, match=r"^linux\.resources\.memory\.swappiness: "):
        cg.apply({"pids": {"limit": 1}, "memory": {"limit": 1, "swappiness": 1}})
    with pytest.raises(Unsupported, match=r"^linux\.resources\.network: "):
        cg.apply({"pids": {"limit": 1}, "network": {"classID": 1}})
    assert contents(cg) == {"": dict.fromkeys(V2_FILES, "")}


# --- kernel refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("err", [errno.EINVAL, errno.ERANGE, errno.EBUSY])
def test_refused_value_is_invalid_argument(tmp_path: Path, kernel: FakeKernel, err: int) -> None:
    cg = build(tmp_path, V1_LAYOUT)
    kernel.refuse["cpu.shares"] = [err]
    with pytest.raises(InvalidArgument) as info:
        cg.apply({"cpu": {"shares": 1024}})
    assert str(info.value) == "linux.resources.cpu.shares: the kernel refused '1024' for cpu.shares"
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == err


def test_refused_non_memory_value_stops_at_once(tmp_path: Path, kernel: FakeKernel) -> None:
    cg = build(tmp_path, V1_LAYOUT)
    kernel.refuse["cpu.shares"] = [errno.EINVAL]
    with pytest.raises(InvalidArgument, match=r"^linux\.resources\.cpu\.shares: "):
        cg.apply({"cpu": {"shares": 1024, "period": 100000}, "pids": {"limit": 5}})
    assert kernel.log == []


@pytest.mark.parametrize("err", [errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EIO])
def test_other_write_errors_are_setup_failed(tmp_path: Path, kernel: FakeKernel, err: int) -> None:
    cg = build_v2(tmp_path)
    kernel.refuse["pids.max"] = [err]
    with pytest.raises(SetupFailed) as info:
        cg.apply({"pids": {"limit": 5}})
    assert str(info.value) == f"linux.resources.pids.limit: writing pids.max: {os.strerror(err)}"
    assert info.value.errno == err


def test_memory_errors_other_than_refusal_are_not_retried(tmp_path: Path, kernel: FakeKernel) -> None:
    cg = build(tmp_path, V1_LAYOUT)
    kernel.refuse["memory.limit_in_bytes"] = [errno.EACCES]
    with pytest.raises(SetupFailed) as info:
        cg.apply({"memory": {"limit": 1, "swap": 2}})
    assert info.value.errno == errno.EACCES
    assert kernel.log == []


def test_a_directory_in_place_of_the_file_is_setup_failed(tmp_path: Path) -> None:
    cg = build_v2(tmp_path, [f for f in V2_FILES if f != "cpu.weight"])
    (Path(cg.dirs[""]) / "cpu.weight").mkdir()
    with pytest.raises(SetupFailed) as info:
        cg.apply({"cpu": {"shares": 1024}})
    assert info.value.errno == errno.EISDIR
    assert str(info.value).startswith("linux.resources.cpu.shares: writing cpu.weight: ")


def test_refused_memory_limit_is_retried_after_the_rest(tmp_path: Path, kernel: FakeKernel) -> None:
    """Raising memory above the current memsw limit fails until memsw is raised: runc's ordering problem."""
    cg = build(tmp_path, V1_LAYOUT)
    kernel.refuse["memory.limit_in_bytes"] = [errno.EINVAL]
    resources = {"memory": {"limit": 300, "swap": 400}, "pids": {"limit": 5}}
    assert cg.apply(resources) == []
    mem, pids = cg.dirs["memory"], cg.dirs["pids"]
    assert kernel.log == [
        (f"{mem}/memory.memsw.limit_in_bytes", "400"),
        (f"{pids}/pids.max", "5"),
        (f"{mem}/memory.limit_in_bytes", "300"),
    ]
    assert (Path(mem) / "memory.limit_in_bytes").read_text() == "300"


def test_every_refused_memory_write_is_retried_in_order(tmp_path: Path, kernel: FakeKernel) -> None:
    cg = build_v2(tmp_path)
    kernel.refuse["memory.max"] = [errno.EBUSY]
    kernel.refuse["memory.swap.max"] = [errno.EINVAL]
    assert cg.apply({"memory": {"limit": 100, "swap": 300, "reservation": 50}}) == []
    leaf = cg.dirs[""]
    assert kernel.log == [
        (f"{leaf}/memory.low", "50"),
        (f"{leaf}/memory.max", "100"),
        (f"{leaf}/memory.swap.max", "200"),
    ]


def test_memory_refused_twice_is_invalid_argument(tmp_path: Path, kernel: FakeKernel) -> None:
    cg = build(tmp_path, V1_LAYOUT)
    kernel.refuse["memory.limit_in_bytes"] = [errno.EINVAL, errno.EINVAL]
    with pytest.raises(InvalidArgument) as info:
        cg.apply({"memory": {"limit": 300, "swap": 400}})
    assert str(info.value) == (
        "linux.resources.memory.limit: the kernel refused '300' for memory.limit_in_bytes"
    )
    assert kernel.log == [(f"{cg.dirs['memory']}/memory.memsw.limit_in_bytes", "400")]
    assert kernel.refuse["memory.limit_in_bytes"] == []


# --- create on v2 --------------------------------------------------------------------------------


def v2_root(tmp_path: Path, controllers: str = "cpu memory pids", enabled: str = "") -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text(enabled)
    return root


def test_create_enables_the_root_controllers(tmp_path: Path) -> None:
    root = v2_root(tmp_path)
    Cgroup("/ketch/c1", {"": str(root) + "/ketch/c1"}).create()
    assert (root / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (root / "ketch").is_dir()
    assert (root / "ketch" / "c1").is_dir()
    assert not (root / "ketch" / "cgroup.subtree_control").exists()
    assert not (root / "ketch" / "c1" / "cgroup.subtree_control").exists()


def test_create_enables_only_what_is_missing(tmp_path: Path) -> None:
    root = v2_root(tmp_path, "cpuset cpu io memory pids", "cpu io\n")
    Cgroup("/c1", {"": str(root) + "/c1"}).create()
    assert (root / "cgroup.subtree_control").read_text() == "+cpuset +memory +pids"
    assert (root / "c1").is_dir()


def test_create_leaves_a_fully_enabled_parent_alone(tmp_path: Path) -> None:
    root = v2_root(tmp_path, "cpu memory", "memory cpu\n")
    Cgroup("/c1", {"": str(root) + "/c1"}).create()
    assert (root / "cgroup.subtree_control").read_text() == "memory cpu\n"


def test_create_enables_controllers_in_every_ancestor_but_not_the_leaf(tmp_path: Path) -> None:
    root = v2_root(tmp_path)
    mid = root / "ketch"
    mid.mkdir()
    (mid / "cgroup.controllers").write_text("memory pids\n")
    (mid / "cgroup.subtree_control").write_text("")
    Cgroup("/ketch/pod/c1", {"": str(root) + "/ketch/pod/c1"}).create()
    assert (root / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (mid / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (mid / "pod" / "c1").is_dir()
    assert not (mid / "pod" / "cgroup.subtree_control").exists()


def test_create_on_a_tree_without_controller_files(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    Cgroup("/a/b/c1", {"": str(root) + "/a/b/c1"}).create()
    assert (root / "a" / "b" / "c1").is_dir()
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == []


def test_create_is_idempotent_on_v2(tmp_path: Path) -> None:
    root = v2_root(tmp_path)
    cg = Cgroup("/ketch/c1", {"": str(root) + "/ketch/c1"})
    cg.create()
    cg.create()
    assert (root / "ketch" / "c1").is_dir()


def test_create_on_hybrid_does_not_enable_controllers(tmp_path: Path) -> None:
    """Only a pure v2 host (key "") has its subtree_control written; hybrid "unified" is v1 rules."""
    root = v2_root(tmp_path)
    Cgroup("/c1", {"unified": str(root) + "/c1"}).create()
    assert (root / "cgroup.subtree_control").read_text() == ""
    assert (root / "c1").is_dir()


def test_create_fails_when_subtree_control_cannot_be_read(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu\n")
    (root / "cgroup.subtree_control").mkdir()
    with pytest.raises(SetupFailed) as info:
        Cgroup("/c1", {"": str(root) + "/c1"}).create()
    assert str(info.value).startswith(f"cannot create cgroup {root}/c1: ")
    assert info.value.errno == errno.EISDIR


def test_create_then_apply_on_v2(tmp_path: Path) -> None:
    root = v2_root(tmp_path)
    cg = Cgroup.at("/ketch/c1", {"": str(root)})
    cg.create()
    leaf = Path(cg.dirs[""])
    (leaf / "pids.max").write_text("max\n")
    assert cg.apply({"pids": {"limit": 7}}) == []
    assert (leaf / "pids.max").read_text() == "7"


# --- bugs ----------------------------------------------------------------------------------------


def test_hugetlb_page_size_cannot_escape_the_cgroup(tmp_path: Path) -> None:
    cg = build_v2(tmp_path)
    leaf = Path(cg.dirs[""])
    (leaf / "hugetlb.2MB").mkdir()  # a child cgroup whose name starts like a hugetlb file
    escaped = leaf.parent / "escape.max"
    try:
        with pytest.raises(InvalidArgument):
            cg.apply({"hugepageLimits": [{"pageSize": "2MB/../../escape", "limit": 1}]})
    finally:
        assert not escaped.exists(), f"wrote {escaped}"
