"""Pure parts of the container engine: log records, stream frames, ps status lines, names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ketch.clock import parse_rfc3339
from ketch.engine import logs, stream
from ketch.engine.containers import ContainerRecord, State, check_name
from ketch.engine.describe import command_line, status_line
from ketch.errors import InvalidArgument


def test_log_writer_splits_lines_and_keeps_partials(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    writer = logs.LogWriter(str(path))
    writer.write("stdout", b"one\ntw")
    writer.write("stdout", b"o\n")
    writer.write("stderr", b"err without newline")
    writer.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["stream"], r["log"]) for r in records] == [
        ("stdout", "one\n"), ("stdout", "two\n"), ("stderr", "err without newline"),
    ]  # fmt: skip
    assert all(r["time"].endswith("Z") and parse_rfc3339(r["time"]) > 0 for r in records)


def test_log_writer_cuts_long_lines(tmp_path: Path) -> None:
    path = tmp_path / "log"
    writer = logs.LogWriter(str(path))
    writer.write("stdout", b"x" * (logs.MAX_LINE * 2 + 5))
    writer.close()
    sizes = [len(json.loads(line)["log"]) for line in path.read_text().splitlines()]
    assert sizes == [logs.MAX_LINE, logs.MAX_LINE, 5]


def _write_log(path: Path, times: list[str]) -> None:
    path.write_text("".join(json.dumps({"log": f"{i}\n", "stream": "stdout", "time": t}) + "\n"
                            for i, t in enumerate(times)))  # fmt: skip


def test_read_tail_since_until_and_damaged_lines(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _write_log(path, ["2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z", "2024-01-01T00:02:00Z"])
    with open(path, "a") as f:
        f.write('{"log": "cut by a cra')  # a crash mid-write leaves half a line: skipped
    assert [e.log for e in logs.read(str(path))] == ["0\n", "1\n", "2\n"]
    assert [e.log for e in logs.read(str(path), tail=2)] == ["1\n", "2\n"]
    assert logs.read(str(path), tail=0) == []
    since = parse_rfc3339("2024-01-01T00:01:00Z")
    assert [e.log for e in logs.read(str(path), since=since)] == ["1\n", "2\n"]
    assert [e.log for e in logs.read(str(path), until=since)] == ["0\n", "1\n"]
    assert logs.read(str(tmp_path / "missing")) == []


def test_stream_frames_survive_any_split() -> None:
    data = (
        stream.frame(stream.STDOUT, b"hello") + stream.frame(stream.EXIT, b"3") + stream.frame(stream.STDIN)
    )
    for cut in range(len(data) + 1):
        reader = stream.Reader()
        frames = reader.feed(data[:cut]) + reader.feed(data[cut:])
        assert frames == [(stream.STDOUT, b"hello"), (stream.EXIT, b"3"), (stream.STDIN, b"")]


NOW = parse_rfc3339("2024-01-01T01:00:00Z")


@pytest.mark.parametrize(
    ("state", "line"),
    [
        (State(status="created"), "Created"),
        (State(status="running", started_at="2024-01-01T00:59:55Z"), "Up 5 seconds"),
        (State(status="running", started_at="2024-01-01T00:00:00Z"), "Up About an hour"),
        (State(status="paused", started_at="2024-01-01T00:59:00Z"), "Up About a minute (Paused)"),
        (State(status="running", started_at="2024-01-01T00:59:58Z", health={"Status": "starting"}),
         "Up 2 seconds (health: starting)"),
        (State(status="running", started_at="2024-01-01T00:50:00Z", health={"Status": "unhealthy"}),
         "Up 10 minutes (unhealthy)"),
        (State(status="exited", exit_code=137, finished_at="2024-01-01T00:57:00Z"), "Exited (137) 3 minutes ago"),
        (State(status="restarting", exit_code=2, finished_at="2024-01-01T00:59:59Z"), "Restarting (2) 1 second ago"),
    ],
)  # fmt: skip
def test_status_lines_match_docker(state: State, line: str) -> None:
    assert status_line(state, NOW) == line


def test_command_line_is_quoted_and_cut() -> None:
    record = ContainerRecord(id="a" * 64, name="n", created="", image="", image_ref="", config={},
                             host_config={}, path="sh", args=("-c", "sleep 1000; echo done"))  # fmt: skip
    assert command_line(record) == '"sh -c sleep 1000; e…"'
    assert command_line(record, 0) == '"sh -c sleep 1000; echo done"'


@pytest.mark.parametrize("name", ["web", "/web", "a_b.c-d", "x1"])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name.removeprefix("/")


@pytest.mark.parametrize("name", ["", "a", "-web", "we b", "wé", "a/b", "_x"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidArgument, match="Invalid container name"):
        check_name(name)


def test_run_options_survive_the_container_record() -> None:
    """create stores the options as JSON; every start rebuilds them exactly."""
    from ketch import jsonio
    from ketch.engine.create import options_from_json, options_to_json
    from ketch.engine.options import Device, Health, Mount, RunOptions, Ulimit

    options = RunOptions(
        image="busybox", command=("sh", "-c", "true"), name="n", env=("A=1",), labels={"k": "v"},
        entrypoint=("",), mounts=(Mount("bind", "/h", "/c", True, ("rprivate",)), Mount("tmpfs", "", "/t")),
        ulimits=(Ulimit("nofile", 10, 20),), devices=(Device("/dev/fuse", "/dev/fuse"),),
        health=Health(("CMD-SHELL", "true"), 1.0, 2.0, 3, 0.5), memory=1 << 20, stop_timeout=3,
    )  # fmt: skip
    assert options_from_json(jsonio.loads(jsonio.dumps(options_to_json(options)))) == options
    assert options_from_json(options_to_json(RunOptions(image="x"))) == RunOptions(image="x")
