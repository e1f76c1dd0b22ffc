"""The cgroup v2 device program on the real kernel: attached to a cgroup2 directory, it decides opens."""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

import pytest

from ketch.linux import bpf
from ketch.runtime.devicefilter import program, rules_from_spec
from ketch.runtime.resources import DEFAULT_DEVICE_RULES

pytestmark = pytest.mark.root


def cgroup2_root() -> Path:
    for candidate in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (candidate / "cgroup.procs").exists() and not (candidate / "cgroup.clone_children").exists():
            return candidate
    pytest.skip("no cgroup2 hierarchy mounted")


def opens_in_cgroup(rules: list[dict[str, object]], attempts: list[tuple[str, int]]) -> list[int]:
    """errno (0 for success) of each open, made by a child that lives in a filtered cgroup."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    cg = cgroup2_root() / f"ketch-devtest-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    try:
        fd = bpf.load_device_program(program(rules_from_spec(rules, DEFAULT_DEVICE_RULES)))
        try:
            bpf.attach_device_program(fd, str(cg))
        finally:
            os.close(fd)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child waits until it is in the cgroup, then reports one errno per byte
            os.read(r, 1)
            results = []
            for path, flags in attempts:
                try:
                    os.close(os.open(path, flags))
                    results.append(0)
                except OSError as exc:
                    results.append(exc.errno)
            os.write(w, bytes(results))
            os._exit(0)
        (cg / "cgroup.procs").write_text(str(pid))
        os.write(w, b"g")
        os.waitpid(pid, 0)
        os.close(w)
        out = os.read(r, 64)
        os.close(r)
        return list(out)
    finally:
        cg.rmdir()


def test_deny_all_keeps_the_defaults_and_blocks_the_rest() -> None:
    if not os.path.exists("/dev/kvm") and not os.path.exists("/dev/fuse"):
        pytest.skip("needs a device outside the default list (/dev/kvm or /dev/fuse)")
    other = "/dev/kvm" if os.path.exists("/dev/kvm") else "/dev/fuse"
    got = opens_in_cgroup([{"allow": False, "access": "rwm"}],
                          [("/dev/null", os.O_RDWR), ("/dev/zero", os.O_RDONLY), (other, os.O_RDWR)])  # fmt: skip
    assert got == [0, 0, errno.EPERM]


def test_an_allow_rule_grants_only_its_access() -> None:
    if not os.path.exists("/dev/kvm"):
        pytest.skip("needs /dev/kvm")
    major, minor = os.major(os.stat("/dev/kvm").st_rdev), os.minor(os.stat("/dev/kvm").st_rdev)
    rules = [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": major, "minor": minor, "access": "r"},
    ]
    assert opens_in_cgroup(rules, [("/dev/kvm", os.O_RDONLY), ("/dev/kvm", os.O_RDWR)]) == [0, errno.EPERM]
