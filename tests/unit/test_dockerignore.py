"""Unit tests for ketch.build.ignore: .dockerignore reading, matching and the context walk.

The matching table is moby/patternmatcher's TestMatches (MatchesOrParentMatches); reading follows
ignorefile's TestReadAll; the examples are those of Docker's .dockerignore documentation.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ketch.build.ignore import IgnoreRules, clean, read_patterns
from ketch.errors import InvalidArgument

# --- reading ------------------------------------------------------------------------------------------


def test_read_patterns_like_ignorefile_readall() -> None:
    content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! "
    assert read_patterns(content) == [
        "test1",
        "test2",
        "a/file/here",
        "lastfile",
        "!inverted/abs/path",
        "!",
        "!",
    ]


@pytest.mark.parametrize(
    ("text", "patterns"),
    [
        ("", []),
        ("\n\n   \n", []),
        ("  spaced  \n\ttabbed\t\n", ["spaced", "tabbed"]),
        ("a\r\nb\r\n", ["a", "b"]),
        ("\ufeffbom\n", ["bom"]),
        ("#comment\n #not a comment\n", ["#not a comment"]),
        ("./a/../b/\n", ["b"]),
        ("a//b/./c\n", ["a/b/c"]),
        ("/\n", ["/"]),
        ("../x\n", ["../x"]),
        ("!./keep/\n", ["!keep"]),
        ("!  /x/y  \n", ["!x/y"]),
        ("dir/\n", ["dir"]),
    ],
)
def test_read_patterns(text: str, patterns: list[str]) -> None:
    assert read_patterns(text) == patterns


@pytest.mark.parametrize(
    ("path", "cleaned"),
    [("", "."), (".", "."), ("a/", "a"), ("a//b", "a/b"), ("./a/./b/..", "a"), ("/../a", "/a"), ("../../a", "../../a"),
     ("a/../..", ".."), ("/", "/")],
)  # fmt: skip
def test_clean(path: str, cleaned: str) -> None:
    assert clean(path) == cleaned


def test_single_exclamation_is_an_error() -> None:
    with pytest.raises(InvalidArgument, match='illegal exclusion pattern: "!"'):
        IgnoreRules.parse("a\n!\n")
    with pytest.raises(InvalidArgument, match='illegal exclusion pattern: "!"'):
        IgnoreRules(["!"])


@pytest.mark.parametrize("pattern", ["[", "a[", "[]", "[]a]", "[a-]", "[-a]", "[z-a]", "a\\", "[a\\", "[^"])
def test_malformed_patterns_are_errors(pattern: str) -> None:
    with pytest.raises(InvalidArgument, match="syntax error in pattern"):
        IgnoreRules([pattern])


def test_patterns_property_and_exclusions() -> None:
    rules = IgnoreRules(["docs", "  !docs/README.md  ", "", "config/"])
    assert rules.patterns == ["docs", "!docs/README.md", "config"]
    assert rules.has_exclusions
    assert not IgnoreRules(["docs", "config"]).has_exclusions


# --- matching: moby/patternmatcher TestMatches --------------------------------------------------------------

MATCHES = [
    ("**", "file", True), ("**", "file/", True), ("**/", "file", True), ("**/", "file/", True),
    ("**", "dir/file", True), ("**/", "dir/file", True), ("**", "dir/file/", True), ("**/", "dir/file/", True),
    ("**/**", "dir/file", True), ("**/**", "dir/file/", True), ("dir/**", "dir/file", True),
    ("dir/**", "dir/file/", True), ("dir/**", "dir/dir2/file", True), ("dir/**", "dir/dir2/file/", True),
    ("**/dir", "dir", True), ("**/dir", "dir/file", True), ("**/dir2/*", "dir/dir2/file", True),
    ("**/dir2/*", "dir/dir2/file/", True), ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**/dir2/**", "dir/dir2/dir3/file/", True), ("**file", "file", True), ("**file", "dir/file", True),
    ("**/file", "dir/file", True), ("**file", "dir/dir/file", True), ("**/file", "dir/dir/file", True),
    ("**/file*", "dir/dir/file", True), ("**/file*", "dir/dir/file.txt", True),
    ("**/file*txt", "dir/dir/file.txt", True), ("**/file*.txt", "dir/dir/file.txt", True),
    ("**/file*.txt*", "dir/dir/file.txt", True), ("**/**/*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False), ("**/*.txt", "file.txt", True), ("**/**/*.txt", "file.txt", True),
    ("a**/*.txt", "a/file.txt", True), ("a**/*.txt", "a/dir/file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True), ("a/*.txt", "a/dir/file.txt", False), ("a/*.txt", "a/file.txt", True),
    ("a/*.txt**", "a/file.txt", True), ("a[b-d]e", "ae", False), ("a[b-d]e", "ace", True), ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True), (".*", ".foo", True), (".*", "foo", False), ("abc.def", "abcdef", False),
    ("abc.def", "abc.def", True), ("abc.def", "abcZdef", False), ("abc?def", "abcZdef", True),
    ("abc?def", "abcdef", False), ("a\\\\", "a\\", True), ("**/foo/bar", "foo/bar", True),
    ("**/foo/bar", "dir/foo/bar", True), ("**/foo/bar", "dir/dir2/foo/bar", True), ("abc/**", "abc", False),
    ("abc/**", "abc/def", True), ("abc/**", "abc/def/ghi", True), ("**/.foo", ".foo", True),
    ("**/.foo", "bar.foo", False), ("a(b)c/def", "a(b)c/def", True), ("a(b)c/def", "a(b)c/xyz", False),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
     "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("a\\*b", "a*b", True),
    # more: a matched directory takes its contents, * and ? stop at /, classes, escapes
    ("*", "fileutils.go", True), ("*.go", "fileutils.go", True), ("*.go", "dir/x.go", False),
    ("dir", "dir/sub/file", True), ("dir/sub", "dir/sub/deeper/file", True), ("dir/sub", "dir/subx", False),
    ("d?r", "dir/x", True), ("d?r", "d/r", False), ("a*b", "a/b", False), ("[a-c]*", "b/x", True),
    ("[^a]", "/", False), ("a[\\]]b", "a]b", True), ("a[*]b", "a*b", True), ("a[*]b", "axb", False),
    ("a\\?b", "a?b", True), ("a\\?b", "axb", False), ("x^y", "x^y", True), ("a\\b", "ab", True),
    ("caf\u00e9", "caf\u00e9", True), ("**/caf?", "x/caf\u00e9", True), ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True), ("a/**/b", "a/xb", False), ("/abs/path", "abs/path", False),  # only reading drops a leading /
    ("./rel/", "rel/x", True), ("a/../b", "b", True),
]  # fmt: skip


@pytest.mark.parametrize(("pattern", "path", "excluded"), MATCHES)
def test_matches(pattern: str, path: str, excluded: bool) -> None:
    assert IgnoreRules([pattern]).excluded(path) is excluded


MULTI = [
    (["**", "!util/docker/web"], "util/docker/web/foo", False),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
    (["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
     "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
    (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
    (["!fileutils.go", "*.go"], "fileutils.go", True),
    (["*.go", "!fileutils.go"], "fileutils.go", False),
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs/", "!docs/README.md"], "docs/README.md", False),
    (["docs/*", "!docs/README.md"], "docs/README.md", False),
    (["docs", "!docs/README.md"], "docs/other.md", True),
    (["docs", "!docs/README.md"], "docs", True),
    (["docs", "!docs/sub", "docs/sub/secret"], "docs/sub/x", False),
    (["docs", "!docs/sub", "docs/sub/secret"], "docs/sub/secret/key", True),
    ([], "any/path/there", False),
]  # fmt: skip


@pytest.mark.parametrize(("patterns", "path", "excluded"), MULTI)
def test_last_matching_rule_wins(patterns: list[str], path: str, excluded: bool) -> None:
    assert IgnoreRules(patterns).excluded(path) is excluded


@pytest.mark.parametrize("path", [".", "", "./", "/"])
def test_context_root_is_never_excluded(path: str) -> None:
    assert not IgnoreRules(["**", "*", "."]).excluded(path)


# --- Docker's documented examples ------------------------------------------------------------------------

DOCS_RULES = "# comment\n*/temp*\n*/*/temp*\ntemp?\n"


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("somedir/temporary.txt", True),
        ("somedir/temp", True),
        ("somedir/subdir/temporary.txt", True),
        ("tempa", True),
        ("tempb", True),
        ("temp", False),
        ("temporary.txt", False),
        ("a/b/c/temporary.txt", False),
        ("somedir/other.txt", False),
    ],
)
def test_documented_example(path: str, excluded: bool) -> None:
    assert IgnoreRules.parse(DOCS_RULES).excluded(path) is excluded


@pytest.mark.parametrize(
    ("text", "path", "excluded"),
    [
        ("**/*.go", "main.go", True),
        ("**/*.go", "cmd/app/main.go", True),
        ("**/*.go", "main.go.txt", False),
        ("*.md\n!README.md", "README.md", False),
        ("*.md\n!README.md", "CHANGES.md", True),
        ("*.md\n!README*.md\nREADME-secret.md", "README-secret.md", True),
        ("*.md\n!README*.md\nREADME-secret.md", "README-public.md", False),
        ("*.md\nREADME-secret.md\n!README*.md", "README-secret.md", False),
        ("*\n!src\n", "src/app/main.py", False),
        ("*\n!src\n", "Dockerfile", True),
        ("node_modules\n", "node_modules/pkg/index.js", True),
        ("node_modules\n", "src/node_modules/pkg/index.js", False),
        ("**/node_modules\n", "src/node_modules/pkg/index.js", True),
        (".git\n", ".git/HEAD", True),
        (".git\n", ".github/workflows/ci.yml", False),
        ("/abs/path\n", "abs/path/file", True),
        ("!/x\n", "x", False),
    ],
)
def test_documented_exceptions(text: str, path: str, excluded: bool) -> None:
    assert IgnoreRules.parse(text).excluded(path) is excluded


# --- descending into excluded directories -----------------------------------------------------------------

DESCEND = [
    (["node_modules"], "node_modules", False),  # no exceptions: never enter
    (["docs", "!docs/keep.md"], "docs", True),
    (["docs", "!docs/keep.md"], "other", False),
    (["docs", "!docs/sub/keep.md"], "docs/sub", True),
    (["docs", "!docs/sub/keep.md"], "docs/other", False),
    (["docs", "!docs/sub/*"], "docs", True),  # a trailing /* or /** is not a wildcard here
    (["docs", "!docs/sub/**"], "docs/sub", True),
    (["docs", "!docs"], "docs", True),
    (["docs", "!docs2/x"], "docs", False),
    (["*", "!**/*.keep"], "anything", True),  # a wildcard exception may match anywhere
    (["*", "!a/*.keep"], "b", True),
    (["*", "!a/b\\*c"], "b", False),  # an escaped wildcard is plain text
]


@pytest.mark.parametrize(("patterns", "directory", "descend"), DESCEND)
def test_may_contain_included(patterns: list[str], directory: str, descend: bool) -> None:
    assert IgnoreRules(patterns).may_contain_included(directory) is descend


# --- walking a context ---------------------------------------------------------------------------------


def make_tree(root: Path, files: list[str]) -> None:
    for name in files:
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(name)


def test_walk_excludes_and_reincludes(tmp_path: Path) -> None:
    make_tree(tmp_path, ["Dockerfile", "README.md", "docs/a.md", "docs/keep.md", "docs/sub/b.md", "src/app.py",
                         "src/app.pyc", "node_modules/x/index.js", "empty/"])  # fmt: skip
    rules = IgnoreRules.parse("*.md\n!README.md\ndocs\n!docs/keep.md\nnode_modules\n**/*.pyc\n")
    assert list(rules.walk(str(tmp_path))) == [
        "Dockerfile", "README.md", "docs", "docs/keep.md", "empty", "src", "src/app.py",
    ]  # fmt: skip


def test_walk_reports_excluded_parents_once(tmp_path: Path) -> None:
    make_tree(tmp_path, ["a/b/c/keep.txt", "a/b/c/drop.txt", "a/b/d/keep.txt", "a/x.txt"])
    rules = IgnoreRules(["a", "!a/b/c/keep.txt", "!a/b/d/keep.txt"])
    assert list(rules.walk(str(tmp_path))) == [
        "a",
        "a/b",
        "a/b/c",
        "a/b/c/keep.txt",
        "a/b/d",
        "a/b/d/keep.txt",
    ]


def test_walk_wildcard_exception_enters_everything(tmp_path: Path) -> None:
    make_tree(tmp_path, ["x/y/z.keep", "x/y/z.txt", "w.txt"])
    rules = IgnoreRules(["*", "!**/*.keep"])
    assert list(rules.walk(str(tmp_path))) == ["x", "x/y", "x/y/z.keep"]


def test_walk_does_not_follow_symlinks(tmp_path: Path) -> None:
    make_tree(tmp_path, ["real/file.txt"])
    os.symlink("real", tmp_path / "link")
    os.symlink("/etc", tmp_path / "outside")
    assert list(IgnoreRules().walk(str(tmp_path))) == ["link", "outside", "real", "real/file.txt"]
    assert list(IgnoreRules(["real"]).walk(str(tmp_path))) == ["link", "outside"]


def test_walk_without_rules_lists_everything(tmp_path: Path) -> None:
    make_tree(tmp_path, ["b", "a/2", "a/1", ".hidden"])
    assert list(IgnoreRules.parse("").walk(str(tmp_path))) == [".hidden", "a", "a/1", "a/2", "b"]


def test_walk_skips_unreadable_excluded_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path, ["locked/secret", "open/file"])
    real_scandir = os.scandir
    locked = str(tmp_path / "locked")

    def scandir(path: str) -> object:
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    rules = IgnoreRules(["locked", "!locked/x"])
    assert list(rules.walk(str(tmp_path))) == ["open", "open/file"]
    with pytest.raises(PermissionError):
        list(IgnoreRules().walk(str(tmp_path)))
