"""Unit tests for ketch.oci.runtime: strict config.json parsing, validate() and state_json()."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest

from ketch.errors import InvalidArgument
from ketch.oci.runtime import (
    OCI_VERSION,
    Capabilities,
    Device,
    Hook,
    IDMapping,
    Mount,
    Namespace,
    Rlimit,
    Root,
    Spec,
    User,
    state_json,
    validate,
)
from ketch.runtime.specgen import default_spec

Config = dict[str, Any]


def config(edit: Callable[[Config], object] | None = None) -> Config:
    d = copy.deepcopy(default_spec())
    if edit is not None:
        edit(d)
    return d


def full_config() -> Config:
    """runc's default spec plus every optional section ketch understands."""
    d = config()
    d["process"]["consoleSize"] = {"height": 24, "width": 80}
    d["process"]["user"] = {"uid": 1000, "gid": 100, "umask": 0o22, "additionalGids": [10, 20]}
    d["process"]["capabilities"]["inheritable"] = ["CAP_KILL"]
    d["process"]["apparmorProfile"] = "unconfined"
    d["process"]["oomScoreAdj"] = 100
    d["domainname"] = "example.org"
    d["annotations"] = {"org.example.key": "value"}
    d["hooks"] = {
        "prestart": [{"path": "/bin/true", "args": ["true", "x"], "env": ["A=1"], "timeout": 5}],
        "poststop": [{"path": "/bin/false"}],
    }
    d["linux"]["devices"] = [
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666, "uid": 0, "gid": 0}
    ]
    d["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    d["linux"]["cgroupsPath"] = "/ketch/test"
    d["linux"]["rootfsPropagation"] = "rslave"
    d["linux"]["mountLabel"] = ""
    d["linux"]["personality"] = {"domain": "LINUX32"}
    d["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {
                "names": ["read", "write"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}],
            }
        ],
    }
    return d


# --- parsing a good config -----------------------------------------------------------------------


def test_default_spec_parses_into_typed_records() -> None:
    spec = Spec.from_json(default_spec())
    assert spec.oci_version == OCI_VERSION
    assert spec.root == Root("rootfs", readonly=True)
    assert spec.hostname == "ketch"
    assert spec.process is not None
    assert spec.process.args == ("sh",)
    assert spec.process.cwd == "/"
    assert spec.process.terminal is True
    assert spec.process.no_new_privileges is True
    assert spec.process.user == User(uid=0, gid=0)
    assert spec.process.rlimits == (Rlimit("RLIMIT_NOFILE", 1024, 1024),)
    assert spec.process.capabilities is not None
    assert "CAP_KILL" in spec.process.capabilities.bounding
    assert spec.process.capabilities.inheritable == ()
    assert [m.destination for m in spec.mounts] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ]
    assert spec.mounts[1] == Mount(
        "/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")
    )
    assert [ns.type for ns in spec.linux.namespaces] == ["pid", "network", "ipc", "uts", "mount", "cgroup"]
    assert spec.linux.namespace("mount") == Namespace("mount")
    assert spec.linux.namespace("user") is None
    assert spec.linux.resources == {"devices": [{"allow": False, "access": "rwm"}]}
    assert "/proc/kcore" in spec.linux.masked_paths
    assert "/proc/sys" in spec.linux.readonly_paths
    assert spec.linux.seccomp is None
    assert spec.hooks["prestart"] == ()
    validate(spec)


def test_full_config_parses_every_section() -> None:
    spec = Spec.from_json(full_config())
    proc = spec.process
    assert proc is not None
    assert proc.console_size == (24, 80)
    assert proc.user == User(uid=1000, gid=100, umask=0o22, additional_gids=(10, 20))
    assert proc.capabilities is not None
    assert proc.capabilities.inheritable == ("CAP_KILL",)
    assert proc.apparmor_profile == "unconfined"
    assert proc.oom_score_adj == 100
    assert spec.domainname == "example.org"
    assert spec.annotations == {"org.example.key": "value"}
    assert spec.hooks["prestart"] == (Hook("/bin/true", ("true", "x"), ("A=1",), 5),)
    assert spec.hooks["poststop"] == (Hook("/bin/false"),)
    assert spec.hooks["createRuntime"] == ()
    assert spec.linux.devices == (Device("/dev/fuse", "c", 10, 229, 0o666, 0, 0),)
    assert spec.linux.sysctl == {"net.ipv4.ip_forward": "1"}
    assert spec.linux.cgroups_path == "/ketch/test"
    assert spec.linux.rootfs_propagation == "rslave"
    assert spec.linux.personality == "LINUX32"
    seccomp = spec.linux.seccomp
    assert seccomp is not None
    assert seccomp.default_action == "SCMP_ACT_ERRNO"
    assert seccomp.default_errno_ret == 1
    assert seccomp.architectures == ("SCMP_ARCH_X86_64",)
    assert seccomp.syscalls[0].names == ("read", "write")
    assert seccomp.syscalls[0].args[0].op == "SCMP_CMP_EQ"
    assert seccomp.syscalls[0].args[0].value_two == 0
    validate(spec)


def test_parsing_is_deterministic_and_records_compare_equal() -> None:
    assert Spec.from_json(full_config()) == Spec.from_json(full_config())


def test_optional_sections_may_be_absent() -> None:
    spec = Spec.from_json({"ociVersion": "1.0.2", "root": {"path": "/r"}})
    assert spec.process is None
    assert spec.mounts == ()
    assert spec.linux.namespaces == ()
    assert spec.hooks["prestart"] == ()
    assert spec.annotations == {}
    validate(spec)


def test_user_namespace_with_mappings() -> None:
    def edit(d: Config) -> None:
        d["linux"]["namespaces"].append({"type": "user"})
        d["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        d["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]

    spec = Spec.from_json(config(edit))
    assert spec.linux.uid_mappings == (IDMapping(0, 100000, 65536),)
    validate(spec)


def test_capabilities_default_to_empty_sets() -> None:
    assert Capabilities.from_json({}, "p") == Capabilities()


@pytest.mark.parametrize("version", ["1.0.0", "1.0.2-dev", "1.1.0", "1.2.0"])
def test_any_1_x_version_is_accepted(version: str) -> None:
    assert Spec.from_json(config(lambda d: d.update(ociVersion=version))).oci_version == version


# --- broken configs name the JSON path of the field --------------------------------------------


def _drop(section: str, key: str) -> Callable[[Config], object]:
    return lambda d: d[section].pop(key)


BROKEN: list[tuple[str, Callable[[Config], object], str]] = [
    ("missing uid", lambda d: d["process"]["user"].pop("uid"), "process.user.uid: required integer"),
    ("mistyped uid", lambda d: d["process"]["user"].update(uid="0"), "process.user.uid: expected an integer"),
    ("bool uid", lambda d: d["process"]["user"].update(uid=True), "process.user.uid: expected an integer"),
    ("float gid", lambda d: d["process"]["user"].update(gid=0.0), "process.user.gid: expected an integer"),
    (
        "mistyped additionalGids",
        lambda d: d["process"]["user"].update(additionalGids=["1"]),
        "process.user.additionalGids: expected an array of integers",
    ),
    ("missing args", _drop("process", "args"), "process.args"),
    ("empty args", lambda d: d["process"].update(args=[]), "process.args"),
    ("mistyped args", lambda d: d["process"].update(args=["sh", 1]), "process.args: expected an array"),
    ("missing cwd", _drop("process", "cwd"), "process.cwd: required string is missing"),
    ("relative cwd", lambda d: d["process"].update(cwd="tmp"), "process.cwd: must be an absolute path"),
    (
        "mistyped terminal",
        lambda d: d["process"].update(terminal="yes"),
        "process.terminal: expected a boolean",
    ),
    ("mistyped env", lambda d: d["process"].update(env="A=1"), "process.env: expected an array of strings"),
    (
        "consoleSize without width",
        lambda d: d["process"].update(consoleSize={"height": 1}),
        "process.consoleSize.width",
    ),
    (
        "rlimit without soft",
        lambda d: d["process"]["rlimits"][0].pop("soft"),
        "process.rlimits[0].soft: required integer",
    ),
    (
        "rlimit not an object",
        lambda d: d["process"]["rlimits"].append("RLIMIT_CORE"),
        "process.rlimits[1]: expected an object",
    ),
    (
        "unknown capability set member type",
        lambda d: d["process"]["capabilities"].update(bounding=[1]),
        "process.capabilities.bounding",
    ),
    ("process not an object", lambda d: d.update(process="sh"), "process: expected an object"),
    ("root missing", lambda d: d.pop("root"), "root"),
    ("root.path missing", _drop("root", "path"), "root.path: required string"),
    ("root.readonly mistyped", lambda d: d["root"].update(readonly=1), "root.readonly: expected a boolean"),
    (
        "unknown namespace",
        lambda d: d["linux"]["namespaces"].__setitem__(1, {"type": "net"}),
        "linux.namespaces[1].type: unknown namespace 'net'",
    ),
    (
        "namespace without type",
        lambda d: d["linux"]["namespaces"].__setitem__(2, {}),
        "linux.namespaces[2].type: required string",
    ),
    (
        "duplicate namespace",
        lambda d: d["linux"]["namespaces"].append({"type": "pid"}),
        "linux.namespaces: namespace 'pid' is listed twice",
    ),
    (
        "bad device type",
        lambda d: d["linux"].update(devices=[{"path": "/dev/x", "type": "x"}]),
        "linux.devices[0].type: unknown device type 'x'",
    ),
    (
        "device without path",
        lambda d: d["linux"].update(devices=[{"type": "c"}]),
        "linux.devices[0].path: required string",
    ),
    (
        "hook with timeout 0",
        lambda d: d.update(hooks={"prestart": [{"path": "/bin/true", "timeout": 0}]}),
        "hooks.prestart[0].timeout: must be greater than zero",
    ),
    (
        "hook with negative timeout",
        lambda d: d.update(hooks={"poststop": [{"path": "/bin/true"}, {"path": "/x", "timeout": -1}]}),
        "hooks.poststop[1].timeout",
    ),
    (
        "hook without path",
        lambda d: d.update(hooks={"createRuntime": [{"args": ["x"]}]}),
        "hooks.createRuntime[0].path: required string",
    ),
    ("ociVersion 2.0", lambda d: d.update(ociVersion="2.0"), "ociVersion: unsupported version '2.0'"),
    ("ociVersion 0.9", lambda d: d.update(ociVersion="0.9.0"), "ociVersion: unsupported version"),
    (
        "mistyped sysctl value",
        lambda d: d["linux"].update(sysctl={"kernel.shmmax": 1}),
        "linux.sysctl: expected an object of strings",
    ),
    (
        "mistyped resources",
        lambda d: d["linux"].update(resources=["x"]),
        "linux.resources: expected an object",
    ),
    (
        "uid mapping without size",
        lambda d: d["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1}]),
        "linux.uidMappings[0].size: required integer",
    ),
    (
        "unknown personality",
        lambda d: d["linux"].update(personality={"domain": "BSD"}),
        "linux.personality.domain: unknown domain 'BSD'",
    ),
    ("intelRdt", lambda d: d["linux"].update(intelRdt={"closID": "x"}), "linux.intelRdt"),
    (
        "seccomp without defaultAction",
        lambda d: d["linux"].update(seccomp={"syscalls": []}),
        "linux.seccomp.defaultAction: required string",
    ),
    (
        "seccomp rule arg without op",
        lambda d: d["linux"].update(
            seccomp={
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1}]}
                ],
            }
        ),
        "linux.seccomp.syscalls[0].args[0].op: required string",
    ),
    (
        "seccomp listener",
        lambda d: d["linux"].update(seccomp={"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}),
        "linux.seccomp.listenerPath",
    ),
    ("linux not an object", lambda d: d.update(linux="x"), "linux: expected an object"),
]


@pytest.mark.parametrize(("edit", "message"), [(e, m) for _, e, m in BROKEN], ids=[i for i, _, _ in BROKEN])
def test_broken_config_names_the_json_path(edit: Callable[[Config], object], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        Spec.from_json(config(edit))
    assert str(info.value).startswith(message)


def test_config_that_is_not_an_object() -> None:
    with pytest.raises(InvalidArgument, match="expected an object"):
        Spec.from_json(["not", "a", "config"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["mounts"][1].update(destination="dev"), "mounts[1].destination"),
        (lambda d: d["mounts"][0].update(options="ro"), "mounts[0].options"),
        (lambda d: d.update(hostname=5), "hostname"),
        (lambda d: d.update(annotations={"a": 1}), "annotations"),
        (lambda d: d.pop("ociVersion"), "ociVersion"),
    ],
    ids=["mount destination", "mount options", "hostname", "annotations", "missing ociVersion"],
)
def test_top_level_fields_are_named(edit: Callable[[Config], object], message: str) -> None:
    """The message contains the field's name (ketch prefixes top-level fields with "config.")."""
    with pytest.raises(InvalidArgument, match=r"^(config\.)?" + re.escape(message)):
        Spec.from_json(config(edit))


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda d: d.pop("ociVersion"), "ociVersion"),
        (lambda d: d["mounts"][1].update(destination="dev"), "mounts[1].destination"),
        (lambda d: d.update(hostname=5), "hostname"),
    ],
    ids=["missing ociVersion", "mount destination", "hostname"],
)
def test_top_level_fields_use_the_bare_json_path(edit: Callable[[Config], object], path: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        Spec.from_json(config(edit))
    assert str(info.value).startswith(path + ":")


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(mounts={}),
        lambda d: d.update(annotations=[]),
        lambda d: d.update(linux=[]),
        lambda d: d.update(hooks=0),
        lambda d: d.update(hooks={"prestart": {}}),
        lambda d: d["process"].update(env=""),
        lambda d: d["process"].update(rlimits={}),
        lambda d: d["linux"].update(namespaces={}),
    ],
    ids=[
        "mounts {}",
        "annotations []",
        "linux []",
        "hooks 0",
        "prestart {}",
        "env ''",
        "rlimits {}",
        "ns {}",
    ],
)
def test_falsy_values_of_the_wrong_type_are_refused(edit: Callable[[Config], object]) -> None:
    with pytest.raises(InvalidArgument):
        Spec.from_json(config(edit))


def test_id_mapped_mounts_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="id-mapped"):
        Mount.from_json({"destination": "/x", "uidMappings": [{"containerID": 0}]}, "mounts[0]")


# --- validate(): cross-field rules ---------------------------------------------------------------


def test_validate_rlimit_soft_above_hard() -> None:
    def edit(d: Config) -> None:
        d["process"]["rlimits"].append({"type": "RLIMIT_CORE", "hard": 10, "soft": 20})

    spec = Spec.from_json(config(edit))
    with pytest.raises(InvalidArgument) as info:
        validate(spec)
    assert str(info.value).startswith("process.rlimits[1]: soft limit is above the hard limit")


def test_validate_rlimit_soft_equal_hard_is_fine() -> None:
    validate(Spec.from_json(config(lambda d: d["process"]["rlimits"][0].update(soft=1024, hard=1024))))


def drop_ns(kind: str) -> Callable[[Config], object]:
    def edit(d: Config) -> None:
        d["linux"]["namespaces"] = [ns for ns in d["linux"]["namespaces"] if ns["type"] != kind]

    return edit


def test_validate_hostname_needs_uts_namespace() -> None:
    spec = Spec.from_json(config(drop_ns("uts")))
    with pytest.raises(InvalidArgument) as info:
        validate(spec)
    assert str(info.value).startswith("hostname:")


def test_validate_domainname_needs_uts_namespace() -> None:
    def edit(d: Config) -> None:
        drop_ns("uts")(d)
        d.pop("hostname")
        d["domainname"] = "example.org"

    with pytest.raises(InvalidArgument, match="uts namespace"):
        validate(Spec.from_json(config(edit)))


def test_validate_no_hostname_without_uts_is_fine() -> None:
    def edit(d: Config) -> None:
        drop_ns("uts")(d)
        d.pop("hostname")

    validate(Spec.from_json(config(edit)))


def test_validate_net_sysctl_needs_network_namespace() -> None:
    def edit(d: Config) -> None:
        drop_ns("network")(d)
        d["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}

    with pytest.raises(InvalidArgument) as info:
        validate(Spec.from_json(config(edit)))
    assert str(info.value).startswith("linux.sysctl:")


def test_validate_other_sysctls_without_network_namespace_are_fine() -> None:
    def edit(d: Config) -> None:
        drop_ns("network")(d)
        d["linux"]["sysctl"] = {"kernel.shmmax": "1"}

    validate(Spec.from_json(config(edit)))


def test_validate_mappings_need_user_namespace() -> None:
    def edit(d: Config) -> None:
        d["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]

    with pytest.raises(InvalidArgument) as info:
        validate(Spec.from_json(config(edit)))
    assert str(info.value).startswith("linux.uidMappings:")


@pytest.mark.parametrize("which", ["uidMappings", "gidMappings"])
def test_validate_new_user_namespace_needs_both_mappings(which: str) -> None:
    def edit(d: Config) -> None:
        d["linux"]["namespaces"].append({"type": "user"})
        d["linux"][which] = [{"containerID": 0, "hostID": 1000, "size": 1}]

    with pytest.raises(InvalidArgument, match="needs uidMappings and gidMappings"):
        validate(Spec.from_json(config(edit)))


def test_validate_joined_user_namespace_needs_no_mappings() -> None:
    validate(
        Spec.from_json(config(lambda d: d["linux"]["namespaces"].append({"type": "user", "path": "/x"})))
    )


def test_validate_without_process() -> None:
    validate(Spec.from_json(config(lambda d: d.pop("process"))))


# --- state_json ----------------------------------------------------------------------------------


def test_state_json_running() -> None:
    assert state_json("c1", "running", 42, "/b", {}) == {
        "ociVersion": OCI_VERSION,
        "id": "c1",
        "status": "running",
        "bundle": "/b",
        "pid": 42,
    }


def test_state_json_created_keeps_pid_and_annotations() -> None:
    state = state_json("c1", "created", 7, "/b", {"k": "v"})
    assert state["pid"] == 7
    assert state["annotations"] == {"k": "v"}


def test_state_json_stopped_without_pid_omits_it() -> None:
    state = state_json("c1", "stopped", 0, "/b", {})
    assert "pid" not in state
    assert "annotations" not in state
    assert state["status"] == "stopped"


def test_state_json_stopped_with_pid_keeps_it() -> None:
    assert state_json("c1", "stopped", 9, "/b", {})["pid"] == 9
