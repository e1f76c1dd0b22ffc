"""--log-driver/--log-opt: parsing and Docker's checks, the json-file line Docker writes, attrs,
`logs --details`, rotation (max-size, max-file, compress) and reading across rotated files."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from ketch.clock import parse_rfc3339
from ketch.engine import logs
from ketch.engine import options as o
from ketch.engine.containers import ContainerRecord
from ketch.engine.create import options_from_json, options_to_json
from ketch.errors import InvalidArgument, KetchError, Unsupported

# --- flags and engine defaults ---------------------------------------------------------------------


def test_log_opts_parse_as_the_docker_cli_does() -> None:
    assert o.parse_log_opts(["max-size=10m", "labels=a,b", "env", "max-size=1k", "tag=x=y"]) == {
        "max-size": "1k", "labels": "a,b", "env": "", "tag": "x=y",
    }  # fmt: skip


def test_log_config_defaults_and_engine_json() -> None:
    assert o.log_config("", {}, {}) == {"Type": "json-file", "Config": {}}
    engine = {"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"}}
    merged = o.log_config("", {"max-size": "1m"}, engine)  # the container's own option wins
    assert merged == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "3"}}
    assert o.log_config("json-file", {}, engine)["Config"] == {"max-size": "10m", "max-file": "3"}
    assert o.log_config("none", {}, engine) == {"Type": "none", "Config": {}}  # another driver: no merge
    assert o.log_config("", {}, {"log-driver": "none"}) == {"Type": "none", "Config": {}}
    # dockerd checks nothing for none, whatever the options (the CLI's check is on --log-driver only)
    assert o.log_config("", {"x": "1"}, {"log-driver": "none"})["Config"] == {"x": "1"}
    with pytest.raises(InvalidArgument, match="must be a string"):
        o.log_config("", {}, {"log-opts": {"max-file": 3}})


def test_none_refuses_options_on_the_command_line() -> None:
    options = o.RunOptions(image="busybox", log_driver="none", log_opts={"max-size": "1m"})
    with pytest.raises(InvalidArgument, match=r"^invalid logging opts for driver none$"):
        o.check(options)
    o.check(o.RunOptions(image="busybox", log_driver="none"))


@pytest.mark.parametrize(
    ("driver", "opts", "message"),
    [
        ("json-file", {"x": "1"}, "unknown log opt 'x' for json-file log driver"),
        ("json-file", {"max-size": "1m", "labelz": "a"}, "unknown log opt 'labelz' for json-file log driver"),
        ("local", {}, "logger: no log driver named 'local' is registered"),
        ("syslog", {"max-size": "1m"}, "logger: no log driver named 'syslog' is registered"),
        ("json-file", {"max-size": "0"}, "max-size must be a positive number"),
        ("json-file", {"max-size": "-1"}, "invalid size: '-1'"),
        ("json-file", {"max-size": "10x"}, "invalid suffix: 'x'"),
        ("json-file", {"max-size": ""}, "invalid size: ''"),
        ("json-file", {"max-file": "two"}, 'strconv.Atoi: parsing "two": invalid syntax'),
        ("json-file", {"max-file": "0"}, "max-file cannot be less than 1"),
        ("json-file", {"compress": "yes"}, 'strconv.ParseBool: parsing "yes": invalid syntax'),
        ("json-file", {"compress": "true", "max-size": "1m"},
         "compress cannot be true when max-file is less than 2 or max-size is not set"),
        ("json-file", {"compress": "true", "max-file": "3"},
         "compress cannot be true when max-file is less than 2 or max-size is not set"),
        ("json-file", {"mode": "fast"}, "logger: logging mode not supported: fast"),
        ("json-file", {"max-buffer-size": "1m"},
         "logger: max-buffer-size option is only supported with 'mode=non-blocking'"),
        ("json-file", {"labels-regex": "("}, "error parsing regexp: "),
        ("json-file", {"tag": "{{.Nope}}"}, 'template: log-tag:1: executing "log-tag" at <.Nope>: can\'t evaluate field Nope'),
        ("json-file", {"tag": "{{.Name"}, "template: log-tag:1: unclosed action"),
    ],
)  # fmt: skip
def test_bad_log_configs_carry_dockers_messages(driver: str, opts: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        o.log_config(driver, opts, {})
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_non_blocking_mode_is_refused_not_ignored() -> None:
    with pytest.raises(Unsupported, match="non-blocking"):
        o.log_config("", {"mode": "non-blocking", "max-buffer-size": "4m"}, {})
    assert o.log_config("", {"mode": "blocking"}, {})["Config"] == {"mode": "blocking"}


def test_json_file_settings_use_powers_of_1000() -> None:
    def size(text: str) -> int:
        return o.json_file_settings({"max-size": text}).max_size

    assert (size("10"), size("10k"), size("10K"), size("1.5m"), size("1g"), size("2kb")) == (
        10, 10_000, 10_000, 1_500_000, 1_000_000_000, 2_000,
    )  # fmt: skip
    assert size("10KiB") == 10_000  # go-units' FromHumanSize: the letter decides, "iB" or not
    assert o.json_file_settings({}) == o.JsonFileSettings(-1, 1, False)
    assert o.json_file_settings({"max-file": "5"}).max_file == 5  # without max-size: never used, as in Docker
    settings = o.json_file_settings({"max-size": "1m", "max-file": "+3", "compress": "1"})
    assert settings == o.JsonFileSettings(1_000_000, 3, True)


def test_options_round_trip_through_the_record() -> None:
    options = o.RunOptions(image="busybox", log_driver="json-file", log_opts={"max-size": "1k"})
    doc = json.loads(json.dumps(options_to_json(options)))
    assert options_from_json(doc) == options
    assert options_from_json({k: v for k, v in doc.items() if not k.startswith("log_")}).log_opts == {}


# --- the line Docker writes ---------------------------------------------------------------------------

_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z$")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_line_format_field_order_and_attrs(tmp_path: Path) -> None:
    plain = logs.LogWriter(str(tmp_path / "plain"))
    plain.write("stdout", b"hello\n")
    plain.close()
    (line,) = _lines(tmp_path / "plain")
    head, _, when = line.rpartition(',"time":"')
    assert head == '{"log":"hello\\n","stream":"stdout"'  # no "attrs" at all when there are none
    assert _TIME.match(when.removesuffix('"}'))
    labelled = logs.LogWriter(str(tmp_path / "attrs"), attrs={"zone": "b", "app": "web"})
    labelled.write("stderr", b"oops\n")
    labelled.close()
    (line,) = _lines(tmp_path / "attrs")
    assert line.startswith('{"log":"oops\\n","stream":"stderr","attrs":{"app":"web","zone":"b"},"time":"')
    assert list(json.loads(line)) == ["log", "stream", "attrs", "time"]


def test_strings_are_escaped_as_docker_escapes_them() -> None:
    assert logs.log_string(b'a "q" \\ <b>&\n') == '"a \\"q\\" \\\\ \\u003cb\\u003e\\u0026\\n"'
    assert logs.log_string(b"tab\there\r\x01\x7f") == '"tab\\u0009here\\r\\u0001\x7f"'  # jsonlogbytes.go
    assert logs.log_string(b"bad \xe2\x82 \xff!") == '"bad \\ufffd\\ufffd \\ufffd!"'  # one per byte, as Go
    assert logs.log_string("café \u2028".encode()) == '"café \\u2028"'
    assert logs.attrs_json({"k": "a\tb<", "a": "é"}) == '{"a":"é","k":"a\\tb\\u003c"}'  # encoding/json
    for text in (b"plain", b"x\ty", b"<&>", "ünï".encode(), b'"\\'):
        assert json.loads(logs.log_string(text)) == text.decode()


def test_times_are_rfc3339nano_trimmed_and_fixed_for_logs_t() -> None:
    assert logs.log_time(1_700_000_000_123_400_000) == "2023-11-14T22:13:20.1234Z"
    assert logs.log_time(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert logs.log_time(1_700_000_000_000_000_001) == "2023-11-14T22:13:20.000000001Z"
    assert logs.fixed_time("2023-11-14T22:13:20.1234Z") == "2023-11-14T22:13:20.123400000Z"
    assert logs.fixed_time("2023-11-14T22:13:20Z") == "2023-11-14T22:13:20.000000000Z"
    assert logs.fixed_time("2023-11-14T22:13:20.123456789Z") == "2023-11-14T22:13:20.123456789Z"


def test_partial_and_long_lines_keep_their_shape(tmp_path: Path) -> None:
    path = tmp_path / "log"
    writer = logs.LogWriter(str(path), attrs={"a": "1"})
    writer.write("stdout", b"one\ntw")
    writer.write("stdout", b"o\n" + b"x" * (logs.MAX_LINE + 3))
    writer.close()
    assert [json.loads(line)["log"] for line in _lines(path)] == [
        "one\n",
        "two\n",
        "x" * logs.MAX_LINE,
        "xxx",
    ]


# --- attrs and --details -------------------------------------------------------------------------------


def test_extra_attributes_select_labels_and_env_as_docker_does() -> None:
    labels = {"app": "web", "tier": "front", "com.example.team": "a"}
    env = {"REGION": "eu", "app": "from-env", "PATH": "/bin"}
    assert logs.extra_attributes({}, labels, env) == {}
    assert logs.extra_attributes({"labels": "app,missing"}, labels, env) == {"app": "web"}
    assert logs.extra_attributes({"labels-regex": r"^com\."}, labels, env) == {"com.example.team": "a"}
    assert logs.extra_attributes({"labels-regex": "i"}, labels, env) == {"tier": "front"}  # a search
    assert logs.extra_attributes({"env": "REGION,NOPE"}, labels, env) == {"REGION": "eu"}
    assert logs.extra_attributes({"env-regex": "^RE"}, labels, env) == {"REGION": "eu"}
    assert logs.extra_attributes({"labels": "app", "env": "app"}, labels, env) == {"app": "from-env"}
    assert logs.extra_attributes({"labels": "app", "env": "app"}, labels, {}) == {"app": "web"}
    fields = {"Name": "web1", "ID": "0123456789ab"}
    tagged = logs.extra_attributes({"tag": "{{.Name}}/{{ .ID }}"}, labels, env, fields)
    assert tagged == {"tag": "web1/0123456789ab"}


def test_tag_fields_and_open_writer_from_a_record(tmp_path: Path) -> None:
    record = ContainerRecord(
        id="ab" * 32, name="web1", created="", image="sha256:" + "cd" * 32, image_ref="busybox",
        config={"Image": "busybox", "Labels": {"app": "web"}, "Env": ["A=1", "PATH=/bin"]},
        host_config={"LogConfig": {"Type": "json-file", "Config": {"labels": "app", "env": "A",
                                                                   "tag": "{{.ImageID}} {{.Command}}"}}},
        path="sh", args=("-c", "true"),
    )  # fmt: skip
    fields = logs.tag_fields(record, "/x")
    assert (fields["ID"], fields["ImageID"], fields["ImageName"]) == ("ab" * 6, "cd" * 6, "busybox")
    path = tmp_path / "log"
    writer = logs.open_writer(record, str(path))
    writer.write("stdout", b"hi\n")
    writer.close()
    attrs = json.loads(path.read_text())["attrs"]
    assert attrs == {"app": "web", "A": "1", "tag": f"{'cd' * 6} sh -c true"}
    none = ContainerRecord(
        **{**record.to_dict(), "host_config": {"LogConfig": {"Type": "none", "Config": {}}}}
    )
    assert isinstance(logs.open_writer(none, str(tmp_path / "none")), logs.NullWriter)
    assert not (tmp_path / "none").exists()
    old = ContainerRecord(**{**record.to_dict(), "host_config": {}})  # created before LogConfig existed
    assert logs.log_config_of(old) == ("json-file", {})


def test_details_are_sorted_and_query_escaped() -> None:
    assert logs.details({}) == ""  # `logs --details` still puts a space before the line
    assert logs.details({"zone": "b", "app": "web"}) == "app=web,zone=b"
    assert logs.details({"k y": "a b,c=d/é~"}) == "k+y=a+b%2Cc%3Dd%2F%C3%A9~"


# --- rotation and reading across files ---------------------------------------------------------------


def _write(writer: logs.LogWriter, first: int, count: int) -> None:
    for i in range(first, first + count):
        writer.write("stdout", f"line {i}\n".encode())


def test_rotation_names_files_as_docker_and_reads_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    writer = logs.LogWriter(str(path), max_size=300, max_file=3)
    _write(writer, 0, 40)
    writer.close()
    assert sorted(os.listdir(tmp_path)) == ["c-json.log", "c-json.log.1", "c-json.log.2"]
    for name in ("c-json.log.1", "c-json.log.2"):
        size = (tmp_path / name).stat().st_size
        assert 300 <= size < 300 + 120  # rotated once it reached max-size: at most one line over
    entries = logs.read(str(path))
    numbers = [int(e.log.split()[1]) for e in entries]
    assert numbers == list(range(numbers[0], 40)) and numbers[0] > 0  # in order, the oldest gone
    assert [e.log for e in logs.read(str(path), tail=2)] == ["line 38\n", "line 39\n"]
    assert len(logs.read(str(path), tail=len(numbers) - 1)) == len(numbers) - 1  # tail spans files


def test_max_file_one_keeps_a_single_file(tmp_path: Path) -> None:
    path = tmp_path / "log"
    writer = logs.LogWriter(str(path), max_size=100, max_file=1)
    _write(writer, 0, 30)
    writer.close()
    assert os.listdir(tmp_path) == ["log"]
    assert logs.read(str(path))[-1].log == "line 29\n" and len(logs.read(str(path))) < 30


def test_compress_gzips_rotated_files_with_dockers_header(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    writer = logs.LogWriter(str(path), max_size=300, max_file=4, compress=True)
    _write(writer, 0, 60)
    writer.close()  # waits for the compressing child
    assert sorted(os.listdir(tmp_path)) == [
        "c-json.log",
        "c-json.log.1.gz",
        "c-json.log.2.gz",
        "c-json.log.3.gz",
    ]
    data = (tmp_path / "c-json.log.1.gz").read_bytes()
    assert data[:4] == b"\x1f\x8b\x08\x04"  # gzip, deflate, FEXTRA
    extra = json.loads(data[12 : 12 + int.from_bytes(data[10:12], "little")])
    text = gzip.decompress(data).decode()
    assert extra == {"lastTime": json.loads(text.splitlines()[-1])["time"]}
    numbers = [int(e.log.split()[1]) for e in logs.read(str(path))]
    assert numbers == list(range(numbers[0], 60))
    # --since skips a .gz whose last entry is older, by its header alone
    (tmp_path / "c-json.log.3.gz").write_bytes(
        data[: 12 + len(json.dumps(extra, separators=(",", ":")))] + b"junk"
    )
    since = parse_rfc3339(extra["lastTime"]) + 1e-6
    assert [e for e in logs.read(str(path), since=since) if parse_rfc3339(e.time) < since] == []


def test_a_rotation_between_opens_is_not_read_twice(tmp_path: Path) -> None:
    path = tmp_path / "log"
    writer = logs.LogWriter(str(path), max_size=200, max_file=3)
    _write(writer, 0, 12)
    os.link(path, f"{path}.3")  # as if the current file had been rotated while the reader opened files
    reader = logs.LogReader(str(path))
    logged = [e.log for e in reader.entries()]
    reader.close()
    writer.close()
    assert len(logged) == len(set(logged))


def test_follow_goes_on_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "log"
    writer = logs.LogWriter(str(path), max_size=250, max_file=2)
    _write(writer, 0, 3)
    reader = logs.LogReader(str(path))
    assert [e.log for e in reader.entries()] == ["line 0\n", "line 1\n", "line 2\n"]
    batches = iter([(3, 4), (7, 9), (16, 1), (17, 25)])  # some batches rotate twice between two reads

    def running() -> bool:
        batch = next(batches, None)
        if batch is not None:
            _write(writer, *batch)
        return batch is not None

    followed = [int(e.log.split()[1]) for e in reader.follow(running, poll=0)]
    reader.close()
    writer.close()
    assert followed[:13] == list(range(3, 16))
    assert followed == sorted(set(followed)) and followed[-1] == 41  # in order, no line twice


def test_follow_reads_what_came_in_just_before_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "log"
    writer = logs.LogWriter(str(path), max_size=200, max_file=3)
    _write(writer, 0, 1)
    reader = logs.LogReader(str(path))
    assert len(reader.entries()) == 1
    check = reader._newer
    raced = []

    def racing() -> list[Any]:
        if not raced:  # between the reader's last read and its look at the path:
            raced.append(True)
            _write(writer, 1, 8)  # lines land in the current file, which then rotates
        return check()

    reader._newer = racing  # type: ignore[method-assign]
    followed = [int(e.log.split()[1]) for e in reader.follow(lambda: False, poll=0)]
    reader.close()
    writer.close()
    assert (tmp_path / "log.1").exists() and followed == list(range(1, 9))


def test_follow_waits_for_a_missing_file_and_stops_with_the_container(tmp_path: Path) -> None:
    path = tmp_path / "log"
    reader = logs.LogReader(str(path))
    assert reader.entries() == []
    calls = iter([True, False])

    def running() -> bool:
        up = next(calls, False)
        if up:
            writer = logs.LogWriter(str(path))
            writer.write("stderr", b"late\n")
            writer.close()
        return up

    assert [(e.stream, e.log) for e in reader.follow(running, poll=0)] == [("stderr", "late\n")]
    reader.close()


def test_errors_are_ketch_errors() -> None:
    with pytest.raises(KetchError):
        o.log_config("gelf", {}, {})
