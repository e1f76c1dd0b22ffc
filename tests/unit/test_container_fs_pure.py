"""Container filesystem helpers without an engine: the in-root resolver, cp arguments, tar writing."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.cli.fs import split_cp_arg
from ketch.engine import filesystem as fs
from ketch.errors import InvalidArgument, NotFound, Unsupported


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A container-like tree with hostile links, and an O_PATH fd of it."""
    top = tmp_path / "root"
    (top / "etc").mkdir(parents=True)
    (top / "etc/passwd").write_text("inside\n")
    (top / "file").write_text("")
    for name, target in (("escape", "/"), ("up", "../../../../.."), ("shadow", "/etc/shadow"),
                         ("etclink", "etc"), ("loop", "loop"), ("abs", "/etc/passwd")):  # fmt: skip
        (top / name).symlink_to(target)
    fd = os.open(top, os.O_PATH | os.O_DIRECTORY)
    try:
        yield top, fd
    finally:
        os.close(fd)


def _resolved(fd: int, path: str, follow: bool = False) -> tuple[str, os.stat_result | None]:
    with fs.resolve(fd, path, follow) as entry:
        return entry.path, entry.stat()


@pytest.mark.parametrize("path", ["/escape/etc/passwd", "up/etc/passwd", "/../../etc/passwd", "etclink/passwd",
                                  "/escape/escape/up/etc/./passwd", "abs", "/etc/../etc/passwd"])  # fmt: skip
def test_resolve_stays_in_the_root(root: tuple[Path, int], path: str) -> None:
    top, fd = root
    where, st = _resolved(fd, path, follow=True)
    assert where == "/etc/passwd"
    assert st is not None and st.st_ino == os.stat(top / "etc/passwd").st_ino


def test_resolve_keeps_a_last_symlink_unless_asked(root: tuple[Path, int]) -> None:
    _top, fd = root
    where, st = _resolved(fd, "/shadow")
    assert where == "/shadow" and st is not None and stat.S_ISLNK(st.st_mode)
    assert _resolved(fd, "/shadow", follow=True) == ("/etc/shadow", None)  # the container's: absent


def test_resolve_names_the_root_and_missing_entries(root: tuple[Path, int]) -> None:
    _top, fd = root
    assert _resolved(fd, "/")[0] == "/" and _resolved(fd, "/escape", follow=True)[0] == "/"
    assert _resolved(fd, "/etc/new") == ("/etc/new", None)


def test_resolve_refuses_loops_missing_parents_and_files_as_directories(root: tuple[Path, int]) -> None:
    _top, fd = root
    with pytest.raises(InvalidArgument, match="too many levels of symbolic links"):
        fs.resolve(fd, "/loop/x", False)
    with pytest.raises(NotFound):
        fs.resolve(fd, "/no/such", False)
    with pytest.raises(InvalidArgument, match="not a directory"):
        fs.resolve(fd, "/file/x", False)


@pytest.mark.parametrize(("arg", "split"), [
    ("c:/etc/passwd", ("c", "/etc/passwd")), ("c:etc", ("c", "etc")), ("c:", ("c", "/")),
    ("/abs:path", ("", "/abs:path")), ("./local:name", ("", "./local:name")), ("plain", ("", "plain")),
    ("-", ("", "-")),
])  # fmt: skip
def test_split_cp_arg_follows_docker(arg: str, split: tuple[str, str]) -> None:
    assert split_cp_arg(arg) == split


def _tar_of(tree: Path, **kw: object) -> dict[str, tarfile.TarInfo]:
    out = io.BytesIO()
    archiver = fs._Archiver(out, **kw)  # type: ignore[arg-type]
    fd = os.open(tree.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        archiver.tree(fd, tree.name, tree.name)
    finally:
        os.close(fd)
    archiver.close()
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        return {m.name: m for m in tar}


def test_archiver_keeps_links_fifos_and_modes(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "a").write_text("data")
    os.chmod(tree / "a", 0o4750)
    os.link(tree / "a", tree / "b")
    (tree / "s").symlink_to("/etc/passwd")
    os.mkfifo(tree / "p")
    members = _tar_of(tree, owner=(5, 6))
    assert set(members) == {"t", "t/a", "t/b", "t/p", "t/s"}
    assert members["t/a"].mode == 0o4750 and members["t/a"].size == 4 and members["t/a"].uid == 5
    assert members["t/b"].islnk() and members["t/b"].linkname == "t/a"
    assert members["t/s"].issym() and members["t/s"].linkname == "/etc/passwd"
    assert members["t/p"].isfifo() and members["t"].isdir()


def test_archiver_refuses_whiteout_names_when_copying(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / ".wh..wh..opq").write_text("")
    assert ".wh..wh..opq" in {Path(n).name for n in _tar_of(tree)}  # export and commit keep them
    with pytest.raises(Unsupported, match="mark deletions"):
        _tar_of(tree, plain=True)


def test_lowers_read_layers_top_down(tmp_path: Path) -> None:
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    (bottom / "d").mkdir(parents=True)
    (bottom / "d/old").write_text("")
    (bottom / "f").write_text("")
    (top / "d").mkdir(parents=True)
    (top / "d/new").write_text("")
    (top / "f").mkdir()  # a directory over a file hides it
    lowers = fs._Lowers([str(top), str(bottom)])
    assert lowers.lookup("d/old") is not None and lowers.lookup("d/new") is not None
    assert lowers.lookup("nope") is None and lowers.lookup("d/nope/x") is None
    f = lowers.lookup("f")
    assert f is not None and stat.S_ISDIR(f.st_mode)
    assert lowers.children("d") == {"old", "new"}


@pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts are device nodes and opaque marks trusted xattrs")
def test_lowers_follow_whiteouts_and_opaque_directories(tmp_path: Path) -> None:
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    for d in ("d", "o"):
        (bottom / d).mkdir(parents=True)
        (bottom / d / "old").write_text("")
        (top / d).mkdir(parents=True)
    os.mknod(top / "d/old", stat.S_IFCHR, 0)  # overlay's whiteout
    (top / "o/new").write_text("")
    os.setxattr(top / "o", "trusted.overlay.opaque", b"y")
    lowers = fs._Lowers([str(top), str(bottom)])
    assert lowers.lookup("d/old") is None and lowers.lookup("o/old") is None
    assert lowers.lookup("o/new") is not None
    assert lowers.children("d") == set() and lowers.children("o") == {"new"}
