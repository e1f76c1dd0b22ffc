"""User namespaces (engine.json's userns-remap, `--userns`) against the real kernel, checked from inside.

The module makes a throwaway system user with a subordinate range (useradd, usermod), and puts
/etc's account files (and their "-" backups) back byte for byte at the end, whatever happened.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from enginefix import IMAGE, Engine, mounts_under, running_engine

from ketch.engine import userns
from ketch.image.snapshots import Snapshots

pytestmark = pytest.mark.root

ACCOUNT_FILES = tuple(f"/etc/{name}{suffix}" for name in ("passwd", "group", "shadow", "gshadow", "subuid", "subgid")
                      for suffix in ("", "-"))  # fmt: skip
Saved = dict[str, tuple[bytes, int, int, int] | None]


def _snapshot() -> Saved:
    saved: Saved = {}
    for path in ACCOUNT_FILES:
        try:
            st = os.stat(path)
            saved[path] = (Path(path).read_bytes(), st.st_mode, st.st_uid, st.st_gid)
        except FileNotFoundError:
            saved[path] = None
    return saved


def _restore(saved: Saved) -> None:
    """Put back what differs: userdel leaves the "-" backups (and maybe more) changed."""
    now = _snapshot()
    for path, was in saved.items():
        if now[path] == was:
            continue
        if was is None:
            os.unlink(path)
            continue
        data, mode, uid, gid = was
        tmp = f"{path}.ketch-test"
        Path(tmp).write_bytes(data)
        os.chown(tmp, uid, gid)
        os.chmod(tmp, mode & 0o7777)
        os.rename(tmp, path)


def _tool(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"


def _read(path: str) -> str:
    return Path(path).read_text() if os.path.exists(path) else ""


@pytest.fixture(scope="module")
def remap_user() -> Iterator[tuple[str, int]]:
    """(name, first subordinate id) of a new system user with 65536 ids in /etc/subuid and /etc/subgid."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not (shutil.which("useradd") and shutil.which("usermod") and shutil.which("userdel")):
        pytest.skip("needs useradd, usermod and userdel (passwd)")
    saved = _snapshot()
    name = f"ketchns{os.getpid()}"
    try:
        entries = userns.parse_subids(_read(userns.SUBUID), userns.SUBUID)
        entries += userns.parse_subids(_read(userns.SUBGID), userns.SUBGID)
        start = userns.next_free(entries)
        _tool("useradd", "-r", "-s", "/bin/false", name)
        last = start + userns.RANGE_LENGTH - 1
        _tool("usermod", "--add-subuids", f"{start}-{last}", "--add-subgids", f"{start}-{last}", name)
        yield name, start
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)
        _restore(saved)
        assert _snapshot() == saved, "the host's account files changed"


@pytest.fixture(scope="module", name="engine")
def engine_fixture(remap_user: tuple[str, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    yield from running_engine(tmp_path_factory, "userns", config={"userns-remap": remap_user[0]})


def _upper(engine: Engine, name: str) -> Path:
    cid = engine.inspect(name)["Id"]
    return engine.root / "storage" / "snapshots" / "containers" / cid / "diff"


def _owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


# --- the mapping, the rootfs ---------------------------------------------------------------------------


def test_root_inside_is_the_first_subordinate_id(engine: Engine, remap_user: tuple[str, int]) -> None:
    start = remap_user[1]
    script = "id; touch /x; ls -ln / /x; cat /proc/self/uid_map /proc/self/gid_map; stat -L -c %i /proc/self/ns/user"
    out = engine("run", "--name", "mapped", IMAGE, "sh", "-c", script).stdout
    lines = out.splitlines()
    assert lines[0] == "uid=0(root) gid=0(root)"
    listing = {line.split()[-1]: line.split()[2:4] for line in lines if line.startswith(("d", "-"))}
    for entry in ("bin", "etc", "root", "tmp", "data", "/x"):
        assert listing[entry] == ["0", "0"], f"{entry}: {listing[entry]}"  # the image's owners, unchanged
    maps = [line.split() for line in lines if line.strip().startswith("0 ")]
    assert maps == [["0", str(start), "65536"], ["0", str(start), "65536"]]
    assert int(lines[-1]) != os.stat("/proc/self/ns/user").st_ino
    # on the host, what the container wrote carries the host ids, as Docker's remapped storage does
    assert _owner(_upper(engine, "mapped") / "x") == (start, start)
    assert _owner(_upper(engine, "mapped")) == (start, start)  # the upper dir itself is its root's
    engine("rm", "mapped")


def test_the_image_layers_are_neither_copied_nor_chowned(engine: Engine, remap_user: tuple[str, int]) -> None:
    start = remap_user[1]
    out = engine("run", "--name", "copyup", IMAGE, "sh", "-c",
                 "echo more >> /data/seed; rm /data/other; ls -ln /data/seed").stdout  # fmt: skip
    assert out.split()[2:4] == ["0", "0"]
    upper = _upper(engine, "copyup")
    assert _owner(upper / "data" / "seed") == (start, start)  # copied up with the host ids
    assert _owner(upper / "data") == (start, start)
    layers = list((engine.root / "storage" / "snapshots" / "layers").glob("*/diff/data/seed"))
    assert layers and all(_owner(p) == (0, 0) for p in layers)
    assert all(p.read_text() == "from the image\n" for p in layers)
    assert engine("diff", "copyup").stdout.split() == ["C", "/data", "D", "/data/other", "C", "/data/seed"]
    engine("rm", "copyup")


def test_etc_files_volumes_and_bind_mounts(engine: Engine, remap_user: tuple[str, int]) -> None:
    start = remap_user[1]
    shared = engine.base / "shared"  # the engine's base: a path the remapped root can get through
    shared.mkdir()
    (shared / "host.txt").write_text("host\n")
    script = ("ls -ln /etc/hosts /etc/hostname /etc/resolv.conf /mnt/host.txt /data/seed; "
              "echo '10.0.0.9 extra' >> /etc/hosts && echo hosts-written; echo x > /data/new; "
              "touch /mnt/y 2>/dev/null || echo bind-refused")  # fmt: skip
    out = engine(
        "run", "--rm", "-v", f"{shared}:/mnt", "-v", "remapvol:/data", IMAGE, "sh", "-c", script
    ).stdout
    owners = {line.split()[-1]: line.split()[2:4] for line in out.splitlines() if line.startswith("-")}
    for path in ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/data/seed"):
        assert owners[path] == ["0", "0"], f"{path}: {owners[path]}"
    assert owners["/mnt/host.txt"] == ["65534", "65534"]  # the host's root is nobody in there
    assert "hosts-written" in out and "bind-refused" in out
    data = Path(engine.volume("remapvol")["Mountpoint"])
    assert _owner(data) == (start, start) and _owner(data / "new") == (start, start)
    engine("volume", "create", "made")  # `volume create` under remapping: its root's too, as Docker's
    assert _owner(Path(engine.volume("made")["Mountpoint"])) == (start, start)
    engine("volume", "rm", "remapvol", "made")


def test_exec_joins_the_user_namespace(engine: Engine, remap_user: tuple[str, int]) -> None:
    engine("run", "-d", "--name", "execd", IMAGE, "sleep", "1000")
    script = (
        "id -u; cat /proc/self/uid_map; stat -L -c %i /proc/self/ns/user /proc/1/ns/user; touch /made-by-exec"
    )
    out = engine("exec", "execd", "sh", "-c", script).stdout.split()
    assert out[:4] == ["0", "0", str(remap_user[1]), "65536"]
    assert out[4] == out[5] != str(os.stat("/proc/self/ns/user").st_ino)
    assert _owner(_upper(engine, "execd") / "made-by-exec") == (remap_user[1],) * 2
    engine("rm", "-f", "execd")


# --- --userns and Docker's refusals ----------------------------------------------------------------------


def test_userns_host_gives_no_user_namespace(engine: Engine) -> None:
    out = engine("run", "--name", "hostns", "--userns=host", IMAGE, "sh", "-c",
                 "cat /proc/self/uid_map; stat -L -c %i /proc/self/ns/user; touch /x").stdout.split()  # fmt: skip
    assert out[:3] == ["0", "0", "4294967295"]
    assert out[3] == str(os.stat("/proc/self/ns/user").st_ino)
    assert engine.inspect("hostns")["HostConfig"]["UsernsMode"] == "host"
    assert _owner(_upper(engine, "hostns") / "x") == (0, 0)
    engine("rm", "hostns")
    engine("create", "--name", "plain", IMAGE)
    assert engine.inspect("plain")["HostConfig"]["UsernsMode"] == ""  # as Docker shows a remapped one
    engine("rm", "plain")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--privileged",), "Error: privileged mode is incompatible with user namespaces.  You must run the "
                            "container in the host namespace when running privileged mode"),
        (("--network", "host"), "Error: cannot share the host's network namespace when user namespaces are enabled"),
        (("--userns", "private"), "Error: --userns: invalid USER mode"),
    ],
)  # fmt: skip
def test_refused_as_docker_refuses(engine: Engine, flags: tuple[str, ...], message: str) -> None:
    before = engine("ps", "-aq").stdout
    done = engine("run", "--rm", *flags, IMAGE, "true", check=False)
    assert (done.returncode, done.stderr.strip()) == (125, message)
    assert engine("ps", "-aq").stdout == before  # nothing was created


def test_privileged_with_userns_host(engine: Engine) -> None:
    out = engine("run", "--rm", "--privileged", "--userns=host", IMAGE, "cat", "/proc/self/uid_map").stdout
    assert out.split() == ["0", "0", "4294967295"]


def test_a_user_without_ranges_is_one_clear_error(engine: Engine) -> None:
    config = engine.root / "engine.json"
    before = config.read_text()
    nobody = userns.Accounts().user("nobody")
    if nobody is None or userns.Accounts().group("nogroup") is None:
        pytest.skip("needs the nobody user and the nogroup group")
    if userns.ranges_for(userns.parse_subids(_read(userns.SUBUID), userns.SUBUID), *nobody):
        pytest.skip("nobody has subordinate ids here")
    try:
        config.write_text(json.dumps({"userns-remap": "nobody:nogroup"}))
        done = engine("run", "--rm", IMAGE, "true", check=False)
    finally:
        config.write_text(before)
    assert done.returncode == 125
    assert done.stderr == 'Error: Can\'t create ID mappings: no subuid ranges found for user "nobody"\n'


def test_default_creates_ketchremap_as_docker_creates_dockremap(engine: Engine) -> None:
    if userns.Accounts().user(userns.DEFAULT_USER) is not None:
        pytest.skip(f"{userns.DEFAULT_USER} already exists on this host: not ours to remove")
    config = engine.root / "engine.json"
    before = config.read_text()
    saved = _snapshot()
    try:
        config.write_text(json.dumps({"userns-remap": "default"}))
        out = engine("run", "--rm", IMAGE, "cat", "/proc/self/uid_map").stdout.split()
        user = userns.Accounts().user(userns.DEFAULT_USER)
        assert user is not None
        assert Path("/etc/passwd").read_text().splitlines()[-1].endswith(":/bin/false")
        ranges = [
            userns.ranges_for(userns.parse_subids(_read(p), p), *user) for p in (userns.SUBUID, userns.SUBGID)
        ]
        assert ranges[0] == ranges[1] and len(ranges[0]) == 1 and ranges[0][0][1] == 65536
        assert out == ["0", str(ranges[0][0][0]), "65536"]
    finally:
        config.write_text(before)
        subprocess.run(["userdel", userns.DEFAULT_USER], capture_output=True, check=False)
        _restore(saved)
    assert _snapshot() == saved


# --- cgroups, networks, stop, kill, rm -------------------------------------------------------------------


def test_cgroup_network_stop_kill_and_rm(engine: Engine) -> None:
    from ketch.runtime.cgroups import hierarchies

    cid = engine("run", "-d", "--name", "life", "-m", "64m", IMAGE, "sleep", "1000").stdout.strip()
    out = engine("exec", "life", "sh", "-c", "grep -c eth0 /proc/net/dev; cat /proc/self/cgroup").stdout
    assert out.splitlines()[0] == "1" and f"/ketch/{cid}" in out
    assert engine.inspect("life")["NetworkSettings"]["IPAddress"]
    limits = [
        Path(p, "ketch", cid, f)
        for p in hierarchies().values()
        for f in ("memory.max", "memory.limit_in_bytes")
    ]
    assert [p.read_text().strip() for p in limits if p.exists()] == [str(64 << 20)]
    engine("stop", "-t", "1", "life")
    assert engine.inspect("life")["State"]["Status"] == "exited"
    engine("start", "life")
    engine("kill", "life")
    assert engine("wait", "life").stdout.strip() == "137"
    engine("start", "life")
    engine("rm", "-f", "life")
    assert not [m for m in mounts_under(engine.base) if cid in m]
    assert not [p for p in hierarchies().values() if Path(p, "ketch", cid).exists()]
    assert not list((engine.root / "storage" / "snapshots" / "tmp").iterdir())  # no idmapped layer mount left
    none = engine(
        "run", "--rm", "--network", "none", IMAGE, "sh", "-c", "grep -c : /proc/net/dev; id -u"
    ).stdout
    assert none.split() == ["1", "0"]  # lo only


# --- the snapshot store's idmapped mounts ------------------------------------------------------------------


def _layered(root: Path, driver: str) -> tuple[Snapshots, str]:
    """A store with two layers: /f (uid 7) below, /g (uid 0) above."""
    snaps = Snapshots(str(root), driver)
    parent = None
    for n, (name, uid) in enumerate((("f", 7), ("g", 0))):
        key = "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()
        with snaps.stage_layer(key, parent) as staged:
            Path(staged.path, name).write_text(name)
            os.chown(Path(staged.path, name), uid, uid)
            staged.commit(1)
        parent = key
    assert parent is not None
    return snaps, parent


@pytest.mark.parametrize("driver", ["overlay", "vfs"])
def test_snapshots_mount_layers_idmapped(tmp_path: Path, driver: str) -> None:
    from ketch.linux import idmap, syscalls

    if os.geteuid() != 0:
        pytest.skip("needs root")
    snaps, top = _layered(tmp_path / "store", driver)
    snaps.prepare("c", top, (300000, 300000))
    target = tmp_path / "rootfs"
    target.mkdir()
    userns_fd = idmap.userns_fd([(0, 300000, 65536)], [(0, 300000, 65536)])
    try:
        snaps.mount("c", str(target), userns_fd)
    finally:
        os.close(userns_fd)
    try:
        assert _owner(target / "f") == (300007, 300007) and _owner(target / "g") == (300000, 300000)
        assert _owner(target) == (300000, 300000)
        assert not list((tmp_path / "store" / "tmp").iterdir())  # the layers' idmapped mounts are gone
    finally:
        syscalls.umount(str(target), syscalls.MNT_DETACH)
    layer_files = list((tmp_path / "store" / "layers").glob("*/diff/f"))
    assert layer_files and all(_owner(p) == (7, 7) for p in layer_files)  # on disk: untouched


def test_a_dead_mounts_idmap_dir_is_detached_never_emptied(tmp_path: Path) -> None:
    """A process killed between attaching the idmapped layers and detaching them leaves them mounted
    under tmp/idmap-*: the next cleanup must detach them, not delete the layers' files through them."""
    from ketch.linux import idmap

    if os.geteuid() != 0:
        pytest.skip("needs root")
    snaps, top = _layered(tmp_path / "store", "overlay")
    stale = tmp_path / "store" / "tmp" / "idmap-DEAD"
    (stale / "0").mkdir(parents=True)
    (stale / "parent").write_text("")
    layer = next((tmp_path / "store" / "layers").glob("*/diff/f")).parent
    userns_fd = idmap.userns_fd([(0, 300000, 65536)], [(0, 300000, 65536)])
    try:
        idmap.mount(str(layer), str(stale / "0"), userns_fd)
    finally:
        os.close(userns_fd)
    assert (stale / "0" / "f").exists()
    snaps.prepare("next", top)  # any staging sweeps the dead owner's tmp/ dirs
    assert not stale.exists()
    assert (layer / "f").read_text() == "f"
