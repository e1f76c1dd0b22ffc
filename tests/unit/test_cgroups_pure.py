"""Unit tests for ketch.runtime.cgroups on fake mountinfo files and temp-dir cgroup trees."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument, SetupFailed
from ketch.runtime.cgroups import Cgroup, container_path, hierarchies

V1_LINES = """\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 22 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
31 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
32 25 0:30 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpuset
33 25 0:31 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,freezer
34 25 0:32 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids
35 25 0:33 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,net_cls,net_prio
"""
UNIFIED_LINE = "26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate\n"
OTHER_LINES = """\
1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
60 1 0:50 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
"""

V1_EXPECTED = {
    "systemd": "/sys/fs/cgroup/systemd",
    "cpu,cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
    "memory": "/sys/fs/cgroup/memory",
    "cpuset": "/sys/fs/cgroup/cpuset",
    "freezer": "/sys/fs/cgroup/freezer",
    "pids": "/sys/fs/cgroup/pids",
    "net_cls,net_prio": "/sys/fs/cgroup/net_cls,net_prio",
}


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# --- hierarchies ---------------------------------------------------------------------------------


def test_v1_host(tmp_path: Path) -> None:
    assert hierarchies(write(tmp_path / "mountinfo", OTHER_LINES + V1_LINES)) == V1_EXPECTED


def test_hybrid_host(tmp_path: Path) -> None:
    found = hierarchies(write(tmp_path / "mountinfo", OTHER_LINES + V1_LINES + UNIFIED_LINE))
    assert found == {**V1_EXPECTED, "unified": "/sys/fs/cgroup/unified"}


def test_pure_v2_host(tmp_path: Path) -> None:
    point = tmp_path / "cgroup"
    point.mkdir()
    (point / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    line = f"30 25 0:26 / {point} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
    assert hierarchies(write(tmp_path / "mountinfo", OTHER_LINES + line)) == {"": str(point)}


def test_single_v1_hierarchy_is_not_taken_for_v2(tmp_path: Path) -> None:
    point = tmp_path / "freezer"
    point.mkdir()
    (point / "cgroup.controllers").write_text("")
    (point / "cgroup.clone_children").write_text("0\n")
    line = f"33 25 0:31 / {point} rw,relatime shared:16 - cgroup cgroup rw,freezer\n"
    assert hierarchies(write(tmp_path / "mountinfo", line)) == {"freezer": str(point)}


def test_single_mount_without_controllers_file_keeps_its_name(tmp_path: Path) -> None:
    point = tmp_path / "unified"
    point.mkdir()
    line = f"26 25 0:24 / {point} rw - cgroup2 cgroup2 rw\n"
    assert hierarchies(write(tmp_path / "mountinfo", line)) == {"unified": str(point)}


def test_mounts_of_a_sub_cgroup_are_skipped(tmp_path: Path) -> None:
    nested = "40 25 0:29 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    found = hierarchies(write(tmp_path / "mountinfo", nested + V1_LINES.splitlines(True)[3]))
    assert found == {"cpu,cpuacct": "/sys/fs/cgroup/cpu,cpuacct"}


def test_no_cgroup_mounts(tmp_path: Path) -> None:
    assert hierarchies(write(tmp_path / "mountinfo", OTHER_LINES)) == {}


def test_lines_without_optional_fields(tmp_path: Path) -> None:
    text = "31 25 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" + UNIFIED_LINE
    found = hierarchies(write(tmp_path / "mountinfo", text))
    assert found == {"memory": "/sys/fs/cgroup/memory", "unified": "/sys/fs/cgroup/unified"}


# --- container_path ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cgroups_path", "expected"),
    [
        ("", "/ketch/c1"),
        ("foo", "/foo"),
        ("foo/bar", "/foo/bar"),
        ("foo/../bar/", "/bar"),
        ("../../escape", "/escape"),
    ],
)
def test_container_path(cgroups_path: str, expected: str) -> None:
    assert container_path(cgroups_path, "c1") == expected


@pytest.mark.parametrize("cgroups_path", ["system.slice:foo:bar", "user.slice:ketch:c1", "a:b"])
def test_systemd_slice_paths_are_refused(cgroups_path: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        container_path(cgroups_path, "c1")
    assert str(info.value).startswith("linux.cgroupsPath:")
    assert "systemd" in str(info.value)


def test_colon_in_an_absolute_path_is_allowed() -> None:
    assert container_path("/a:b", "c1").endswith("/a:b")


@pytest.mark.parametrize("cgroups_path", ["//", ".", "a/.."])
def test_root_cgroup_is_refused(cgroups_path: str) -> None:
    with pytest.raises(InvalidArgument, match="must not be the root cgroup"):
        container_path(cgroups_path, "c1")


@pytest.mark.parametrize("cgroups_path", ["/", "/a/../.."])
def test_absolute_root_cgroup_is_refused(cgroups_path: str) -> None:
    with pytest.raises(InvalidArgument, match="must not be the root cgroup"):
        container_path(cgroups_path, "c1")


@pytest.mark.parametrize(
    ("cgroups_path", "expected"), [("/foo/bar", "/foo/bar"), ("/ketch/c1/", "/ketch/c1")]
)
def test_absolute_container_path(cgroups_path: str, expected: str) -> None:
    assert container_path(cgroups_path, "c1") == expected


# --- Cgroup on a temp-dir tree shaped like v1 ----------------------------------------------------


@pytest.fixture
def v1(tmp_path: Path) -> dict[str, str]:
    mounts = {}
    for name in ("cpuset", "freezer", "pids", "memory"):
        (tmp_path / name).mkdir()
        mounts[name] = str(tmp_path / name)
    (tmp_path / "cpuset" / "cpuset.cpus").write_text("0-3\n")
    (tmp_path / "cpuset" / "cpuset.mems").write_text("0\n")
    return mounts


def test_at_joins_the_path_to_every_mount_point() -> None:
    cg = Cgroup.at("/ketch/c1", {"memory": "/sys/fs/cgroup/memory", "": "/sys/fs/cgroup"})
    assert cg.path == "/ketch/c1"
    assert cg.dirs == {"memory": "/sys/fs/cgroup/memory/ketch/c1", "": "/sys/fs/cgroup/ketch/c1"}


def test_at_with_no_hierarchies() -> None:
    assert Cgroup.at("/x", {}).dirs == {}


def test_create_makes_every_directory(v1: dict[str, str]) -> None:
    cg = Cgroup.at("/ketch/c1", v1)
    assert not cg.exists()
    cg.create()
    assert cg.exists()
    for d in cg.dirs.values():
        assert Path(d).is_dir()


def test_create_copies_cpuset_from_the_parent_at_each_level(v1: dict[str, str]) -> None:
    cg = Cgroup.at("/ketch/c1", v1)
    cg.create()
    cpuset = Path(v1["cpuset"])
    assert (cpuset / "ketch" / "cpuset.cpus").read_text() == "0-3"
    assert (cpuset / "ketch" / "cpuset.mems").read_text() == "0"
    assert (cpuset / "ketch" / "c1" / "cpuset.cpus").read_text() == "0-3"
    assert (cpuset / "ketch" / "c1" / "cpuset.mems").read_text() == "0"
    assert not (Path(v1["memory"]) / "ketch" / "c1" / "cpuset.cpus").exists()


def test_create_is_idempotent(v1: dict[str, str]) -> None:
    cg = Cgroup.at("/ketch/c1", v1)
    cg.create()
    (Path(v1["cpuset"]) / "ketch" / "c1" / "cpuset.cpus").write_text("1")
    cg.create()
    assert (Path(v1["cpuset"]) / "ketch" / "c1" / "cpuset.cpus").read_text() == "1"


def test_create_failure_is_setup_failed(tmp_path: Path) -> None:
    blocker = tmp_path / "memory"
    blocker.write_text("not a directory")
    with pytest.raises(SetupFailed) as info:
        Cgroup.at("/ketch/c1", {"memory": str(blocker)}).create()
    assert "cannot create cgroup" in str(info.value)
    assert info.value.errno != 0


def test_cpuset_parent_without_cpus_fails(tmp_path: Path) -> None:
    (tmp_path / "cpuset").mkdir()
    with pytest.raises(SetupFailed) as info:
        Cgroup.at("/c1", {"cpuset": str(tmp_path / "cpuset")}).create()
    assert info.value.errno == errno.ENOENT


def test_add_writes_the_pid_to_every_hierarchy(v1: dict[str, str]) -> None:
    cg = Cgroup.at("/ketch/c1", v1)
    cg.create()
    cg.add(4242)
    for d in cg.dirs.values():
        assert (Path(d) / "cgroup.procs").read_text() == "4242"


def test_pids_reads_cgroup_procs_including_sub_cgroups(v1: dict[str, str]) -> None:
    cg = Cgroup.at("/ketch/c1", v1)
    cg.create()
    assert cg.pids() == []
    cg.add(10)
    sub = Path(cg.dirs["pids"]) / "sub"
    sub.mkdir()
    (sub / "cgroup.procs").write_text("11\n12\n")
    assert sorted(cg.pids()) == [10, 11, 12]


def test_pids_prefers_the_pids_hierarchy(v1: dict[str, str]) -> None:
    cg = Cgroup.at("/c1", v1)
    cg.create()
    (Path(cg.dirs["pids"]) / "cgroup.procs").write_text("1\n")
    (Path(cg.dirs["memory"]) / "cgroup.procs").write_text("2\n")
    assert cg.pids() == [1]


def test_pids_falls_back_to_other_hierarchies(tmp_path: Path) -> None:
    (tmp_path / "blkio" / "c1").mkdir(parents=True)
    (tmp_path / "blkio" / "c1" / "cgroup.procs").write_text("5\n")
    cg = Cgroup.at("/c1", {"blkio": str(tmp_path / "blkio"), "pids": str(tmp_path / "gone")})
    assert cg.pids() == [5]


def test_pids_of_a_missing_cgroup(v1: dict[str, str]) -> None:
    assert Cgroup.at("/nope", v1).pids() == []


def test_remove_deletes_the_tree_and_the_default_parent_once_empty(tmp_path: Path) -> None:
    mounts = {"memory": str(tmp_path / "memory"), "pids": str(tmp_path / "pids")}
    cg, other = Cgroup.at("/ketch/c1", mounts), Cgroup.at("/ketch/c2", mounts)
    cg.create()
    other.create()
    (Path(cg.dirs["memory"]) / "child" / "grandchild").mkdir(parents=True)
    cg.remove()
    assert not cg.exists()
    assert (tmp_path / "memory" / "ketch").is_dir(), "c2 still lives there"
    other.remove()
    assert not (tmp_path / "memory" / "ketch").exists()


def test_remove_keeps_a_parent_given_by_the_spec(tmp_path: Path) -> None:
    cg = Cgroup.at("/mine/c1", {"memory": str(tmp_path / "memory")})
    cg.create()
    cg.remove()
    assert (tmp_path / "memory" / "mine").is_dir()


def test_remove_of_a_missing_cgroup_is_a_no_op(tmp_path: Path) -> None:
    Cgroup.at("/ketch/gone", {"memory": str(tmp_path)}).remove()


def test_remove_reports_a_directory_it_cannot_delete(tmp_path: Path) -> None:
    """A plain directory with a file in it is not a cgroup: rmdir fails and the error is not retried."""
    cg = Cgroup.at("/c1", {"memory": str(tmp_path)})
    cg.create()
    cg.add(1)
    with pytest.raises(SetupFailed) as info:
        cg.remove(timeout=0)
    assert info.value.errno == errno.ENOTEMPTY
    assert "cannot remove cgroup" in str(info.value)


def test_freeze_and_thaw_with_the_v1_freezer(v1: dict[str, str]) -> None:
    cg = Cgroup.at("/c1", v1)
    cg.create()
    assert not cg.is_frozen()
    state = Path(cg.dirs["freezer"]) / "freezer.state"
    cg.freeze(True)
    assert state.read_text() == "FROZEN"
    assert cg.is_frozen()
    cg.freeze(False)
    assert state.read_text() == "THAWED"
    assert not cg.is_frozen()


def test_is_frozen_reads_freezer_state(v1: dict[str, str]) -> None:
    cg = Cgroup.at("/c1", v1)
    cg.create()
    state = Path(cg.dirs["freezer"]) / "freezer.state"
    state.write_text("FREEZING\n")
    assert not cg.is_frozen()
    state.write_text("FROZEN\n")
    assert cg.is_frozen()


@pytest.mark.parametrize("name", ["", "unified"])
def test_freeze_on_v2_writes_cgroup_freeze_and_reads_cgroup_events(tmp_path: Path, name: str) -> None:
    cg = Cgroup.at("/c1", {name: str(tmp_path)})
    cg.create()
    d = Path(cg.dirs[name])
    (d / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    cg.freeze(True)
    assert (d / "cgroup.freeze").read_text() == "1"
    assert cg.is_frozen()
    (d / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    cg.freeze(False)
    assert (d / "cgroup.freeze").read_text() == "0"
    assert not cg.is_frozen()


def test_v2_is_frozen_ignores_cgroup_freeze(tmp_path: Path) -> None:
    cg = Cgroup.at("/c1", {"": str(tmp_path)})
    cg.create()
    (Path(cg.dirs[""]) / "cgroup.freeze").write_text("1")
    assert not cg.is_frozen()


def test_freezer_hierarchy_wins_over_unified_on_hybrid(tmp_path: Path) -> None:
    mounts = {"freezer": str(tmp_path / "freezer"), "unified": str(tmp_path / "unified")}
    cg = Cgroup.at("/c1", mounts)
    cg.create()
    cg.freeze(True)
    assert (Path(cg.dirs["freezer"]) / "freezer.state").read_text() == "FROZEN"
    assert not (Path(cg.dirs["unified"]) / "cgroup.freeze").exists()


def test_is_frozen_of_a_missing_cgroup_is_false(tmp_path: Path) -> None:
    assert not Cgroup.at("/gone", {"freezer": str(tmp_path)}).is_frozen()
    assert not Cgroup.at("/gone", {"": str(tmp_path)}).is_frozen()
