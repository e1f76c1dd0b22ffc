"""Unit tests for ketch.runtime.specgen: the default config.json and the features document."""

from __future__ import annotations

import json
import os

import pytest

from ketch.oci.runtime import HOOK_KINDS, NAMESPACE_TYPES, OCI_VERSION, Spec, validate
from ketch.runtime import capabilities, rootfs
from ketch.runtime.specgen import MASKED_PATHS, READONLY_PATHS, default_spec, features


def test_default_spec_parses_and_validates() -> None:
    spec = Spec.from_json(default_spec())
    validate(spec)
    assert spec.oci_version == OCI_VERSION
    assert spec.linux.namespace("user") is None
    assert spec.linux.namespace("network") is not None
    assert spec.linux.uid_mappings == ()
    assert spec.linux.masked_paths == tuple(MASKED_PATHS)
    assert spec.linux.readonly_paths == tuple(READONLY_PATHS)
    assert [m.type for m in spec.mounts][-1] == "cgroup"


def test_default_spec_is_json_serialisable() -> None:
    d = default_spec()
    assert json.loads(json.dumps(d)) == d


def test_default_spec_returns_fresh_capability_lists() -> None:
    first = default_spec()
    first["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    first["mounts"][0]["options"] = ["ro"]
    second = default_spec()
    assert "CAP_SYS_ADMIN" not in second["process"]["capabilities"]["bounding"]
    assert "options" not in second["mounts"][0]


@pytest.mark.parametrize("key", ["maskedPaths", "readonlyPaths"])
def test_default_spec_path_lists_are_not_shared(key: str) -> None:
    assert default_spec()["linux"][key] is not default_spec()["linux"][key]


def test_default_spec_mount_options_are_understood() -> None:
    spec = Spec.from_json(default_spec())
    for i, m in enumerate(spec.mounts):
        rootfs.describe(m, "/bundle", f"mounts[{i}]")


def test_default_spec_capabilities_are_known() -> None:
    caps = default_spec()["process"]["capabilities"]
    for names in caps.values():
        capabilities.mask(tuple(names), "p", len(capabilities.NAMES) - 1)


def test_rootless_spec_parses_and_validates() -> None:
    spec = Spec.from_json(default_spec(rootless=True))
    validate(spec)
    kinds = [ns.type for ns in spec.linux.namespaces]
    assert "user" in kinds
    assert "network" not in kinds
    assert "cgroup" not in kinds
    assert "mount" in kinds
    assert spec.linux.uid_mappings[0].host_id == os.getuid()
    assert spec.linux.uid_mappings[0].container_id == 0
    assert spec.linux.uid_mappings[0].size == 1
    assert spec.linux.gid_mappings[0].host_id == os.getgid()
    assert spec.linux.resources == {}


def test_rootless_spec_binds_sys_and_drops_gid_5() -> None:
    spec = Spec.from_json(default_spec(rootless=True))
    by_dest = {m.destination: m for m in spec.mounts}
    assert by_dest["/sys"].source == "/sys"
    assert "rbind" in by_dest["/sys"].options
    assert "/sys/fs/cgroup" not in by_dest
    assert "gid=5" not in by_dest["/dev/pts"].options
    assert "gid=5" in {m.destination: m for m in Spec.from_json(default_spec()).mounts}["/dev/pts"].options


def test_features_document() -> None:
    f = features()
    assert {"ociVersionMin", "ociVersionMax", "hooks", "mountOptions", "linux"} <= set(f)
    assert f["ociVersionMin"] == "1.0.0"
    assert f["ociVersionMax"] == OCI_VERSION
    assert f["hooks"] == list(HOOK_KINDS)
    assert f["mountOptions"] == sorted(rootfs.known_options())
    linux = f["linux"]
    assert {"namespaces", "capabilities", "cgroup", "seccomp"} <= set(linux)
    assert linux["namespaces"] == list(NAMESPACE_TYPES)
    assert linux["capabilities"][0] == "CAP_CHOWN"
    assert linux["capabilities"] == list(capabilities.NAMES[: capabilities.last_cap() + 1])
    assert linux["cgroup"]["v1"] is True
    assert linux["cgroup"]["v2"] is True
    assert linux["cgroup"]["systemd"] is False
    assert linux["seccomp"]["enabled"] is True
    assert "SCMP_ACT_ALLOW" in linux["seccomp"]["actions"]
    assert "SCMP_CMP_EQ" in linux["seccomp"]["operators"]
    assert isinstance(f["annotations"]["io.github.ketch.version"], str)
    assert json.loads(json.dumps(f)) == f


def test_features_mount_options_are_all_parsed_as_flags() -> None:
    for option in features()["mountOptions"]:
        _, _, data = rootfs.parse_options((option,))
        assert data == "", option
