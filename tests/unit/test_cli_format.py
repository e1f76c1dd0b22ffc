"""Unit tests for the CLI's output formatting: --format templates, sizes, durations, times, tables."""

from __future__ import annotations

import calendar
import datetime
import json

import pytest

from ketch.cli import common
from ketch.cli.template import render
from ketch.errors import InvalidArgument

ROWS = [
    {"Repository": "busybox", "Tag": "latest", "ID": "abcdef012345", "Size": "4.26MB"},
    {"Repository": "ghcr.io/org/application", "Tag": "1", "ID": "0123456789ab", "Size": "120MB"},
]
HEADER = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "Size": "SIZE"}


# --- render: fields and functions -----------------------------------------------------------------------


def test_field_one_line_per_row() -> None:
    assert render("{{.Repository}}:{{.Tag}}", ROWS, HEADER) == "busybox:latest\nghcr.io/org/application:1"


def test_no_rows() -> None:
    assert render("{{.ID}}", [], HEADER) == ""


def test_plain_text_kept() -> None:
    assert render("id={{.ID}} size={{ .Size }}!", ROWS[:1], {}) == "id=abcdef012345 size=4.26MB!"


def test_nested_field() -> None:
    rows = [{"Config": {"Labels": {"a": "1"}, "User": "root"}}]
    assert render("{{.Config.User}}", rows, {}) == "root"
    assert render("{{.Config.Labels.a}}", rows, {}) == "1"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (None, "<no value>"),
        (3, "3"),
        (["a", "b"], "[a b]"),
        ([], "[]"),
        ({"b": "2", "a": "1"}, "map[a:1 b:2]"),
    ],
)
def test_value_text_like_go(value: object, text: str) -> None:
    assert render("{{.V}}", [{"V": value}], {}) == text


def test_json_dot() -> None:
    row = {"Name": "x", "Labels": {"a": "1"}, "Ports": [80, 443], "Up": True, "Gone": None}
    out = render("{{json .}}", [row], {})
    assert json.loads(out) == row
    assert "\n" not in out and ": " not in out and ", " not in out  # compact, like Go's encoder


def test_json_field() -> None:
    rows = [{"Labels": {"a": "<b>&"}, "Names": ["x"]}]
    assert render("{{json .Labels}}", rows, {}) == '{"a":"<b>&"}'  # no HTML escaping (docker)
    assert render("{{json .Names}}", rows, {}) == '["x"]'
    assert render("{{json .Missing}}", [{"Missing": None}], {}) == "null"


def test_json_keeps_non_ascii() -> None:
    assert render("{{json .L}}", [{"L": "café"}], {}) == '"café"'


def test_upper_lower() -> None:
    rows = [{"Name": "MiXed"}]
    assert render("{{upper .Name}}", rows, {}) == "MIXED"
    assert render("{{lower .Name}}", rows, {}) == "mixed"


def test_join() -> None:
    rows = [{"Names": ["a", "b", "c"]}]
    assert render('{{join .Names ","}}', rows, {}) == "a,b,c"
    assert render('{{join .Names ", "}}', rows, {}) == "a, b, c"
    assert render('{{join .Names ""}}', rows, {}) == "abc"
    assert render('{{join .Empty ","}}', [{"Empty": []}], {}) == ""


def test_trim_markers_accepted() -> None:
    assert render("{{- .ID -}}", ROWS[:1], {}) == "abcdef012345"


@pytest.mark.parametrize(
    "template",
    [
        "{{.Nope}}",
        "{{.ID.Deeper}}",
        "{{.Config.Missing}}",
        "{{ID}}",
        "{{}}",
        "{{frobnicate .ID}}",
        "{{json .Nope}}",
        "{{upper .Nope}}",
    ],
)
def test_bad_templates(template: str) -> None:
    rows = [{"ID": "x", "Config": {"User": "u"}}]
    with pytest.raises(InvalidArgument, match="template"):
        render(template, rows, {})


def test_unknown_field_error_names_it() -> None:
    with pytest.raises(InvalidArgument, match=r"\.Nope"):
        render("{{.Nope}}", ROWS, HEADER)


def test_backslash_t_and_n_escapes() -> None:
    assert render(r"{{.Repository}}\t{{.Tag}}", ROWS[:1], {}) == "busybox\tlatest"
    assert render(r"{{.Repository}}\n{{.Tag}}", ROWS[:1], {}) == "busybox\nlatest"


# --- render: tables -----------------------------------------------------------------------------------


def test_table_header_and_alignment() -> None:
    out = render(r"table {{.Repository}}\t{{.Tag}}\t{{.Size}}", ROWS, HEADER)
    w0 = len("ghcr.io/org/application") + 3
    w1 = max(len("latest") + 3, 10)  # tabwriter minwidth 10, as docker
    assert out.splitlines() == [
        "REPOSITORY".ljust(w0) + "TAG".ljust(w1) + "SIZE",
        "busybox".ljust(w0) + "latest".ljust(w1) + "4.26MB",
        "ghcr.io/org/application".ljust(w0) + "1".ljust(w1) + "120MB",
    ]


def test_table_last_column_not_padded() -> None:
    out = render(r"table {{.ID}}\t{{.Repository}}", ROWS, HEADER)
    for line in out.splitlines():
        assert not line.endswith(" ")
    assert out.splitlines()[0] == "IMAGE ID".ljust(len("abcdef012345") + 3) + "REPOSITORY"


def test_table_header_wider_than_cells() -> None:
    rows = [{"ID": "1", "Repository": "r"}]
    out = render(r"table {{.Repository}}\t{{.ID}}", rows, HEADER)
    assert out.splitlines() == ["REPOSITORY   IMAGE ID", "r" + " " * 12 + "1"]


def test_table_single_column() -> None:
    assert render("table {{.ID}}", ROWS, HEADER).splitlines() == ["IMAGE ID", "abcdef012345", "0123456789ab"]


def test_table_without_rows_prints_header() -> None:
    assert render(r"table {{.Repository}}\t{{.Tag}}", [], HEADER) == "REPOSITORY   TAG"


def test_table_alone_uses_every_header_column() -> None:
    header = {"Repository": "REPOSITORY", "ID": "IMAGE ID"}
    rows = [{"Repository": "a-long-name", "ID": "x"}]
    assert render("table", rows, header).splitlines() == [
        "REPOSITORY".ljust(len("a-long-name") + 3) + "IMAGE ID",
        "a-long-name   x",
    ]


def test_table_header_of_unknown_column_is_upper_name() -> None:
    rows = [{"Digest": "sha256:x"}]
    assert render("table {{.Digest}}", rows, {}).splitlines() == ["DIGEST", "sha256:x"]


def test_table_header_of_function_column() -> None:
    rows = [{"Labels": {"a": "1"}, "Name": "n"}]
    header = {"Labels": "LABELS", "Name": "NAME"}
    assert render(r"table {{json .Labels}}\t{{upper .Name}}", rows, header).splitlines()[0] == (
        "LABELS".ljust(len('{"a":"1"}') + 3) + "NAME"
    )


def test_table_header_of_join_column() -> None:
    rows = [{"ID": "abcdef012345", "Names": ["a", "b"]}]
    header = {"ID": "CONTAINER ID", "Names": "NAMES"}
    out = render(r'table {{.ID}}\t{{join .Names ","}}', rows, header)
    assert out.splitlines()[0] == "CONTAINER ID   NAMES"


def test_render_table_minimum_column_width_like_docker() -> None:
    rows = [{"Tag": "latest", "ID": "abcdef012345"}]
    out = render(r"table {{.Tag}}\t{{.ID}}", rows, HEADER)
    assert out.splitlines() == ["TAG       IMAGE ID", "latest    abcdef012345"]


def test_non_table_output_is_not_aligned() -> None:
    assert render(r"{{.Repository}}\t{{.Tag}}", ROWS, HEADER).splitlines()[0] == "busybox\tlatest"


def test_common_render_delegates() -> None:
    assert common.render("{{.ID}}", ROWS[:1], HEADER) == "abcdef012345"


# --- human_size (docker: units.HumanSizeWithPrecision(size, 3)) ---------------------------------------


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (1, "1B"),
        (999, "999B"),
        (1000, "1kB"),
        (1024, "1.02kB"),
        (1500, "1.5kB"),
        (4_260_000, "4.26MB"),
        (4_264_999, "4.26MB"),
        (120_000_000, "120MB"),
        (1.5e9, "1.5GB"),
        (2e12, "2TB"),
        (3e15, "3PB"),
        (123_456_789, "123MB"),
    ],
)
def test_human_size(size: float, text: str) -> None:
    assert common.human_size(size) == text


# --- human_duration / human_ago (docker/go-units duration.go HumanDuration) ---------------------------

MINUTE, HOUR, DAY = 60, 3600, 86400


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1, "1 second"),
        (1.9, "1 second"),
        (2, "2 seconds"),
        (59, "59 seconds"),
        (59.99, "59 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),
        (120, "2 minutes"),
        (59 * MINUTE, "59 minutes"),
        (HOUR - 1, "59 minutes"),
        (HOUR, "About an hour"),
        (89 * MINUTE, "About an hour"),
        (90 * MINUTE, "2 hours"),
        (2 * HOUR, "2 hours"),
        (47 * HOUR, "47 hours"),
        (48 * HOUR, "2 days"),
        (13 * DAY, "13 days"),
        (14 * DAY, "2 weeks"),
        (59 * DAY, "8 weeks"),
        (60 * DAY, "2 months"),
        (729 * DAY, "24 months"),
        (730 * DAY, "2 years"),
        (3 * 365 * DAY + 100 * DAY, "3 years"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert common.human_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0, 0.5, 0.999])
def test_human_duration_under_a_second(seconds: float) -> None:
    assert common.human_duration(seconds) == "Less than a second"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (2.5 * HOUR, "3 hours"),
        (47.5 * HOUR, "2 days"),
        (71.5 * HOUR, "3 days"),
    ],
)
def test_human_duration_hour_rounding(seconds: float, text: str) -> None:
    assert common.human_duration(seconds) == text


def test_human_ago() -> None:
    created = "2024-01-02T03:04:05Z"
    t = common.parse_time(created)
    assert common.human_ago(created, now=t + 0.5) == "Less than a second ago"
    assert common.human_ago(created, now=t + 1) == "1 second ago"
    assert common.human_ago(created, now=t + 5) == "5 seconds ago"
    assert common.human_ago(created, now=t + HOUR) == "About an hour ago"
    assert common.human_ago(created, now=t + 3 * DAY) == "3 days ago"
    assert common.human_ago(created, now=t - 10) == "Less than a second ago"  # clock skew


# --- parse_time -------------------------------------------------------------------------------------------


def _epoch(*args: int) -> float:
    return calendar.timegm(datetime.datetime(*args, tzinfo=datetime.UTC).timetuple())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T03:04:05Z", _epoch(2024, 1, 2, 3, 4, 5)),
        ("1970-01-01T00:00:00Z", 0.0),
        ("2024-01-02T03:04:05.25Z", _epoch(2024, 1, 2, 3, 4, 5) + 0.25),
        ("2024-01-02T03:04:05.123456789Z", _epoch(2024, 1, 2, 3, 4, 5) + 0.123456789),
        ("2024-01-02T05:04:05+02:00", _epoch(2024, 1, 2, 3, 4, 5)),
        ("2024-01-02T05:04:05.5+02:00", _epoch(2024, 1, 2, 3, 4, 5) + 0.5),
        ("2024-01-01T21:34:05-05:30", _epoch(2024, 1, 2, 3, 4, 5)),
        ("2024-01-02T03:04:05+00:00", _epoch(2024, 1, 2, 3, 4, 5)),
        ("  2024-01-02T03:04:05Z\n", _epoch(2024, 1, 2, 3, 4, 5)),
        ("", 0.0),
    ],
)
def test_parse_time(text: str, expected: float) -> None:
    assert common.parse_time(text) == pytest.approx(expected, abs=1e-6)


def test_parse_time_matches_datetime() -> None:
    text = "2023-07-15T12:34:56.789+05:45"
    expected = datetime.datetime.fromisoformat(text).timestamp()
    assert common.parse_time(text) == pytest.approx(expected, abs=1e-6)


# --- table ------------------------------------------------------------------------------------------------


def test_table() -> None:
    out = common.table([["abcdef012345", "busybox"], ["0123", "ghcr.io/org/application"]], ["ID", "NAME"])
    assert out.splitlines() == [
        "ID" + " " * 13 + "NAME",
        "abcdef012345   busybox",
        "0123" + " " * 11 + "ghcr.io/org/application",
    ]


def test_table_header_only() -> None:
    assert common.table([], ["CONTAINER ID", "IMAGE"]) == "CONTAINER ID   IMAGE"


def test_table_empty_last_cell_not_padded() -> None:
    out = common.table([["a-long-value", ""]], ["NAME", "PORTS"])
    assert out.splitlines()[1] == "a-long-value"


def test_table_minimum_column_width_like_docker() -> None:
    assert common.table([["latest", "x"]], ["TAG", "ID"]).splitlines() == ["TAG       ID", "latest    x"]
