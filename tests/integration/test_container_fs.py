"""`ketch cp`, `diff`, `export` and `commit` against the real kernel, with a busybox image."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from enginefix import (  # noqa: F401  (engine_fixture: the fixture `engine`)
    IMAGE,
    KETCH,
    PASSWD,
    SEED,
    Engine,
    add_member,
    engine_fixture,
    mounts_under,
    running_engine,
)

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def no_private_mounts(request: pytest.FixtureRequest) -> Iterator[None]:
    """cp and export of stopped containers leave no mount and no mount point behind, even on errors."""
    yield
    eng = next((request.getfixturevalue(n) for n in ("engine", "vfs") if n in request.fixturenames), None)
    if eng is None:
        return
    containers = eng.root / "containers"
    assert not [p for p in containers.glob("*/.fs-*")], "a private mount point was left behind"
    assert not [m for m in mounts_under(eng.base) if "/.fs-" in m]


# --- diff -------------------------------------------------------------------------------------------------


CHANGES = (
    "echo x > /tmp/new; echo changed > /data/seed; rm /etc/group; mkdir -p /newdir/sub; touch /newdir/sub/f"
)
DIFF = ["C /data", "C /data/seed", "C /etc", "D /etc/group", "A /newdir", "A /newdir/sub", "A /newdir/sub/f",
        "C /tmp", "A /tmp/new"]  # fmt: skip


def test_diff_lists_added_changed_and_deleted_paths(engine: Engine) -> None:
    engine.run("diffed", CHANGES)
    # the runtime's mount points (/proc, /sys, /dev, /etc/hostname...) are not changes, as in Docker
    assert engine("diff", "diffed").stdout.splitlines() == DIFF
    assert engine("container", "diff", "diffed").stdout.splitlines() == DIFF


def test_diff_of_a_running_and_of_an_untouched_container(engine: Engine) -> None:
    engine("create", "--name", "untouched", IMAGE, "true")
    assert engine("diff", "untouched").stdout == ""
    engine.start_detached("running-diff", "rm -rf /data; mkdir /data; echo z > /data/z")
    lines = engine("diff", "running-diff").stdout.splitlines()
    # /data was removed and made again (an opaque directory): what the image had in it is deleted
    assert lines == ["C /data", "D /data/other", "D /data/seed", "A /data/z", "A /ready"]
    engine("rm", "-f", "running-diff")


def test_diff_of_a_missing_container_fails(engine: Engine) -> None:
    result = engine("diff", "no-such-container", check=False)
    assert result.returncode == 1 and "No such container: no-such-container" in result.stderr


# --- export -----------------------------------------------------------------------------------------------


def test_export_holds_the_merged_rootfs_and_imports_as_an_image(engine: Engine, tmp_path: Path) -> None:
    engine.run("exported", CHANGES + "; ln /tmp/new /tmp/hard; ln -s /data/seed /tmp/soft")
    engine("export", "-o", str(tmp_path / "out.tar"), "exported")
    with tarfile.open(tmp_path / "out.tar") as tar:
        members = {m.name: m for m in tar}
        assert tar.extractfile("data/seed").read() == b"changed\n"  # type: ignore[union-attr]
    assert {"bin/busybox", "data/seed", "tmp/new", "newdir/sub/f", "etc/passwd"} <= members.keys()
    assert "etc/group" not in members
    assert {n: m.linkname for n, m in members.items() if m.islnk()} == {"tmp/new": "tmp/hard"}  # walk order
    assert members["tmp/soft"].issym() and members["tmp/soft"].linkname == "/data/seed"
    assert members["tmp"].mode == 0o1777 and members["bin/busybox"].uid == 0
    streamed = engine.raw("export", "exported")
    with tarfile.open(fileobj=io.BytesIO(streamed)) as tar:
        assert {m.name for m in tar} == members.keys()
    engine("import", str(tmp_path / "out.tar"), "exported:1")
    assert engine("run", "--rm", "exported:1", "/bin/cat", "/data/seed", "/tmp/new").stdout == "changed\nx\n"


def test_export_refuses_a_terminal(engine: Engine) -> None:
    engine("create", "--name", "to-tty", IMAGE, "true")
    parent, child = pty.openpty()
    try:
        proc = subprocess.run([KETCH, "export", "to-tty"], stdout=child, stderr=subprocess.PIPE, text=True,
                              env=engine.env, timeout=60, check=False)  # fmt: skip
    finally:
        os.close(child)
        os.close(parent)
    assert proc.returncode != 0 and "cowardly refusing to save to a terminal" in proc.stderr


# --- cp out -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("running", [True, False], ids=["running", "stopped"])
def test_cp_out_of_a_container(engine: Engine, tmp_path: Path, running: bool) -> None:
    name = f"out-{running}"
    script = "mkdir -p /out/sub; echo hi > /out/a; echo deep > /out/sub/b; chmod 0600 /out/a"
    if running:
        engine.start_detached(name, script)
    else:
        engine.run(name, script)
    engine("cp", f"{name}:/out/a", str(tmp_path / "file"))  # file -> new file
    assert (tmp_path / "file").read_text() == "hi\n" and (tmp_path / "file").stat().st_mode & 0o777 == 0o600
    (tmp_path / "existing").write_text("old")
    engine(
        "cp", f"{name}:out/a", str(tmp_path / "existing")
    )  # file -> existing file; the leading / is optional
    assert (tmp_path / "existing").read_text() == "hi\n"
    engine("cp", f"{name}:/out", str(tmp_path / "new"))  # dir -> new dir: its contents
    assert (tmp_path / "new/sub/b").read_text() == "deep\n"
    (tmp_path / "into").mkdir()
    engine("cp", f"{name}:/out", str(tmp_path / "into"))  # dir -> existing dir: the dir itself
    engine("cp", f"{name}:/out/a", str(tmp_path / "into"))  # file -> existing dir
    (tmp_path / "contents").mkdir()
    engine("cp", f"{name}:/out/.", str(tmp_path / "contents"))  # dir/. -> its contents
    assert (tmp_path / "into/out/sub/b").read_text() == "deep\n" and (tmp_path / "into/a").exists()
    assert sorted(os.listdir(tmp_path / "contents")) == ["a", "sub"]
    assert {k: v[1] for k, v in engine.tar(f"{name}:/out/a").items()} == {"a": b"hi\n"}
    assert set(engine.tar(f"{name}:/out")) == {"out", "out/a", "out/sub", "out/sub/b"}


def test_cp_out_errors_follow_docker(engine: Engine, tmp_path: Path) -> None:
    engine.run("out-errors", "mkdir /out; echo hi > /out/a")
    missing = engine("cp", "out-errors:/nope", str(tmp_path / "x"), check=False)
    assert (
        missing.returncode == 1 and "Could not find the file /nope in container out-errors" in missing.stderr
    )
    (tmp_path / "file").write_text("")
    onto_file = engine("cp", "out-errors:/out", str(tmp_path / "file"), check=False)
    assert onto_file.returncode == 1 and "cannot copy a directory" in onto_file.stderr
    not_dir = engine("cp", "out-errors:/out/a/", str(tmp_path / "y"), check=False)
    assert not_dir.returncode == 1 and "not a directory" in not_dir.stderr
    no_parent = engine("cp", "out-errors:/out/a", str(tmp_path / "no/such/dir"), check=False)
    assert no_parent.returncode == 1 and "no such file or directory" in no_parent.stderr
    both = engine("cp", "out-errors:/a", "out-errors:/b", check=False)
    assert "copying between containers is not supported" in both.stderr
    neither = engine("cp", str(tmp_path / "file"), str(tmp_path / "z"), check=False)
    assert "must specify at least one container source" in neither.stderr


def test_cp_etc_files_are_the_containers_own(engine: Engine, tmp_path: Path) -> None:
    engine("run", "--name", "etc-files", "--hostname", "inside", IMAGE, "true")
    engine("cp", "etc-files:/etc/hostname", str(tmp_path / "hostname"))
    assert (tmp_path / "hostname").read_text() == "inside\n"
    assert "127.0.0.1\tlocalhost" in engine.cat("etc-files:/etc/hosts")


# --- cp in ------------------------------------------------------------------------------------------------


def test_cp_into_a_container(engine: Engine, tmp_path: Path) -> None:
    engine("create", "--name", "in", IMAGE, "sh", "-c", "cat /x /tmp/tree/f /tmp/tree/sub/g /root/t /data/f")
    (tmp_path / "x").write_text("file\n")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "f").write_text("f\n")
    (tree / "sub/g").write_text("g\n")
    os.chown(tree / "f", 1234, 2345)
    engine("cp", str(tmp_path / "x"), "in:/x")  # file -> new file
    engine("cp", str(tree), "in:/tmp")  # dir -> into an existing dir
    engine("cp", "-a", str(tree / "f"), "in:/data")  # -a keeps the owner
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        add_member(tar, "t", "from a tar\n", mode=0o640, uid=7, gid=8)
        add_member(tar, ".wh.seed", "")  # a whiteout: a tar from stdin may delete, as a layer does
    engine.raw("cp", "-", "in:/root", data=buf.getvalue())
    engine.raw("cp", "-", "in:/data", data=buf.getvalue())
    assert engine("start", "-a", "in").stdout == "file\nf\ng\nfrom a tar\nf\n"
    owners = {name: (info.uid, info.gid) for name, (info, _data) in engine.tar("in:/tmp").items()}
    assert owners["tmp/tree/f"] == (0, 0)  # without -a: root's
    assert engine.tar("in:/data/f")["f"][0].uid == 1234
    assert engine.tar("in:/root/t")["t"][0].uid == 7
    assert "seed" not in {name.rpartition("/")[2] for name in engine.tar("in:/data")}


def test_cp_into_a_running_container_is_seen_at_once(engine: Engine, tmp_path: Path) -> None:
    engine.start_detached("in-live", "true")
    (tmp_path / "d").mkdir()
    (tmp_path / "d/inner").write_text("inner\n")
    engine("cp", str(tmp_path / "d") + "/.", "in-live:/root")  # dir/. -> contents into /root
    assert engine("exec", "in-live", "cat", "/root/inner").stdout == "inner\n"
    engine("rm", "-f", "in-live")


def test_cp_in_errors_follow_docker(engine: Engine, tmp_path: Path) -> None:
    engine("create", "--name", "in-errors", IMAGE, "true")
    (tmp_path / "f").write_text("")
    no_parent = engine("cp", str(tmp_path / "f"), "in-errors:/no/such/x", check=False)
    assert (
        no_parent.returncode == 1
        and "Could not find the file /no/such in container in-errors" in no_parent.stderr
    )
    dir_onto_file = engine("cp", str(tmp_path), "in-errors:/etc/passwd", check=False)
    assert "cannot copy a directory to the file" in dir_onto_file.stderr
    tar_onto_file = subprocess.run([KETCH, "cp", "-", "in-errors:/etc/passwd"], input=b"", capture_output=True,
                                   env=engine.env, timeout=60, check=False)  # fmt: skip
    assert b"must be a directory" in tar_onto_file.stderr
    missing = engine("cp", str(tmp_path / "nope"), "in-errors:/tmp", check=False)
    assert missing.returncode == 1 and "no such file or directory" in missing.stderr
    engine("create", "--name", "read-only", "--read-only", IMAGE, "true")
    read_only = engine("cp", str(tmp_path / "f"), "read-only:/tmp", check=False)
    assert "container rootfs is marked read-only" in read_only.stderr


# --- symlinks never leave the container (CVE-2018-15664) --------------------------------------------------


def test_cp_resolves_symlinks_inside_the_container(engine: Engine, tmp_path: Path) -> None:
    engine.run(
        "links", "ln -s / /escape; ln -s ../../../../../.. /up; ln -s /etc/shadow /x; ln -s /etc /etclink"
    )
    assert engine.cat("links:/escape/etc/passwd") == PASSWD  # the container's, not the host's
    assert engine.cat("links:/up/etc/passwd") == PASSWD
    assert engine.cat("links:/etclink/passwd") == PASSWD
    link = engine.tar("links:/x")["x"][0]  # a symlink is copied as such
    assert link.issym() and link.linkname == "/etc/shadow"
    followed = engine("cp", "-L", "links:/x", str(tmp_path / "shadow"), check=False)
    assert (
        followed.returncode == 1 and "Could not find the file /x" in followed.stderr
    )  # no /etc/shadow inside
    assert not (tmp_path / "shadow").exists()
    engine("cp", "-L", "links:/etclink", str(tmp_path / "etc"))
    assert (tmp_path / "etc/passwd").read_text() == PASSWD


def test_cp_in_through_symlinks_writes_inside_the_container(engine: Engine, tmp_path: Path) -> None:
    marker = f"ketch-cp-test-{os.getpid()}"
    host_targets = [Path("/tmp", marker), Path("/", marker), Path("/root", marker)]
    assert not any(p.exists() for p in host_targets)
    engine.run("links-in", "ln -s / /escape; ln -s /escape/root /rootlink")
    (tmp_path / marker).write_text("inside\n")
    engine("cp", str(tmp_path / marker), "links-in:/escape/tmp/")  # into /tmp through a link to /
    engine("cp", str(tmp_path / marker), "links-in:/escape")  # a link to / as the destination
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        add_member(tar, marker, "from tar\n", mode=0o644)
    engine.raw("cp", "-", "links-in:/rootlink", data=buf.getvalue())
    try:
        assert not any(p.exists() for p in host_targets)
    finally:
        for p in host_targets:
            p.unlink(missing_ok=True)
    assert engine.cat(f"links-in:/tmp/{marker}") == "inside\n"
    assert engine.cat(f"links-in:/{marker}") == "inside\n"
    assert engine.cat(f"links-in:/root/{marker}") == "from tar\n"


def test_cp_out_never_writes_through_a_symlink_a_container_made(engine: Engine, tmp_path: Path) -> None:
    """A container cannot make cp-out write outside the destination with names or links of its own."""
    engine.run("hostile", "mkdir -p /out; ln -s / /out/root; echo x > /out/file")
    engine("cp", "hostile:/out", str(tmp_path / "copy"))
    assert (tmp_path / "copy/root").is_symlink() and os.readlink(tmp_path / "copy/root") == "/"
    assert (tmp_path / "copy/file").read_text() == "x\n"


# --- commit -----------------------------------------------------------------------------------------------


def test_commit_makes_a_runnable_image_with_the_changes(engine: Engine) -> None:
    engine.run("committed", "echo new > /new; rm /data/seed; rm -rf /root; mkdir /root; echo r > /root/r")
    image_id = engine("commit", "-m", "the message", "-a", "Jane <j@example.com>", "-c", 'CMD ["cat","/new"]',
                      "committed", "committed:1").stdout.strip()  # fmt: skip
    assert image_id.startswith("sha256:") and len(image_id) == 71
    assert engine("run", "--rm", "committed:1").stdout == "new\n"
    assert (
        engine("run", "--rm", "committed:1", "ls", "/data", "/root").stdout == "/data:\nother\n\n/root:\nr\n"
    )
    doc = json.loads(engine("image", "inspect", "committed:1").stdout)[0]
    assert (
        doc["Id"] == image_id and doc["Author"] == "Jane <j@example.com>" and doc["Comment"] == "the message"
    )
    assert doc["Config"]["Cmd"] == ["cat", "/new"] and doc["Config"]["Env"] == ["PATH=/bin"]
    assert len(doc["RootFS"]["Layers"]) == 2
    history = engine("history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Comment}}", "committed:1")
    first = history.stdout.splitlines()[0]
    assert first.startswith("sh -c echo new > /new") and first.endswith("|the message")


def test_commit_of_a_running_container_and_without_changes(engine: Engine) -> None:
    engine.start_detached("commit-live", "echo live > /live")
    image_id = engine("commit", "commit-live").stdout.strip()
    assert engine("images", "-q", "--no-trunc").stdout.count(image_id) == 1  # dangling, no name
    assert engine("run", "--rm", image_id, "cat", "/live").stdout == "live\n"
    engine("rm", "-f", "commit-live")
    engine("create", "--name", "commit-empty", IMAGE, "true")
    engine("commit", "-c", "ENV A=b", "commit-empty", "empty:1")
    doc = json.loads(engine("image", "inspect", "empty:1").stdout)[0]
    assert len(doc["RootFS"]["Layers"]) == 1 and "A=b" in doc["Config"]["Env"]  # no new layer
    assert engine("run", "--rm", "empty:1", "cat", "/data/seed").stdout == SEED


def test_commit_refuses_bad_input(engine: Engine) -> None:
    engine("create", "--name", "commit-bad", IMAGE, "true")
    bad_change = engine("commit", "-c", "FROB x", "commit-bad", check=False)
    assert bad_change.returncode == 1 and "FROB is not a valid change command" in bad_change.stderr
    digest = engine("commit", "commit-bad", "x@sha256:" + "a" * 64, check=False)
    assert "refusing to create a tag with a digest reference" in digest.stderr


# --- the vfs driver: the snapshot is a full tree, compared with the image's -------------------------------


@pytest.fixture(scope="module")
def vfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    yield from running_engine(tmp_path_factory, "fs-vfs", "--storage-driver", "vfs")


def test_vfs_diff_commit_and_cp(vfs: Engine, tmp_path: Path) -> None:
    # containers are never started here: cp, diff and commit work on the snapshot alone
    vfs("create", "--name", "vfs-1", IMAGE, "true")
    (tmp_path / "new").write_text("new\n")
    vfs("cp", str(tmp_path / "new"), "vfs-1:/tmp/new")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        add_member(tar, "seed", "changed\n", mode=0o644)
        add_member(tar, ".wh.other", "")
    vfs.raw("cp", "-", "vfs-1:/data", data=buf.getvalue())
    assert vfs("diff", "vfs-1").stdout.splitlines() == [
        "C /data",
        "D /data/other",
        "C /data/seed",
        "C /tmp",
        "A /tmp/new",
    ]
    vfs("commit", "vfs-1", "vfs:1")
    vfs("create", "--name", "vfs-2", "vfs:1", "true")
    assert vfs.cat("vfs-2:/data/seed") == "changed\n" and vfs.cat("vfs-2:/tmp/new") == "new\n"
    assert set(vfs.tar("vfs-2:/data")) == {"data", "data/seed"}
    assert vfs("diff", "vfs-2").stdout == ""
