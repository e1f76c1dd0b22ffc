"""The build context's path rules: sources resolve inside it, .dockerignore removes files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ketch.build.context import Root, content_hash
from ketch.build.ignore import IgnoreRules
from ketch.errors import NotFound


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    for name, text in {
        "a.txt": "a",
        "b.log": "b",
        "dir/one": "1",
        "dir/sub/two": "2",
        "dir/x.log": "x",
    }.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "outside").write_text("secret")
    (root / "up").symlink_to("../outside")
    (root / "abs").symlink_to(str(tmp_path / "outside"))
    (root / "inner").symlink_to("dir/one")
    return root


def names(sources: list[object]) -> list[str]:
    return sorted(s.name for s in sources)  # type: ignore[attr-defined]


def test_files_directories_and_wildcards(tree: Path) -> None:
    r = Root(str(tree))
    assert names(r.sources("a.txt")) == ["a.txt"]
    assert names(r.sources("inner")) == ["inner"]  # a symlink named as a source is followed, keeps its name
    assert names(r.sources("dir")) == ["one", "sub", "sub/two", "x.log"]
    assert names(r.sources("*.txt")) == ["a.txt"]
    assert names(r.sources("dir/*/two")) == ["two"]
    with pytest.raises(NotFound):
        r.sources("missing")
    with pytest.raises(NotFound):
        r.sources("*.nothing")


def test_symlinks_resolve_inside_the_root(tree: Path) -> None:
    r = Root(str(tree))
    assert r.resolve("inner") == str(tree / "dir/one")
    # ../outside and an absolute link both land on <root>/outside, which does not exist
    for link in ("up", "abs", "../outside", "dir/../../outside"):
        with pytest.raises(NotFound):
            r.resolve(link)


def test_ignored_files_are_not_in_the_context(tree: Path) -> None:
    r = Root(str(tree), IgnoreRules.parse("*.log\ndir/sub\n!dir/x.log\n"))
    assert names(r.sources(".")) == sorted(["a.txt", "abs", "dir", "dir/one", "dir/x.log", "inner", "up"])
    for pattern in ("*.log", "b.log"):
        with pytest.raises(NotFound):
            r.sources(pattern)


def test_content_hash_ignores_times_but_not_contents_or_modes(tree: Path) -> None:
    r = Root(str(tree))
    before = content_hash(r.sources("dir"))
    os.utime(tree / "dir/one", (1, 1))
    assert content_hash(r.sources("dir")) == before
    os.chmod(tree / "dir/one", 0o600)
    after_mode = content_hash(r.sources("dir"))
    assert after_mode != before
    (tree / "dir/one").write_text("changed")
    assert content_hash(r.sources("dir")) != after_mode
