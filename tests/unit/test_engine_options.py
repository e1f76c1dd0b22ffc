"""Unit tests for ketch.engine.options: the run/create flag parsers and whole-options checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ketch.engine.options import (
    Health,
    Mount,
    RunOptions,
    Ulimit,
    check,
    clean_path,
    go_duration,
    merge_tmpfs_options,
    parse_cpus,
    parse_device,
    parse_duration,
    parse_env,
    parse_env_file,
    parse_env_text,
    parse_labels,
    parse_mount,
    parse_restart,
    parse_security_opts,
    parse_size,
    parse_tmpfs,
    parse_ulimit,
    parse_volume,
    quote,
    resolve_files,
)
from ketch.errors import InvalidArgument, Unsupported
from ketch.record import replace

MEM = "-m, --memory"

# --- sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100", 100),
        ("0", 0),
        ("512k", 512 * 1024),
        ("10m", 10 << 20),
        ("1g", 1 << 30),
        ("1.5g", int(1.5 * (1 << 30))),
        ("10M", 10 << 20),
        ("10mb", 10 << 20),
        ("10MiB", 10 << 20),
        ("10 m", 10 << 20),
        ("2b", 2),
        ("2t", 2 << 40),
        ("1p", 1 << 50),
        (".5k", 512),
    ],
)
def test_parse_size_valid(text: str, expected: int) -> None:
    assert parse_size(text, MEM) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("10xb", "invalid suffix: 'xb'"),
        ("10XB", "invalid suffix: 'xb'"),
        ("10mbb", "invalid suffix: 'mbb'"),
        ("10bytes", "invalid suffix: 'bytes'"),
        ("10bb", "invalid suffix: 'bb'"),
        ("abc", "invalid size: 'abc'"),
        ("", "invalid size: ''"),
        ("-1", "invalid size: '-1'"),
        ("1.2.3m", 'strconv.ParseFloat: parsing "1.2.3": invalid syntax'),
    ],
)
def test_parse_size_invalid_uses_dockers_words(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_size(text, MEM)
    assert str(info.value) == f"invalid argument {json.dumps(text)} for {json.dumps(MEM)} flag: {reason}"


def test_parse_size_minus_one_only_where_unlimited_is_allowed() -> None:
    assert parse_size("-1", "--memory-swap", unlimited=True) == -1
    with pytest.raises(InvalidArgument):
        parse_size("-2", "--memory-swap", unlimited=True)


# --- cpus and durations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "nano"),
    [("1.5", 1_500_000_000), ("2", 2_000_000_000), ("0.01", 10_000_000), ("3/2", 1_500_000_000), ("0", 0)],
)
def test_parse_cpus(text: str, nano: int) -> None:
    assert parse_cpus(text) == nano


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("abc", "failed to parse abc as a rational number"),
        (" 1", "failed to parse  1 as a rational number"),
        ("1_0", "failed to parse 1_0 as a rational number"),
        ("1/0", "failed to parse 1/0 as a rational number"),
        ("0.0000000001", "value is too precise"),
    ],
)
def test_parse_cpus_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_cpus(text)
    assert str(info.value) == f'invalid argument {json.dumps(text)} for "--cpus" flag: {reason}'


def test_parse_cpus_negative_is_out_of_range() -> None:
    with pytest.raises(InvalidArgument, match="Range of CPUs"):
        parse_cpus("-1")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("0", 0.0),
        ("-1s", -1.0),
        ("+2s", 2.0),
        ("2us", 2e-6),
        ("3µs", 3e-6),
        ("10ns", 1e-8),
        ("1h2m3s4ms", 3723.004),
        (".5s", 0.5),
    ],
)
def test_go_duration(text: str, seconds: float) -> None:
    assert go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1", 'time: missing unit in duration "1"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("", 'time: invalid duration ""'),
        ("abc", 'time: invalid duration "abc"'),
        (".s", 'time: invalid duration ".s"'),
        ("-", 'time: invalid duration "-"'),
    ],
)
def test_parse_duration_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_duration(text, "--health-interval")
    assert str(info.value).endswith(f'for "--health-interval" flag: {reason}')


# --- -v ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/host:/ctr", Mount("bind", "/host", "/ctr", create_source=True)),
        ("/host:/ctr:ro", Mount("bind", "/host", "/ctr", readonly=True, create_source=True)),
        ("/host:/ctr:rw", Mount("bind", "/host", "/ctr", create_source=True)),
        ("/host:/ctr:ro,z", Mount("bind", "/host", "/ctr", readonly=True, create_source=True)),
        ("/host:/ctr:Z", Mount("bind", "/host", "/ctr", create_source=True)),
        ("/host:/ctr:rslave", Mount("bind", "/host", "/ctr", options=("rslave",), create_source=True)),
        ("/host/../x/:/ctr/./a/", Mount("bind", "/x", "/ctr/a", create_source=True)),
        ("data:/var/lib/data", Mount("volume", "data", "/var/lib/data")),
        ("data:/d:ro,nocopy", Mount("volume", "data", "/d", readonly=True, options=("nocopy",))),
        ("/anon", Mount("volume", "", "/anon")),
        ("/h:/c:cached", Mount("bind", "/h", "/c", create_source=True)),
    ],
)
def test_parse_volume_valid(text: str, expected: Mount) -> None:
    assert parse_volume(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/a:/b:/c:ro", "invalid volume specification: '/a:/b:/c:ro'"),
        (":/ctr", "invalid volume specification: ':/ctr'"),
        ("/ctr:ro", "invalid volume specification: '/ctr:ro'"),
        ("/h:/c:xyz", "invalid mode: xyz"),
        ("/h:/c:ro,rw", "invalid mode: ro,rw"),
        ("/h:/c:z,Z", "invalid mode: z,Z"),
        (
            "/h:rel",
            "invalid volume specification: '/h:rel': invalid mount config for type \"bind\": "
            "invalid mount path: 'rel' mount path must be absolute",
        ),
        ("data", "invalid mount path: 'data' mount path must be absolute"),
        ("/h:/", "destination can't be '/'"),
        ("vol:/c:rshared", 'invalid mount config for type "volume": field BindOptions must not be specified'),
        ("foo/bar:/c", "includes invalid characters for a local volume name"),
        ("a:/c", "includes invalid characters for a local volume name"),
    ],
)
def test_parse_volume_invalid(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_volume(text)
    assert message in str(info.value)


# --- --mount ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("type=bind,source=/h,target=/c", Mount("bind", "/h", "/c")),
        ("type=bind,src=/h,dst=/c,readonly", Mount("bind", "/h", "/c", readonly=True)),
        ("type=bind,src=/h,destination=/c,ro=true", Mount("bind", "/h", "/c", readonly=True)),
        ("type=bind,src=/h,target=/c,readonly=false", Mount("bind", "/h", "/c")),
        (
            "type=bind,src=/h,target=/c,bind-propagation=rshared",
            Mount("bind", "/h", "/c", options=("rshared",)),
        ),
        (
            "type=bind,src=/h,target=/c,bind-nonrecursive",
            Mount("bind", "/h", "/c", options=("bind-nonrecursive",)),
        ),
        ("target=/c", Mount("volume", "", "/c")),
        ("type=volume,source=data,target=/c", Mount("volume", "data", "/c")),
        ("type=volume,src=data,target=/c,volume-nocopy", Mount("volume", "data", "/c", options=("nocopy",))),
        ("Type=VOLUME,Target=/c", Mount("volume", "", "/c")),
        ("type=tmpfs,target=/t", Mount("tmpfs", "", "/t")),
        ("type=tmpfs,target=/t,tmpfs-size=64m", Mount("tmpfs", "", "/t", options=("size=64m",))),
        ("type=tmpfs,target=/t,tmpfs-size=1000", Mount("tmpfs", "", "/t", options=("size=1000",))),
        ("type=tmpfs,target=/t,tmpfs-mode=1770", Mount("tmpfs", "", "/t", options=("mode=1770",))),
        ('"type=bind","source=/a,b",target=/c', Mount("bind", "/a,b", "/c")),
        ("type=bind,src=/h,target=/c,consistency=cached", Mount("bind", "/h", "/c")),
    ],
)
def test_parse_mount_valid(text: str, expected: Mount) -> None:
    assert parse_mount(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type=bind,source=/h", "target is required"),
        ("type=bind,target=/c", 'invalid mount config for type "bind": field Source must not be empty'),
        ("type=bind,source=rel,target=/c", "invalid mount path: 'rel' mount path must be absolute"),
        (
            "type=tmpfs,source=/x,target=/t",
            'invalid mount config for type "tmpfs": field Source must not be specified',
        ),
        ("type=foo,target=/t", 'invalid mount config for type "foo": mount type unknown'),
        ("type=bind,src=/h,target=/c,bogus=1", "unexpected key 'bogus' in 'bogus=1'"),
        ("type=bind,src=/h,target=/c,bogus", "invalid field 'bogus' must be a key=value pair"),
        ("type=bind,src=/h,target=/c,readonly=maybe", "invalid value for readonly: maybe"),
        ("type=tmpfs,target=/t,tmpfs-size=10xb", "invalid value for tmpfs-size: 10xb"),
        ("type=tmpfs,target=/t,tmpfs-mode=999", "invalid value for tmpfs-mode: 999"),
        ("type=volume,target=/t,tmpfs-size=1m", "cannot mix 'tmpfs-*' options with mount type 'volume'"),
        ("type=bind,src=/h,target=/c,volume-nocopy", "cannot mix 'volume-*' options with mount type 'bind'"),
        (
            "type=tmpfs,target=/t,bind-propagation=shared",
            "cannot mix 'bind-*' options with mount type 'tmpfs'",
        ),
        ("type=bind,src=/h,target=/c,bind-propagation=weird", "invalid propagation mode: weird"),
        ("type=bind,src=/h,target=c", "invalid mount path: 'c' mount path must be absolute"),
        ("type=volume,src=bad/name,target=/c", "includes invalid characters"),
    ],
)
def test_parse_mount_invalid(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_mount(text)
    assert message in str(info.value)


def test_parse_mount_flag_errors_name_the_flag() -> None:
    with pytest.raises(
        InvalidArgument, match=r'^invalid argument "type=bind" for "--mount" flag: target is required$'
    ):
        parse_mount("type=bind")


def test_parse_mount_refuses_other_volume_drivers() -> None:
    with pytest.raises(Unsupported):
        parse_mount("type=volume,target=/c,volume-driver=nfs")


def test_parse_mount_relative_dot_source_becomes_absolute() -> None:
    m = parse_mount("type=bind,source=./sub,target=/c")
    assert m.source.startswith("/") and m.source.endswith("/sub")


# --- --tmpfs ----------------------------------------------------------------------------------


def test_parse_tmpfs_plain_and_with_options() -> None:
    assert parse_tmpfs("/run") == Mount("tmpfs", "", "/run")
    assert parse_tmpfs("/run:rw,size=64m") == Mount("tmpfs", "", "/run", options=("rw", "size=64m"))
    assert parse_tmpfs("/run:ro,size=1m").readonly
    assert not parse_tmpfs("/run:ro,rw").readonly


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("run", "invalid mount path: 'run' mount path must be absolute"),
        ("/", "destination can't be '/'"),
        ("/run:bogus", 'invalid tmpfs option ["bogus"]'),
        ("/run:foo=1", 'invalid tmpfs option ["foo" "1"]'),
    ],
)
def test_parse_tmpfs_invalid(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_tmpfs(text)
    assert message in str(info.value)


def test_merge_tmpfs_options_later_wins_per_group_and_key() -> None:
    merged = merge_tmpfs_options(
        ["noexec", "nosuid", "nodev", "rprivate", "exec", "size=1m", "size=2m", "shared"]
    )
    assert merged == ["nosuid", "nodev", "exec", "size=2m", "shared"]
    assert merge_tmpfs_options(["defaults", "ro", "rw"]) == ["rw"]


# --- ulimits, devices -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nofile=1024:2048", Ulimit("nofile", 1024, 2048)),
        ("nproc=512", Ulimit("nproc", 512, 512)),
        ("core=-1", Ulimit("core", -1, -1)),
        ("memlock=100:-1", Ulimit("memlock", 100, -1)),
        ("stack=+8", Ulimit("stack", 8, 8)),
    ],
)
def test_parse_ulimit_valid(text: str, expected: Ulimit) -> None:
    assert parse_ulimit(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("nofile", "invalid ulimit argument: nofile"),
        ("bogus=1", "invalid ulimit type: bogus"),
        ("nofile=1:2:3", "too many limit value arguments - 1:2:3, can only have up to two, `soft[:hard]`"),
        ("nofile=abc", 'strconv.ParseInt: parsing "abc": invalid syntax'),
        ("nofile=2048:1024", "ulimit soft limit must be less than or equal to hard limit: 2048 > 1024"),
        ("nofile=-1:1024", "ulimit soft limit must be less than or equal to hard limit: -1 > 1024"),
    ],
)
def test_parse_ulimit_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_ulimit(text)
    assert str(info.value) == f'invalid argument {json.dumps(text)} for "--ulimit" flag: {reason}'


@pytest.mark.parametrize(
    ("text", "host", "container", "mode"),
    [
        ("/dev/fuse", "/dev/fuse", "/dev/fuse", "rwm"),
        ("/dev/sda:/dev/xvda", "/dev/sda", "/dev/xvda", "rwm"),
        ("/dev/sda:/dev/xvda:r", "/dev/sda", "/dev/xvda", "r"),
        ("/dev/sda:rw", "/dev/sda", "/dev/sda", "rw"),
        ("/dev/../dev/null", "/dev/null", "/dev/null", "rwm"),
    ],
)
def test_parse_device_valid(text: str, host: str, container: str, mode: str) -> None:
    dev = parse_device(text)
    assert (dev.host, dev.container, dev.permissions) == (host, container, mode)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("/a:/b:rw:x", "bad format for path: /a:/b:rw:x"),
        (":/b", "bad format for path: :/b"),
        ("/dev/sda:/dev/xvda:rwx", "bad mode specified: rwx"),
        ("/dev/sda:/dev/xvda:rr", "bad mode specified: rr"),
        ("/dev/sda:xvda", "xvda is not an absolute path"),
        ("sda", "sda is not an absolute path"),
    ],
)
def test_parse_device_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_device(text)
    assert str(info.value).endswith(f'for "--device" flag: {reason}')


# --- env files and -e -------------------------------------------------------------------------


def test_parse_env_text_rules() -> None:
    data = b"\xef\xbb\xbf# comment\n\n  A=1\nB= spaced value \nC=\nFROM_HOST\nMISSING\nD=x=y\r\n"
    assert parse_env_text(data, "f", {"FROM_HOST": "h"}) == [
        "A=1",
        "B= spaced value ",
        "C=",
        "FROM_HOST=h",
        "D=x=y",
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"A B=1\n", "poorly formatted environment: variable 'A B' contains whitespaces"),
        (b"=1\n", "poorly formatted environment: no variable name on line '=1'"),
        (b"A=\xff\n", "env file f contains invalid utf8 bytes at line 1"),
    ],
)
def test_parse_env_text_invalid(data: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_env_text(data, "f", {})


def test_parse_env_file_reads_and_reports_missing(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text("X=1\n")
    assert parse_env_file(str(path), {}) == ["X=1"]
    with pytest.raises(InvalidArgument, match="no such file or directory"):
        parse_env_file(str(path) + ".missing", {})


def test_parse_env_lookups() -> None:
    assert parse_env("A=1", {}) == "A=1"
    assert parse_env("A", {"A": "x"}) == "A=x"
    assert parse_env("A", {}) == "A"  # left bare: it unsets A in the container
    with pytest.raises(InvalidArgument, match="invalid environment variable: =x"):
        parse_env("=x", {})


def test_resolve_files_folds_env_files_and_inlines_seccomp(tmp_path: Path) -> None:
    env_file = tmp_path / "e"
    env_file.write_text("A=1\nB=2\n")
    profile = tmp_path / "p.json"
    profile.write_text('{ "defaultAction": "SCMP_ACT_ALLOW" }')
    opts = RunOptions(
        "img",
        env=("B=3", "H"),
        env_files=(str(env_file),),
        security_opt=(f"seccomp={profile}", "no-new-privileges"),
    )
    out = resolve_files(opts, {"H": "home"})
    assert out.env == ("A=1", "B=2", "B=3", "H=home")
    assert out.env_files == ()
    assert out.security_opt == ('seccomp={"defaultAction":"SCMP_ACT_ALLOW"}', "no-new-privileges")


def test_resolve_files_reports_unreadable_profiles(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="opening seccomp profile"):
        resolve_files(RunOptions("img", security_opt=(f"seccomp={tmp_path}/none.json",)))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidArgument, match="compacting json"):
        resolve_files(RunOptions("img", security_opt=(f"seccomp={bad}",)))


# --- restart, labels, security options ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("no", 0)),
        ("no", ("no", 0)),
        ("always", ("always", 0)),
        ("unless-stopped", ("unless-stopped", 0)),
        ("on-failure", ("on-failure", 0)),
        ("on-failure:3", ("on-failure", 3)),
        ("on-failure:", ("on-failure", 0)),
    ],
)
def test_parse_restart_valid(text: str, expected: tuple[str, int]) -> None:
    assert parse_restart(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (":3", "invalid restart policy format: no policy provided before colon"),
        ("on-failure:x", "invalid restart policy format: maximum retry count must be an integer"),
        ("sometimes", "invalid restart policy: unknown policy 'sometimes'"),
        ("always:3", "maximum retry count can only be used with 'on-failure'"),
        ("always:-1", "can only be used with 'on-failure' and cannot be negative"),
        ("on-failure:-1", "invalid restart policy: maximum retry count cannot be negative"),
    ],
)
def test_parse_restart_invalid(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_restart(text)


def test_parse_labels() -> None:
    assert parse_labels(["a=1", "b", "a=2", "c=x=y"]) == {"a": "2", "b": "", "c": "x=y"}
    with pytest.raises(InvalidArgument):
        parse_labels(["=v"])


def test_parse_security_opts() -> None:
    sec = parse_security_opts(
        ["no-new-privileges", "seccomp=unconfined", "apparmor=unconfined", "label=disable"]
    )
    assert sec.no_new_privileges and sec.seccomp == "unconfined"
    assert sec.apparmor == "unconfined" and sec.labels == ("disable",)
    assert not parse_security_opts(["no-new-privileges=false"]).no_new_privileges
    assert parse_security_opts(["seccomp:builtin"]).seccomp == "builtin"  # the deprecated ':' separator


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("seccomp", 'Invalid --security-opt: "seccomp"'),
        ("seccomp=", 'Invalid --security-opt: "seccomp="'),
        ("foo=bar", 'invalid --security-opt 2: "foo=bar"'),
        ("no-new-privileges=maybe", 'invalid --security-opt 2: "no-new-privileges=maybe"'),
    ],
)
def test_parse_security_opts_invalid(item: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_security_opts([item])
    assert str(info.value) == message


# --- whole-options checks -----------------------------------------------------------------------


def test_check_accepts_the_defaults() -> None:
    check(RunOptions("alpine"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"remove": True, "restart": "always"}, "Conflicting options: --restart and --rm"),
        ({"memory": 1024}, "Minimum memory limit allowed is 6MB"),
        ({"memory_swap": 100 << 20}, "You should always set the Memory limit when using Memoryswap limit"),
        (
            {"memory": 100 << 20, "memory_swap": 50 << 20},
            "Minimum memoryswap limit should be larger than memory limit",
        ),
        (
            {"memory": 10 << 20, "memory_reservation": 20 << 20},
            "can not be less than memory reservation limit",
        ),
        ({"memory_reservation": 1024}, "Minimum memory reservation allowed is 6MB"),
        ({"cpu_shares": -1}, "invalid CPU shares"),
        ({"cpuset_cpus": "0-"}, "Invalid value 0- for cpuset cpus"),
        ({"workdir": "rel"}, "the working directory 'rel' is invalid, it needs to be an absolute path"),
        ({"pull": "sometimes"}, "invalid pull option: 'sometimes'"),
        ({"stop_signal": "SIGNOPE"}, "Invalid signal: SIGNOPE"),
        (
            {"health": Health(("CMD", "true")), "no_healthcheck": True},
            "--no-healthcheck conflicts with --health-*",
        ),
        ({"health": Health(("CMD", "true"), interval=-1)}, "--health-interval cannot be negative"),
        ({"health": Health(("CMD", "true"), retries=-1)}, "--health-retries cannot be negative"),
        ({"security_opt": ("bogus",)}, "Invalid --security-opt"),
        ({"platform": "linux"}, "invalid platform"),
        ({"mounts": (parse_volume("/a:/x"), parse_tmpfs("/x"))}, "Duplicate mount point: /x"),
    ],
)
def test_check_refuses(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("*", r"\*")):
        check(replace(RunOptions("alpine"), **changes))


def test_check_memory_swap_unlimited_and_valid_values() -> None:
    check(RunOptions("a", memory=100 << 20, memory_swap=-1, memory_reservation=50 << 20, cpuset_cpus="0-3,5"))
    check(RunOptions("a", restart="on-failure:5", stop_signal="SIGUSR1", workdir="/app", pull="never"))


def test_check_network_modes() -> None:
    for mode in ("bridge", "default", "none", "host", "container:abc", "mynet"):
        check(RunOptions("a", network=mode))  # whether mynet exists is the engine's question, at create
    with pytest.raises(InvalidArgument, match=r"^--userns: invalid USER mode$"):
        check(RunOptions("a", userns="remap"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"network": "container:"}, "a container name or id is needed"),
        ({"network": "container:x", "hostname": "h"}, "conflicting options: hostname"),
        ({"network": "container:x", "publish": ("80",)}, "port publishing"),
        ({"network": "container:x", "dns": ("1.1.1.1",)}, "conflicting options: dns"),
        ({"ip": "10.0.0.2"}, "user defined networks only"),
        ({"network": "host", "ip": "10.0.0.2"}, "user defined networks only"),
        ({"aliases": ("x",)}, "user defined networks"),
        ({"publish": ("99999:80",)}, "invalid port range"),
        ({"publish": ("a:b:c:d",)}, "invalid port format"),
        ({"add_hosts": ("nocolon",)}, "bad format for add-host"),
        ({"mac_address": "02:42:zz:00:00:01"}, "not a valid mac address"),
    ],
)
def test_bad_network_options(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check(RunOptions("a", **changes))  # type: ignore[arg-type]


def test_good_network_options() -> None:
    check(RunOptions("a", network="mynet", ip="10.0.0.2", aliases=("web",), publish=("127.0.0.1:8080:80/udp",),
                     add_hosts=("gw:host-gateway",), mac_address="02:42:0a:00:00:02"))  # fmt: skip


def test_clean_path_is_gos() -> None:
    assert clean_path("//a//b/../c/") == "/a/c"
    assert clean_path("") == "."
    assert clean_path("/") == "/"


# --- the syntax scanners that replaced regular expressions ---------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1e3", 1000),
        ("1E2k", 100 << 10),
        ("1e+2", 100),
        ("2e-1k", int(0.2 * 1024)),
        ("5.", 5),
        ("1.e1", 10),
        ("+1k", 1 << 10),
    ],
)
def test_parse_size_go_float_syntax(text: str, expected: int) -> None:
    assert parse_size(text, MEM) == expected


@pytest.mark.parametrize("num", ["+-1", "1e5e5", "1_000", ".", "..5", "e1", "1e+-1", "1e1.5", "0x10"])
def test_parse_size_refuses_what_go_cannot_parse(num: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_size(num + "k", MEM)
    assert str(info.value).endswith(f"strconv.ParseFloat: parsing {json.dumps(num)}: invalid syntax")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1.s", 1.0), ("1.5m", 90.0), ("1m.5s", 60.5), ("-1h30m", -5400.0), ("0s", 0.0), ("1h0m0s", 3600.0)],
)
def test_go_duration_more_forms(text: str, seconds: float) -> None:
    assert go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1..s", 'time: missing unit in duration "1..s"'),
        ("1h-1s", 'time: unknown unit "h-" in duration "1h-1s"'),
        ("1s ", 'time: unknown unit "s " in duration "1s "'),
        ("--1s", 'time: invalid duration "--1s"'),
        ("1s.", 'time: invalid duration "1s."'),
    ],
)
def test_go_duration_more_errors(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="^" + reason.replace(".", r"\.") + "$"):
        go_duration(text)


@pytest.mark.parametrize("cpus", ["0", "0-3,5-7,9", "10-2"])
def test_check_accepts_cpuset_lists(cpus: str) -> None:
    check(RunOptions("a", cpuset_cpus=cpus))


@pytest.mark.parametrize("cpus", ["1,", ",1", "1-2-3", "a", "1 ", "0-3,", "-1", "1,,2"])
def test_check_refuses_bad_cpuset_lists(cpus: str) -> None:
    with pytest.raises(InvalidArgument, match="cpuset cpus"):
        check(RunOptions("a", cpuset_cpus=cpus))


@pytest.mark.parametrize(("mode", "option"), [("0755", "mode=755"), ("1777", "mode=1777"), ("0", "mode=0")])
def test_parse_mount_tmpfs_mode(mode: str, option: str) -> None:
    assert parse_mount(f"type=tmpfs,target=/t,tmpfs-mode={mode}").options == (option,)


@pytest.mark.parametrize("mode", ["", "8", "+7", "7 ", "0o7", "40000000000"])
def test_parse_mount_refuses_bad_tmpfs_modes(mode: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid value for tmpfs-mode"):
        parse_mount(f"type=tmpfs,target=/t,tmpfs-mode={mode}")


@pytest.mark.parametrize("name", ["ab", "a_b.c-d", "0-", "Z9"])
def test_volume_names_allowed(name: str) -> None:
    assert parse_volume(f"{name}:/x").source == name


@pytest.mark.parametrize("name", ["a", "_ab", ".ab", "a b", "aé", "a+b"])
def test_volume_names_refused(name: str) -> None:
    with pytest.raises(InvalidArgument, match="includes invalid characters"):
        parse_volume(f"{name}:/x")


@pytest.mark.parametrize(
    ("text", "expected"), [("nofile=+5", Ulimit("nofile", 5, 5)), ("nofile=-1:-1", Ulimit("nofile", -1, -1))]
)
def test_parse_ulimit_signed_numbers(text: str, expected: Ulimit) -> None:
    assert parse_ulimit(text) == expected


@pytest.mark.parametrize("value", ["", "1.0", "+-1", "1 ", "0x10", "1_0"])
def test_parse_ulimit_refuses_what_go_cannot_parse(value: str) -> None:
    with pytest.raises(InvalidArgument, match=r"strconv\.ParseInt: parsing .*: invalid syntax"):
        parse_ulimit(f"nofile={value}")


@pytest.mark.parametrize(
    "text", ["", "plain", 'q"uote', "back\\slash", "new\nline\ttab\x00\x1f\x7f", "é\u2028✓😀"]
)
def test_quote_is_json_dumps(text: str) -> None:
    assert quote(text) == json.dumps(text, ensure_ascii=False)


def test_import_loads_no_regex_csv_json_or_fractions() -> None:
    """`ketch run` imports this module: it must not pay for re/enum, csv, json or decimal."""
    code = (
        "import sys\n"
        "import ketch.engine.options as o\n"
        "o.check(o.RunOptions('alpine', remove=True))\n"
        "heavy = {'re', 'enum', 'csv', 'json', 'fractions', 'decimal'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    src = str(Path(__file__).parents[2] / "src")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=src))
