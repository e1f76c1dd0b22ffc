"""Unit tests for ketch.cli.args: the runc-style command-line parser."""

from __future__ import annotations

import pytest

from ketch.cli.args import Flag, Parsed, parse, usage
from ketch.errors import InvalidArgument

FLAGS = (
    Flag("detach", "d"),
    Flag("tty", "t"),
    Flag("bundle", "b", value=True, default="."),
    Flag("pid-file", value=True),
    Flag("env", "e", value=True, multi=True),
    Flag("preserve-fds", value=True),
)


def test_defaults_when_nothing_is_given() -> None:
    out = parse([], FLAGS)
    assert out.flags == {
        "detach": None,
        "tty": None,
        "bundle": ".",
        "pid-file": None,
        "env": [],
        "preserve-fds": None,
    }
    assert out.args == []
    assert out.boolean("detach") is False
    assert out.string("pid-file") == ""
    assert out.strings("env") == []


def test_multi_default_is_a_fresh_list_per_parse() -> None:
    first = parse(["-e", "A=1"], FLAGS)
    second = parse([], FLAGS)
    assert first.strings("env") == ["A=1"]
    assert second.strings("env") == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--bundle", "/b", "ctr"],
        ["--bundle=/b", "ctr"],
        ["-b", "/b", "ctr"],
        ["-b=/b", "ctr"],
        ["ctr", "--bundle", "/b"],
    ],
)
def test_value_flag_spellings(argv: list[str]) -> None:
    out = parse(argv, FLAGS)
    assert out.string("bundle") == "/b"
    assert out.args == ["ctr"]


def test_inline_value_may_contain_equals_and_be_empty() -> None:
    assert parse(["--pid-file=a=b"], FLAGS).string("pid-file") == "a=b"
    assert parse(["--pid-file="], FLAGS).flags["pid-file"] == ""


def test_value_may_start_with_a_dash() -> None:
    assert parse(["--pid-file", "-"], FLAGS).string("pid-file") == "-"


def test_long_and_short_booleans() -> None:
    out = parse(["--detach", "-t"], FLAGS)
    assert out.boolean("detach")
    assert out.boolean("tty")


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("--detach=true", True),
        ("--detach=yes", True),
        ("--detach=false", False),
        ("--detach=FALSE", False),
        ("--detach=0", False),
        ("--detach=no", False),
    ],
)
def test_boolean_with_inline_value(arg: str, expected: bool) -> None:
    assert parse([arg], FLAGS).flags["detach"] is expected


def test_bundled_short_booleans() -> None:
    out = parse(["-dt", "ctr"], FLAGS)
    assert out.boolean("detach")
    assert out.boolean("tty")
    assert out.args == ["ctr"]


def test_repeated_multi_flag_collects_in_order() -> None:
    out = parse(["-e", "A=1", "--env", "B=2", "--env=C=3", "ctr"], FLAGS)
    assert out.strings("env") == ["A=1", "B=2", "C=3"]
    assert out.args == ["ctr"]


def test_repeated_single_flag_keeps_the_last() -> None:
    assert parse(["--bundle", "/a", "--bundle", "/b"], FLAGS).string("bundle") == "/b"


def test_double_dash_ends_flags() -> None:
    out = parse(["-d", "--", "-t", "--bundle", "x"], FLAGS)
    assert out.boolean("detach")
    assert not out.boolean("tty")
    assert out.args == ["-t", "--bundle", "x"]


def test_single_dash_is_a_positional() -> None:
    assert parse(["-", "-d"], FLAGS).args == ["-"]


def test_flags_after_positionals_are_parsed_by_default() -> None:
    out = parse(["ctr", "-d", "extra"], FLAGS)
    assert out.boolean("detach")
    assert out.args == ["ctr", "extra"]


def test_stop_at_positional() -> None:
    out = parse(["-d", "ctr", "sh", "-c", "--tty", "--unknown"], FLAGS, stop_at_positional=True)
    assert out.boolean("detach")
    assert not out.boolean("tty")
    assert out.args == ["ctr", "sh", "-c", "--tty", "--unknown"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nope"], "run: unknown flag --nope"),
        (["--nope=1"], "run: unknown flag --nope"),
        (["-x"], "run: unknown flag -x"),
        (["-dx"], "run: unknown flag -dx"),
        (["--d"], "run: unknown flag --d"),
    ],
)
def test_unknown_flag_raises(argv: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse(argv, FLAGS, what="run")
    assert str(info.value) == message


@pytest.mark.parametrize("argv", [["--bundle"], ["-b"], ["ctr", "-e"]])
def test_missing_value_raises(argv: list[str]) -> None:
    with pytest.raises(InvalidArgument, match="needs a value"):
        parse(argv, FLAGS)


def test_missing_value_names_the_long_flag() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse(["-b"], FLAGS, what="create")
    assert str(info.value) == "create: flag --bundle needs a value"


def test_bundled_value_flag_is_not_silently_set_to_true() -> None:
    try:
        out = parse(["-de", "A=1"], FLAGS)
    except InvalidArgument:
        return
    assert out.flags["env"] == ["A=1"]


# --- Parsed accessors ----------------------------------------------------------------------------


def test_integer() -> None:
    assert parse(["--preserve-fds", "3"], FLAGS).integer("preserve-fds") == 3
    assert parse([], FLAGS).integer("preserve-fds") == 0
    assert parse([], FLAGS).integer("preserve-fds", 7) == 7
    assert parse(["--preserve-fds="], FLAGS).integer("preserve-fds", 5) == 5
    assert parse(["--preserve-fds=-1"], FLAGS).integer("preserve-fds") == -1


@pytest.mark.parametrize("raw", ["abc", "1.5", "0x10", "3a"])
def test_integer_with_a_bad_number_raises(raw: str) -> None:
    out = parse(["--preserve-fds", raw], FLAGS)
    with pytest.raises(InvalidArgument) as info:
        out.integer("preserve-fds")
    assert str(info.value) == f"--preserve-fds: expected a number, got {raw!r}"


def test_accessors_ignore_values_of_the_wrong_kind() -> None:
    p = Parsed({"a": True, "b": "x", "c": ["s", 1], "d": None})
    assert p.string("a") == ""
    assert p.string("b") == "x"
    assert p.boolean("a") is True
    assert p.boolean("b") is False
    assert p.strings("c") == ["s"]
    assert p.strings("b") == []
    assert p.string("missing") == ""


def test_parsed_is_mutable() -> None:
    p = Parsed()
    p.args = ["x"]
    assert p.args == ["x"]


def test_usage_lists_each_flag() -> None:
    text = usage((Flag("bundle", "b", value=True, help="path to the bundle"), Flag("detach", help="go")))
    lines = text.splitlines()
    assert len(lines) == 2
    assert "--bundle, -b value" in lines[0]
    assert lines[0].endswith("path to the bundle")
    assert "--detach" in lines[1]
