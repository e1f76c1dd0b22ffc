"""Unit tests for ketch.engine.specconv: run options + image config -> OCI config.json."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ketch.engine import runconfig, specconv
from ketch.engine.options import (
    Health,
    Mount,
    RunOptions,
    Ulimit,
    parse_cpus,
    parse_device,
    parse_mount,
    parse_size,
    parse_tmpfs,
    parse_volume,
)
from ketch.engine.runconfig import command_of, env_of, hostname_of, user_spec_of, workdir_of
from ketch.engine.specconv import (
    DEFAULT_CAPABILITIES,
    INIT_PATH,
    MASKED_PATHS,
    READONLY_PATHS,
    DeviceNode,
    SpecInputs,
    capabilities_of,
    container_spec,
    health_of,
    resolve_devices,
    seccomp_from_docker,
    stop_signal_of,
    volume_mounts,
)
from ketch.errors import InvalidArgument, NotFound, Unsupported
from ketch.oci.runtime import Spec, validate
from ketch.runtime import capabilities

CID = "0123456789abcdef" * 4
IMAGE: dict[str, Any] = {
    "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"],
    "Cmd": ["/bin/sh"],
    "WorkingDir": "",
}
ALL_CAPS = list(capabilities.NAMES)


def make(
    options: RunOptions | None = None, image: dict[str, Any] | None = None, **inputs: Any
) -> dict[str, Any]:
    """A spec built with fixed host facts, checked by the runtime's own parser."""
    inputs.setdefault("last_cap", len(ALL_CAPS) - 1)
    inputs.setdefault("arch", "x86_64")
    inputs.setdefault("kernel", "6.1.0")
    inputs.setdefault("environ", {})
    spec = container_spec(
        SpecInputs(
            options or RunOptions("alpine"), IMAGE if image is None else image, CID, "/r/rootfs", **inputs
        )
    )
    validate(Spec.from_json(json.loads(json.dumps(spec))))
    return spec


def mount_at(spec: dict[str, Any], destination: str) -> dict[str, Any]:
    found = [m for m in spec["mounts"] if m["destination"] == destination]
    assert len(found) == 1, f"{destination}: {found}"
    return found[0]


def caps(spec: dict[str, Any]) -> list[str]:
    sets = spec["process"]["capabilities"]
    assert sets["bounding"] == sets["effective"] == sets["permitted"]
    return list(sets["bounding"])


# --- command_of --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "entrypoint", "command", "expected"),
    [
        ({"Cmd": ["sh"]}, None, (), ["sh"]),
        ({"Cmd": ["sh"]}, None, ("echo", "hi"), ["echo", "hi"]),
        ({"Entrypoint": ["/ep"], "Cmd": ["-x"]}, None, (), ["/ep", "-x"]),
        ({"Entrypoint": ["/ep"], "Cmd": ["-x"]}, None, ("-y",), ["/ep", "-y"]),
        ({"Entrypoint": ["/ep"], "Cmd": ["-x"]}, ("/other",), (), ["/other"]),
        ({"Entrypoint": ["/ep"], "Cmd": ["-x"]}, ("/other",), ("a",), ["/other", "a"]),
        ({"Entrypoint": ["/ep"], "Cmd": ["-x"]}, ("",), ("ls",), ["ls"]),
        ({"Entrypoint": ["/ep"], "Cmd": ["-x"]}, (), ("ls",), ["ls"]),
        ({"Entrypoint": ["/ep"], "Cmd": None}, None, (), ["/ep"]),
    ],
)
def test_command_of(
    image: dict[str, Any], entrypoint: tuple[str, ...] | None, command: tuple[str, ...], expected: list[str]
) -> None:
    assert command_of(RunOptions("i", command=command, entrypoint=entrypoint), image) == expected


@pytest.mark.parametrize(
    ("image", "entrypoint"),
    [({}, None), ({"Cmd": []}, None), ({"Entrypoint": ["/ep"], "Cmd": ["x"]}, ("",))],
)
def test_command_of_without_a_command(image: dict[str, Any], entrypoint: tuple[str, ...] | None) -> None:
    with pytest.raises(InvalidArgument, match=r"^No command specified$"):
        command_of(RunOptions("i", entrypoint=entrypoint), image)


# --- env_of ------------------------------------------------------------------------------------


def test_env_defaults_and_image_path_override() -> None:
    env = env_of(RunOptions("i"), {"Env": ["PATH=/custom", "A=1"]}, "host1", environ={})
    assert env == ["PATH=/custom", "HOSTNAME=host1", "A=1"]


def test_env_default_path_when_the_image_has_none() -> None:
    assert env_of(RunOptions("i"), {}, "h", environ={})[0] == f"PATH={runconfig.DEFAULT_PATH}"


def test_env_tty_sets_term() -> None:
    assert "TERM=xterm" in env_of(RunOptions("i", tty=True), {}, "h", environ={})
    assert not any(e.startswith("TERM=") for e in env_of(RunOptions("i"), {}, "h", environ={}))


def test_env_user_values_win_and_come_before_the_images() -> None:
    env = env_of(RunOptions("i", env=("B=user", "C=3")), {"Env": ["A=1", "B=image"]}, "h", environ={})
    assert env[2:] == ["B=user", "C=3", "A=1"]


def test_env_later_user_value_wins_in_place() -> None:
    env = env_of(RunOptions("i", env=("A=1", "B=2", "A=3")), {}, "h", environ={})
    assert env[2:] == ["A=3", "B=2"]


def test_env_bare_variable_comes_from_the_callers_environment() -> None:
    assert "TOKEN=s3cret" in env_of(RunOptions("i", env=("TOKEN",)), {}, "h", environ={"TOKEN": "s3cret"})


def test_env_bare_unknown_variable_unsets_it() -> None:
    env = env_of(RunOptions("i", env=("LANG", "HOSTNAME")), {"Env": ["LANG=C"]}, "h", environ={})
    assert not any(e.startswith(("LANG", "HOSTNAME")) for e in env)


def test_env_files_come_before_dash_e(tmp_path: Path) -> None:
    f = tmp_path / "env"
    f.write_text("A=file\nB=file\n")
    env = env_of(RunOptions("i", env=("B=flag",), env_files=(str(f),)), {}, "h", environ={})
    assert env[2:] == ["A=file", "B=flag"]


def test_env_home_from_the_user_unless_set() -> None:
    assert env_of(RunOptions("i"), {}, "h", "/home/app", environ={})[-1] == "HOME=/home/app"
    env = env_of(RunOptions("i", env=("HOME=/x",)), {}, "h", "/home/app", environ={})
    assert [e for e in env if e.startswith("HOME=")] == ["HOME=/x"]


# --- small helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workdir", "image_dir", "expected"),
    [("", "", "/"), ("", "/app", "/app"), ("/w", "/app", "/w"), ("", "app/", "/app"), ("/a/../b/", "", "/b")],
)
def test_workdir_of(workdir: str, image_dir: str, expected: str) -> None:
    assert workdir_of(RunOptions("i", workdir=workdir), {"WorkingDir": image_dir}) == expected


def test_user_spec_and_hostname_and_stop_signal() -> None:
    assert user_spec_of(RunOptions("i"), {"User": "app"}) == "app"
    assert user_spec_of(RunOptions("i", user="0:0"), {"User": "app"}) == "0:0"
    assert hostname_of(RunOptions("i"), CID) == CID[:12]
    assert hostname_of(RunOptions("i", hostname="web"), CID) == "web"
    assert hostname_of(RunOptions("i", network="host"), CID) == os.uname().nodename
    assert stop_signal_of(RunOptions("i"), {}) == "SIGTERM"
    assert stop_signal_of(RunOptions("i"), {"StopSignal": "SIGQUIT"}) == "SIGQUIT"
    assert stop_signal_of(RunOptions("i", stop_signal="9"), {"StopSignal": "SIGQUIT"}) == "9"


def test_health_of() -> None:
    image = {"Healthcheck": {"Test": ["CMD", "true"], "Interval": 5_000_000_000, "Retries": 5}}
    assert health_of(RunOptions("i"), image) == Health(("CMD", "true"), 5.0, 30.0, 5, 0.0)
    assert health_of(RunOptions("i"), {}) is None
    assert health_of(RunOptions("i", no_healthcheck=True), image) is None
    assert health_of(RunOptions("i"), {"Healthcheck": {"Test": ["NONE"]}}) is None
    mine = Health(("CMD-SHELL", "curl -f localhost"), interval=2)
    assert health_of(RunOptions("i", health=mine), image) == mine
    assert health_of(RunOptions("i", health=Health((), interval=1)), image) == Health(("CMD", "true"), 1)


# --- capabilities ------------------------------------------------------------------------------


def test_default_capabilities_are_dockers_14() -> None:
    spec = make()
    assert caps(spec) == list(DEFAULT_CAPABILITIES) and len(DEFAULT_CAPABILITIES) == 14
    assert spec["process"]["capabilities"].get("inheritable", []) == []
    assert spec["process"]["capabilities"].get("ambient", []) == []


@pytest.mark.parametrize(
    ("add", "drop", "has", "lacks"),
    [
        (("SYS_ADMIN",), (), ["CAP_SYS_ADMIN", "CAP_CHOWN"], []),
        (("cap_net_admin",), (), ["CAP_NET_ADMIN"], []),
        ((), ("NET_RAW",), ["CAP_CHOWN"], ["CAP_NET_RAW"]),
        ((), ("cap_chown", "Kill"), [], ["CAP_CHOWN", "CAP_KILL"]),
        (("ALL",), (), ALL_CAPS, []),
        (("all",), ("SYS_ADMIN",), ["CAP_SYS_MODULE"], ["CAP_SYS_ADMIN"]),
        (("NET_ADMIN",), ("ALL",), ["CAP_NET_ADMIN"], ["CAP_CHOWN"]),
    ],
)
def test_cap_add_and_drop(
    add: tuple[str, ...], drop: tuple[str, ...], has: list[str], lacks: list[str]
) -> None:
    got = caps(make(RunOptions("i", cap_add=add, cap_drop=drop)))
    assert all(c in got for c in has) and not any(c in got for c in lacks)
    assert len(got) == len(set(got))


def test_drop_all_leaves_only_the_added() -> None:
    assert caps(make(RunOptions("i", cap_add=("CHOWN",), cap_drop=("ALL",)))) == ["CAP_CHOWN"]
    assert caps(make(RunOptions("i", cap_drop=("ALL",)))) == []


def test_adding_a_default_capability_does_not_duplicate_it() -> None:
    assert caps(make(RunOptions("i", cap_add=("CHOWN",)))) == list(DEFAULT_CAPABILITIES)


def test_unknown_capability_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r'^unknown capability: "CAP_BOGUS"$'):
        make(RunOptions("i", cap_add=("bogus",)))


def test_all_means_what_the_kernel_knows() -> None:
    assert capabilities_of(RunOptions("i", cap_add=("ALL",)), last_cap=37) == ALL_CAPS[:38]
    assert capabilities_of(RunOptions("i", privileged=True), last_cap=37) == ALL_CAPS[:38]


# --- the default spec --------------------------------------------------------------------------


def test_default_spec_shape() -> None:
    spec = make()
    proc = spec["process"]
    assert proc["args"] == ["/bin/sh"] and proc["cwd"] == "/" and proc["terminal"] is False
    assert proc["user"] == {"uid": 0, "gid": 0}
    assert proc["oomScoreAdj"] == 0 and proc["noNewPrivileges"] is False
    assert "rlimits" not in proc
    assert spec["root"] == {"path": "/r/rootfs", "readonly": False}
    assert spec["hostname"] == CID[:12]
    assert spec["annotations"][specconv.ANNOTATION_ID] == CID


def test_default_mounts_are_dockers() -> None:
    spec = make()
    assert [m["destination"] for m in spec["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm",
    ]  # fmt: skip
    assert mount_at(spec, "/dev")["options"] == ["nosuid", "strictatime", "mode=755", "size=65536k"]
    assert "ptmxmode=0666" in mount_at(spec, "/dev/pts")["options"]
    assert "ro" in mount_at(spec, "/sys")["options"]
    assert "ro" in mount_at(spec, "/sys/fs/cgroup")["options"]
    assert "size=67108864" in mount_at(spec, "/dev/shm")["options"]


def test_default_namespaces_masked_and_readonly_paths() -> None:
    linux = make()["linux"]
    assert [n["type"] for n in linux["namespaces"]] == ["mount", "network", "uts", "pid", "ipc", "cgroup"]
    assert linux["maskedPaths"] == list(MASKED_PATHS)
    assert "/proc/kcore" in linux["maskedPaths"] and "/sys/firmware" in linux["maskedPaths"]
    assert linux["readonlyPaths"] == list(READONLY_PATHS)
    assert linux["sysctl"] == specconv.DEFAULT_SYSCTLS


def test_cgroup_v1_keeps_the_host_cgroup_namespace() -> None:
    kinds = [n["type"] for n in make(cgroup_v2=False)["linux"]["namespaces"]]
    assert "cgroup" not in kinds


def test_default_device_rules() -> None:
    rules = make()["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    allowed = {(r["major"], r["minor"]) for r in rules[1:] if r["allow"]}
    assert allowed == {(1, 3), (1, 5), (1, 8), (1, 9), (5, 0), (5, 1)}
    assert {"allow": False, "type": "c", "major": 10, "minor": 229, "access": "rwm"} in rules


def test_default_seccomp_is_dockers_profile_for_the_caps() -> None:
    seccomp = make()["linux"]["seccomp"]
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO"
    names = {n for rule in seccomp["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]}
    assert "read" in names and "mount" not in names
    admin = make(RunOptions("i", cap_add=("SYS_ADMIN",)))["linux"]["seccomp"]
    admin_names = {
        n for rule in admin["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]
    }
    assert "mount" in admin_names


def test_default_seccomp_gets_the_final_capabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[list[str], str]] = []

    def fake(capabilities: list[str], arch: str = "", **_: object) -> dict[str, Any]:
        seen.append((list(capabilities), arch))
        return {"defaultAction": "SCMP_ACT_ALLOW"}

    from ketch.engine import seccomp_default

    monkeypatch.setattr(seccomp_default, "default_profile", fake)
    spec = make(RunOptions("i", cap_drop=("ALL",), cap_add=("KILL",), security_opt=("seccomp=builtin",)))
    assert spec["linux"]["seccomp"] == {"defaultAction": "SCMP_ACT_ALLOW"}
    assert seen == [(["CAP_KILL"], "x86_64")]


# --- options shaping the spec ------------------------------------------------------------------


def test_tty_sets_terminal_and_term() -> None:
    proc = make(RunOptions("i", tty=True))["process"]
    assert proc["terminal"] is True and "TERM=xterm" in proc["env"]


def test_memory_limit_and_default_swap() -> None:
    memory = make(RunOptions("i", memory=parse_size("64m", "-m, --memory")))["linux"]["resources"]["memory"]
    assert memory == {"limit": 64 << 20, "swap": 128 << 20}


def test_memory_swap_unlimited_and_reservation() -> None:
    o = RunOptions("i", memory=64 << 20, memory_swap=-1, memory_reservation=32 << 20)
    assert make(o)["linux"]["resources"]["memory"] == {"limit": 64 << 20, "reservation": 32 << 20, "swap": -1}


def test_bad_memory_flag_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="invalid suffix"):
        parse_size("10xb", "-m, --memory")


def test_cpus_become_quota_over_a_100ms_period() -> None:
    cpu = make(RunOptions("i", nano_cpus=parse_cpus("1.5")))["linux"]["resources"]["cpu"]
    assert cpu == {"quota": 150000, "period": 100000}


def test_cpu_shares_cpuset_and_pids() -> None:
    res = make(RunOptions("i", cpu_shares=512, cpuset_cpus="0-1", pids_limit=100))["linux"]["resources"]
    assert res["cpu"] == {"shares": 512, "cpus": "0-1"}
    assert res["pids"] == {"limit": 100}
    assert make(RunOptions("i", pids_limit=-5))["linux"]["resources"]["pids"] == {"limit": -1}
    assert "pids" not in make()["linux"]["resources"] and "memory" not in make()["linux"]["resources"]


def test_ulimits_become_rlimits() -> None:
    o = RunOptions(
        "i", ulimits=(Ulimit("nofile", 1024, 2048), Ulimit("core", -1, -1), Ulimit("nofile", 10, 20))
    )
    assert make(o)["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": 20, "soft": 10},
        {"type": "RLIMIT_CORE", "hard": (1 << 64) - 1, "soft": (1 << 64) - 1},
    ]


def test_read_only_rootfs() -> None:
    spec = make(RunOptions("i", read_only=True), hosts_file="/run/h")
    assert spec["root"]["readonly"] is True
    assert (
        "ro" not in mount_at(spec, "/dev/shm")["options"] and "ro" not in mount_at(spec, "/proc")["options"]
    )
    assert "ro" in mount_at(spec, "/etc/hosts")["options"]


def test_network_host_shares_the_host_network_namespace() -> None:
    linux = make(RunOptions("i", network="host"))["linux"]
    assert "network" not in [n["type"] for n in linux["namespaces"]]
    assert "sysctl" not in linux  # net.* sysctls need a private network namespace


@pytest.mark.parametrize("network", ["none", "bridge", "default"])
def test_other_networks_get_a_new_namespace(network: str) -> None:
    assert "network" in [n["type"] for n in make(RunOptions("i", network=network))["linux"]["namespaces"]]


def test_default_sysctls_can_be_turned_off() -> None:
    assert "sysctl" not in make(default_sysctls=False)["linux"]


def test_user_and_home_from_the_resolved_user() -> None:
    proc = make(user=(1000, 1000, (10, 29), "/home/app"))["process"]
    assert proc["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10, 29]}
    assert "HOME=/home/app" in proc["env"]


def test_workdir_and_hostname_flags() -> None:
    spec = make(RunOptions("i", workdir="/srv", hostname="web"))
    assert (
        spec["process"]["cwd"] == "/srv"
        and spec["hostname"] == "web"
        and "HOSTNAME=web" in spec["process"]["env"]
    )


def test_name_annotation_and_no_new_privileges() -> None:
    spec = make(RunOptions("i", name="web", security_opt=("no-new-privileges",)))
    assert spec["annotations"][specconv.ANNOTATION_NAME] == "web"
    assert spec["process"]["noNewPrivileges"] is True


# --- privileged --------------------------------------------------------------------------------


def test_privileged() -> None:
    node = DeviceNode("/dev/sda", "b", 8, 0, 0o660, 0, 6)
    spec = make(RunOptions("i", privileged=True), device_nodes=(node,))
    linux = spec["linux"]
    assert caps(spec) == ALL_CAPS
    assert "maskedPaths" not in linux and "readonlyPaths" not in linux
    assert "seccomp" not in linux
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert linux["devices"][0]["path"] == "/dev/sda"
    assert "ro" not in mount_at(spec, "/sys")["options"]
    assert "ro" not in mount_at(spec, "/sys/fs/cgroup")["options"]


def test_seccomp_unconfined() -> None:
    assert "seccomp" not in make(RunOptions("i", security_opt=("seccomp=unconfined",)))["linux"]


# --- mounts ------------------------------------------------------------------------------------


def test_bind_mounts() -> None:
    o = RunOptions("i", mounts=(parse_volume("/srv/data:/data:ro"), parse_mount("type=bind,src=/x,dst=/y")))
    spec = make(o)
    assert mount_at(spec, "/data") == {
        "destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro", "rprivate"],
    }  # fmt: skip
    assert mount_at(spec, "/y")["options"] == ["rbind", "rprivate"]


def test_bind_propagation_and_nonrecursive() -> None:
    o = RunOptions(
        "i", mounts=(parse_mount("type=bind,src=/x,dst=/y,bind-propagation=rshared,bind-nonrecursive"),)
    )
    spec = make(o)
    assert mount_at(spec, "/y")["options"] == ["bind", "rshared"]
    assert spec["linux"]["rootfsPropagation"] == "shared"
    slave = make(RunOptions("i", mounts=(parse_volume("/x:/y:rslave"),)))
    assert slave["linux"]["rootfsPropagation"] == "rslave"
    assert "rootfsPropagation" not in make()["linux"]


def test_named_and_anonymous_volumes_use_the_prepared_sources() -> None:
    o = RunOptions("i", mounts=(parse_volume("data:/data"), parse_volume("/anon")))
    spec = make(o, volume_sources={"/data": "/v/data/_data", "/anon": "/v/1234/_data"})
    assert mount_at(spec, "/data") == {
        "destination": "/data", "type": "bind", "source": "/v/data/_data", "options": ["rbind"],
    }  # fmt: skip
    assert mount_at(spec, "/anon")["source"] == "/v/1234/_data"


def test_missing_volume_source_is_an_error() -> None:
    with pytest.raises(NotFound, match="/data"):
        make(RunOptions("i", mounts=(parse_volume("data:/data"),)))


def test_image_volumes_are_anonymous_unless_covered() -> None:
    image = dict(IMAGE, Volumes={"/var/lib/db": {}, "/cache/": {}})
    o = RunOptions("i", mounts=(parse_volume("/host/cache:/cache"),))
    wanted = volume_mounts(o, image)
    assert wanted == (Mount("volume", "", "/var/lib/db"),)
    spec = make(o, image, volume_sources={"/var/lib/db": "/v/x/_data"})
    assert mount_at(spec, "/var/lib/db")["source"] == "/v/x/_data"
    assert mount_at(spec, "/cache")["source"] == "/host/cache"


def test_tmpfs_mounts() -> None:
    o = RunOptions(
        "i", mounts=(parse_tmpfs("/run:size=64m,exec"), parse_mount("type=tmpfs,dst=/t,ro,tmpfs-mode=700"))
    )
    spec = make(o)
    assert mount_at(spec, "/run") == {
        "destination": "/run", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "rprivate", "size=64m", "exec"],
    }  # fmt: skip
    assert mount_at(spec, "/t")["options"] == ["noexec", "nosuid", "nodev", "rprivate", "ro", "mode=700"]


def test_user_mount_replaces_a_default_one() -> None:
    spec = make(RunOptions("i", mounts=(parse_tmpfs("/dev/shm:size=1g"),)))
    assert mount_at(spec, "/dev/shm")["source"] == "tmpfs"


def test_user_dev_mount_drops_every_default_under_dev() -> None:
    spec = make(RunOptions("i", mounts=(parse_volume("/host/dev:/dev"),)))
    dests = [m["destination"] for m in spec["mounts"]]
    assert not [d for d in dests if d.startswith("/dev/")]
    assert mount_at(spec, "/dev")["type"] == "bind"


def test_user_mounts_are_ordered_parents_first() -> None:
    o = RunOptions("i", mounts=(parse_volume("/a:/x/y/z"), parse_volume("/b:/x"), parse_volume("/c:/x/y")))
    dests = [m["destination"] for m in make(o)["mounts"]]
    assert dests[-3:] == ["/x", "/x/y", "/x/y/z"]


def test_network_files_are_bind_mounted_unless_the_user_mounts_them() -> None:
    spec = make(hosts_file="/run/h", resolv_file="/run/r", hostname_file="/run/n")
    assert mount_at(spec, "/etc/hosts") == {
        "destination": "/etc/hosts", "type": "bind", "source": "/run/h", "options": ["rbind", "rprivate"],
    }  # fmt: skip
    assert mount_at(spec, "/etc/resolv.conf")["source"] == "/run/r"
    assert mount_at(spec, "/etc/hostname")["source"] == "/run/n"
    mine = make(RunOptions("i", mounts=(parse_volume("/mine:/etc/hosts:ro"),)), hosts_file="/run/h")
    assert mount_at(mine, "/etc/hosts")["source"] == "/mine"
    assert not any(m["destination"] == "/etc/hosts" for m in make()["mounts"])


# --- init and devices --------------------------------------------------------------------------


def test_init_prefixes_the_command_and_mounts_the_binary() -> None:
    spec = make(RunOptions("i", init=True, command=("sleep", "1")), init_path="/usr/libexec/docker-init")
    assert spec["process"]["args"] == [INIT_PATH, "--", "sleep", "1"]
    assert mount_at(spec, INIT_PATH) == {
        "destination": INIT_PATH, "type": "bind", "source": "/usr/libexec/docker-init", "options": ["bind", "ro"],
    }  # fmt: skip


def test_init_without_a_binary_is_unsupported() -> None:
    with pytest.raises(Unsupported, match="--init"):
        make(RunOptions("i", init=True))


def _fake_stat(table: dict[str, tuple[int, int, int]]) -> Callable[[str], os.stat_result]:
    """A stat() over (mode, major, minor) entries; uid 0, gid 5."""

    def fake(path: str) -> os.stat_result:
        if path not in table:
            raise FileNotFoundError(path)
        mode, major, minor = table[path]
        return os.stat_result((mode, 1, 0, 1, 0, 5, 0, 0, 0, 0), {"st_rdev": os.makedev(major, minor)})

    return fake


def test_resolve_devices_with_a_fake_host() -> None:
    fake = _fake_stat(
        {"/dev/fuse": (stat.S_IFCHR | 0o666, 10, 229), "/dev/sda": (stat.S_IFBLK | 0o660, 8, 0)}
    )
    nodes = resolve_devices((parse_device("/dev/fuse"), parse_device("/dev/sda:/dev/xvda:r")), fake)
    assert nodes == (
        DeviceNode("/dev/fuse", "c", 10, 229, 0o666, 0, 5, "rwm"),
        DeviceNode("/dev/xvda", "b", 8, 0, 0o660, 0, 5, "r"),
    )
    spec = make(RunOptions("i", devices=(parse_device("/dev/fuse"),)), device_nodes=nodes[:1])
    assert spec["linux"]["devices"] == [
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666, "uid": 0, "gid": 5}
    ]
    assert spec["linux"]["resources"]["devices"][-1] == {
        "allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm",
    }  # fmt: skip


def test_resolve_devices_refuses_what_is_not_a_device() -> None:
    with pytest.raises(InvalidArgument, match="error gathering device information"):
        resolve_devices((parse_device("/nonexistent/dev"),))


def test_host_devices_lists_device_nodes_only() -> None:
    nodes = {n.path: n for n in specconv.host_devices()}
    assert (nodes["/dev/null"].type, nodes["/dev/null"].major, nodes["/dev/null"].minor) == ("c", 1, 3)
    assert not [p for p in nodes if p.startswith(("/dev/pts/", "/dev/shm/")) or p == "/dev/console"]


def test_resolve_real_null_device() -> None:
    (node,) = resolve_devices((parse_device("/dev/null:/dev/mynull"),))
    assert (node.path, node.type, node.major, node.minor) == ("/dev/mynull", "c", 1, 3)


# --- Docker-format seccomp profiles -------------------------------------------------------------

PROFILE: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
        {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
        {"names": ["future"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "9.0"}},
        {"names": ["chown"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_CHOWN"]}},
        {
            "name": "personality",
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}],
        },
    ],
}


def _names(profile: dict[str, Any] | None) -> list[str]:
    assert profile is not None
    return [n for rule in profile["syscalls"] for n in rule["names"]]


def test_docker_profile_conversion_filters_by_arch_caps_and_kernel() -> None:
    out = seccomp_from_docker(PROFILE, ["CAP_CHOWN"], "x86_64", "5.10.0")
    assert out is not None
    assert out["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert _names(out) == ["read", "write", "arch_prctl", "ptrace", "personality"]
    assert out["syscalls"][-1]["args"] == [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]


def test_docker_profile_conversion_on_arm64_without_chown() -> None:
    out = seccomp_from_docker(PROFILE, ["CAP_SYS_ADMIN"], "aarch64", "4.4.0")
    assert out is not None
    assert out["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert _names(out) == ["read", "write", "mount", "chown", "personality"]
    assert out["syscalls"][2]["errnoRet"] == 1  # a rule with the default action takes defaultErrnoRet


def test_docker_profile_edge_cases() -> None:
    assert seccomp_from_docker({}, [], "x86_64", "6.1") is None
    with pytest.raises(InvalidArgument, match="use either 'architectures' or 'archMap'"):
        seccomp_from_docker(dict(PROFILE, architectures=["SCMP_ARCH_X86_64"]), [], "x86_64", "6.1")
    with pytest.raises(InvalidArgument, match="use either 'name' or 'names'"):
        bad = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "a", "names": ["b"], "action": "x"}]}
        seccomp_from_docker(bad, [], "x86_64", "6.1")


def test_custom_profile_from_security_opt_json_and_file(tmp_path: Path) -> None:
    inline = "seccomp=" + json.dumps(PROFILE)
    spec = make(RunOptions("i", security_opt=(inline,)))
    assert "read" in _names(spec["linux"]["seccomp"])
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(PROFILE))
    from_file = make(RunOptions("i", security_opt=(f"seccomp={path}",)))
    assert from_file["linux"]["seccomp"] == spec["linux"]["seccomp"]
    with pytest.raises(InvalidArgument, match="opening seccomp profile"):
        make(RunOptions("i", security_opt=(f"seccomp={tmp_path}/missing.json",)))


def test_container_spec_checks_the_options() -> None:
    with pytest.raises(InvalidArgument, match="Conflicting options"):
        make(RunOptions("i", remove=True, restart="always"))


def test_spec_is_json_and_fresh_each_time() -> None:
    first = make(RunOptions("i", read_only=True))
    first["mounts"][0]["options"].append("bogus")
    second = make(RunOptions("i", read_only=True))
    assert "bogus" not in second["mounts"][0]["options"]
    assert json.loads(json.dumps(second)) == second
