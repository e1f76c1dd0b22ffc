"""Snapshots on the real kernel: layers stacked with overlayfs (or copied by vfs) under a writable snapshot."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, Unsupported
from ketch.image.snapshots import Snapshots
from ketch.linux import syscalls

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mounts")]

BOTH = pytest.mark.parametrize("driver", ["overlay", "vfs"])


def key(n: int | str) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


def mounts_under(path: Path) -> list[str]:
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")  # mountinfo escapes spaces as \040
            if point == str(path) or point.startswith(f"{path}/"):
                points.append(point)
    return points


@pytest.fixture(autouse=True)
def no_mounts_left(tmp_path: Path) -> Iterator[None]:
    """Every test must unmount what it mounted; stragglers are detached so one failure stays one."""
    yield
    left = mounts_under(tmp_path)
    for point in reversed(left):
        syscalls.umount(point, syscalls.MNT_DETACH)
    assert not left, f"mounts left behind: {left}"


def whiteout(staged_path: str, name: str, overlay: bool) -> None:
    """What an unpacker does with a .wh. entry: a 0/0 char device (overlay) or a deletion (vfs)."""
    path = os.path.join(staged_path, name)
    if overlay:
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
    else:
        os.unlink(path)


def write(path: str | Path, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def two_layers(s: Snapshots) -> tuple[str, str]:
    """A base layer (a, b, d/x) and one above it that changes a, deletes b and adds c."""
    base, top = key("base"), key("top")
    with s.stage_layer(base, None) as st:
        assert os.listdir(st.path) == []
        write(f"{st.path}/a", "a0")
        write(f"{st.path}/b", "b0")
        write(f"{st.path}/d/x", "x0")
        st.commit(6)
    with s.stage_layer(top, base) as st:
        assert st.overlay == (s.driver == "overlay")
        write(f"{st.path}/a", "a1")
        write(f"{st.path}/c", "c1")
        whiteout(st.path, "b", st.overlay)
        st.commit(4)
    return base, top


def tree(path: str) -> dict[str, str]:
    """Regular files under `path` with their contents; char devices as "<whiteout>"."""
    out = {}
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, path)
            out[rel] = "<whiteout>" if stat.S_ISCHR(os.lstat(full).st_mode) else Path(full).read_text()
    return out


@BOTH
def test_layers_stack_and_the_container_writes_only_its_upper_dir(tmp_path: Path, driver: str) -> None:
    s = Snapshots(str(tmp_path / "store"), driver)
    assert s.driver == driver
    base, top = two_layers(s)
    assert s.layers() == sorted([base, top]) and s.has_layer(top) and not s.has_layer(key("x"))
    if driver == "overlay":
        assert tree(s.layer_dir(top)) == {"a": "a1", "c": "c1", "b": "<whiteout>"}
        lower = Path(s.layer_dir(top)).parent / "lower"
        assert lower.read_text() == "l/" + (Path(s.layer_dir(base)).parent / "link").read_text()
    else:
        assert tree(s.layer_dir(top)) == {"a": "a1", "c": "c1", "d/x": "x0"}
    before = {k: tree(s.layer_dir(k)) for k in (base, top)}

    s.prepare("c1", top)
    assert s.snapshots() == ["c1"]
    target = tmp_path / "rootfs"
    target.mkdir()
    s.mount("c1", str(target))
    try:
        assert tree(str(target)) == {"a": "a1", "c": "c1", "d/x": "x0"}
        write(target / "new", "n")
        write(target / "d/x", "x2")
        os.unlink(target / "c")
    finally:
        s.unmount(str(target))
    upper = tree(s.upper_dir("c1"))
    assert upper["new"] == "n" and upper["d/x"] == "x2"
    assert upper.get("c") == ("<whiteout>" if driver == "overlay" else None)
    assert {k: tree(s.layer_dir(k)) for k in (base, top)} == before, "the layers are read-only"
    s.remove("c1")
    assert s.snapshots() == []
    assert not os.listdir(tmp_path / "store/tmp")


@BOTH
def test_a_snapshot_without_parent_is_an_empty_rootfs(tmp_path: Path, driver: str) -> None:
    s = Snapshots(str(tmp_path / "store"), driver)
    s.prepare("scratch", None)
    target = tmp_path / "rootfs"
    target.mkdir()
    s.mount("scratch", str(target))
    try:
        assert os.listdir(target) == []
        write(target / "f", "1")
    finally:
        s.unmount(str(target))
    assert tree(s.upper_dir("scratch")) == {"f": "1"}
    assert os.listdir(tmp_path / "store/empty") == []


@BOTH
def test_mount_spec_describes_the_mount(tmp_path: Path, driver: str) -> None:
    s = Snapshots(str(tmp_path / "store"), driver)
    _base, top = two_layers(s)
    s.prepare("c1", top)
    mount, cwd = s.mount_spec("c1")
    assert cwd == s.root
    if driver == "overlay":
        assert (mount.type, mount.source) == ("overlay", "overlay")
        lowers = mount.options[0].removeprefix("lowerdir=").split(":")
        assert len(lowers) == 2 and all(len(x) == 28 and x.startswith("l/") for x in lowers)
        assert os.path.realpath(os.path.join(cwd, lowers[0])) == s.layer_dir(top)
        assert mount.options[1:] == ("upperdir=containers/c1/diff", "workdir=containers/c1/work")
    else:
        assert (mount.type, mount.source, mount.options) == ("bind", s.upper_dir("c1"), ("rbind",))


@BOTH
def test_remove_layer_refuses_while_something_is_stacked_on_it(tmp_path: Path, driver: str) -> None:
    s = Snapshots(str(tmp_path / "store"), driver)
    base, top = two_layers(s)
    s.prepare("c1", top)
    with pytest.raises(Conflict, match="layer"):
        s.remove_layer(base)
    with pytest.raises(Conflict, match="snapshot c1"):
        s.remove_layer(top)
    with s.stage_layer(key("third"), top) as st:  # a staging pins its parent too
        s.remove("c1")
        with pytest.raises(Conflict, match="staging"):
            s.remove_layer(top)
    s.remove_layer(top)
    s.remove_layer(base)
    assert s.layers() == [] and s.snapshots() == []
    assert not os.listdir(tmp_path / "store/l") and not os.listdir(tmp_path / "store/tmp")
    with pytest.raises(NotFound):
        s.remove_layer(base)
    with pytest.raises(NotFound):
        s.remove("c1")
    assert st.path.startswith(s.root)


@BOTH
def test_abort_and_errors_leave_no_layer(tmp_path: Path, driver: str) -> None:
    s = Snapshots(str(tmp_path / "store"), driver)
    with s.stage_layer(key(1), None) as st:
        write(f"{st.path}/f", "never committed")
    with pytest.raises(RuntimeError), s.stage_layer(key(2), None) as st:
        write(f"{st.path}/f", "half")
        raise RuntimeError("unpack failed")
    st = s.stage_layer(key(3), None)
    st.abort()
    with pytest.raises(Conflict):
        st.commit(0)
    assert s.layers() == [] and not os.listdir(tmp_path / "store/tmp")
    if s.driver == "vfs":  # a vfs layer starts as a copy of its parent
        with pytest.raises(NotFound):
            s.stage_layer(key(4), key(1))
    else:  # an overlay layer needs its parent only to commit (pulls unpack layers in parallel)
        with pytest.raises(NotFound), s.stage_layer(key(4), key(1)) as st:
            st.commit(0)
        assert s.layers() == [] and not os.listdir(tmp_path / "store/tmp")


STAGE_SCRIPT = """
import os, sys, time
from ketch.image.snapshots import Snapshots

root, driver, key, me, go, mode = sys.argv[1:]
s = Snapshots(root, driver)
st = s.stage_layer(key, None)
for i in range(100):
    with open(os.path.join(st.path, f"f{i}"), "w") as f:
        f.write(me * 1000)
open(f"{go}.ready-{me}", "w").close()
if mode == "crash-staging":
    os._exit(1)
if mode == "crash-commit":
    os.rename = lambda *_a: os._exit(2)   # die at the final rename, after every other step
while not os.path.exists(go):
    time.sleep(0.005)
st.commit(100000)
"""


def stager(root: Path, driver: str, k: str, me: str, go: Path, mode: str = "race") -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-c", STAGE_SCRIPT, str(root), driver, k, me, str(go), mode]
    return subprocess.Popen(argv)


def wait_for(*paths: Path) -> None:
    deadline = time.monotonic() + 30
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"timed out waiting for {paths}"
        time.sleep(0.01)


@BOTH
def test_concurrent_staging_of_one_key_ends_with_one_intact_layer(tmp_path: Path, driver: str) -> None:
    root, go, k = tmp_path / "store", tmp_path / "go", key("same")
    Snapshots(str(root), driver)
    procs = [stager(root, driver, k, me, go) for me in "AB"]
    try:
        wait_for(*(Path(f"{go}.ready-{me}") for me in "AB"))
        assert len(os.listdir(root / "tmp")) == 2, "both staged at once"
        go.touch()
        assert [p.wait(timeout=60) for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    s = Snapshots(str(root), driver)
    assert s.layers() == [k]
    contents = set(tree(s.layer_dir(k)).values())
    assert len(tree(s.layer_dir(k))) == 100 and contents in ({"A" * 1000}, {"B" * 1000}), "one writer's files"
    assert not os.listdir(root / "tmp")
    assert len(os.listdir(root / "l")) == (1 if driver == "overlay" else 0)


@BOTH
def test_a_crashed_staging_leaves_no_visible_layer_and_is_cleaned(tmp_path: Path, driver: str) -> None:
    root, go = tmp_path / "store", tmp_path / "go"
    s = Snapshots(str(root), driver)
    go.touch()
    seen = set()
    for mode, rc in (("crash-staging", 1), ("crash-commit", 2)):
        p = stager(root, driver, key(mode), mode, go, mode)
        assert p.wait(timeout=60) == rc
        left = set(os.listdir(root / "tmp"))
        assert len(left) == 1 and not left & seen, "each staging removes the stale dirs of the last"
        seen |= left
        assert s.layers() == [] and not s.has_layer(key(mode))
    dangling = os.listdir(root / "l")
    assert len(dangling) == (1 if driver == "overlay" else 0), "crash-commit died after making its link"
    assert not os.path.exists(root / "l" / dangling[0]) if dangling else True
    with s.stage_layer(key("next"), None) as st:
        assert os.listdir(root / "tmp") == [os.path.basename(os.path.dirname(st.path))], "stale dirs gone"
        assert not os.listdir(root / "l"), "dangling link gone"
        st.commit(0)
    assert s.layers() == [key("next")]


def test_removal_copes_with_whiteouts_and_000_mode_dirs(tmp_path: Path) -> None:
    s = Snapshots(str(tmp_path / "store"), "overlay")
    base, top = two_layers(s)
    s.prepare("c1", top)
    target = tmp_path / "rootfs"
    target.mkdir()
    s.mount("c1", str(target))
    try:
        os.unlink(target / "a")  # a whiteout in the upper dir
        write(target / "locked/inner/f", "x")
        os.chmod(target / "locked/inner", 0)
        os.chmod(target / "locked", 0)
    finally:
        s.unmount(str(target))
    work = Path(s.upper_dir("c1")).parent / "work/work"
    assert stat.S_IMODE(work.stat().st_mode) == 0, "overlay leaves a 000-mode dir in work/"
    s.remove("c1")
    s.remove_layer(top)  # holds a whiteout char device
    s.remove_layer(base)
    assert not os.listdir(tmp_path / "store/tmp") and not os.listdir(tmp_path / "store/containers")


def test_128_layers_fit_in_one_page_of_mount_options(tmp_path: Path) -> None:
    s = Snapshots(str(tmp_path / "store"), "overlay")
    parent = None
    for i in range(140):
        with s.stage_layer(key(i), parent) as st:
            write(f"{st.path}/layer-{i}", str(i))
            st.commit(1)
        parent = key(i)
    name = "f" * 64  # a container id: the longest name ketch gives a snapshot
    s.prepare(name, key(127))
    mount, _cwd = s.mount_spec(name)
    assert mount.options[0].count(":") == 127
    assert len(",".join(mount.options)) < 4096
    target = tmp_path / "rootfs"
    target.mkdir()
    s.mount(name, str(target))
    try:
        assert (target / "layer-0").read_text() == "0"
        assert (target / "layer-127").read_text() == "127"
        assert len(os.listdir(target)) == 128
    finally:
        s.unmount(str(target))
    with pytest.raises(Unsupported, match="too many"):
        s.prepare("deep", key(139))
    assert s.snapshots() == [name] and not os.listdir(tmp_path / "store/tmp")


def test_auto_probes_once_and_the_root_keeps_its_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    s = Snapshots(str(root))
    assert s.driver in ("overlay", "vfs")
    assert (root / "driver").read_text().strip() == s.driver
    assert not os.listdir(root / "tmp") and not mounts_under(root)

    def no_second_probe(_self: Snapshots) -> bool:
        raise AssertionError("probed again")

    monkeypatch.setattr(Snapshots, "_probe_overlay", no_second_probe)
    assert Snapshots(str(root), "auto").driver == s.driver
    other = "vfs" if s.driver == "overlay" else "overlay"
    with pytest.raises(Conflict, match=f"holds {s.driver} snapshots"):
        Snapshots(str(root), other)
    with pytest.raises(InvalidArgument):
        Snapshots(str(tmp_path / "x"), "aufs")


def test_auto_falls_back_to_vfs_where_overlay_cannot_be_an_upper_dir(tmp_path: Path) -> None:
    for d in ("lower", "upper", "work", "merged"):
        (tmp_path / d).mkdir()
    opts = f"lowerdir={tmp_path}/lower,upperdir={tmp_path}/upper,workdir={tmp_path}/work"
    syscalls.mount("overlay", str(tmp_path / "merged"), "overlay", 0, opts)
    try:
        s = Snapshots(str(tmp_path / "merged/store"))
        if s.driver == "overlay":
            pytest.skip("this kernel accepts overlayfs as an upper dir")
        assert s.driver == "vfs"
        assert not mounts_under(tmp_path / "merged/store")
    finally:
        syscalls.umount(str(tmp_path / "merged"), syscalls.MNT_DETACH)


@BOTH
def test_bad_names_and_missing_objects_are_refused(tmp_path: Path, driver: str) -> None:
    s = Snapshots(str(tmp_path / "store"), driver)
    _base, top = two_layers(s)
    for bad in ("sha256:abc", "sha512:" + "0" * 128, "../x", key(1).upper()):
        with pytest.raises(InvalidArgument):
            s.has_layer(bad)
    for name in ("", "..", "a/b", ".hidden", "x" * 129):
        with pytest.raises(InvalidArgument):
            s.prepare(name, None)
    with pytest.raises(InvalidArgument):
        s.stage_layer(top, top)
    with pytest.raises(NotFound):
        s.layer_dir(key("missing"))
    with pytest.raises(NotFound):
        s.prepare("c1", key("missing"))
    with pytest.raises(NotFound):
        s.upper_dir("c1")
    with pytest.raises(NotFound):
        s.mount_spec("c1")
    s.prepare("c1", top)
    with pytest.raises(AlreadyExists):
        s.prepare("c1", None)
    with pytest.raises(NotFound, match="nothing is mounted"):
        s.unmount(str(tmp_path))
    assert s.snapshots() == ["c1"] and not os.listdir(tmp_path / "store/tmp")


@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv (util-linux)")
def test_removal_works_for_root_without_dac_override(tmp_path: Path) -> None:
    """Root in a user namespace lacks CAP_DAC_OVERRIDE: 000-mode dirs must be opened up to be removed."""
    s = Snapshots(str(tmp_path / "store"), "overlay")
    s.prepare("c1", None)
    target = tmp_path / "rootfs"
    target.mkdir()
    s.mount("c1", str(target))
    try:
        write(target / "locked/inner/f", "x")
        os.chmod(target / "locked/inner", 0)
        os.chmod(target / "locked", 0)
    finally:
        s.unmount(str(target))
    caps = "-dac_override,-dac_read_search"
    script = "import sys; from ketch.image.snapshots import Snapshots; Snapshots(sys.argv[1]).remove('c1')"
    argv = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", sys.executable, "-c", script, s.root]
    subprocess.run(argv, check=True)
    assert s.snapshots() == [] and not os.listdir(tmp_path / "store/tmp")
