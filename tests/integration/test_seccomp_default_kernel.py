"""Docker's default seccomp profile on the real kernel: compiled by libseccomp, enforced in ketch-oci."""

from __future__ import annotations

import ctypes.util
from typing import Any

import pytest
from conftest import Oci

from ketch.engine.seccomp_default import DEFAULT_CAPABILITIES, default_profile
from ketch.oci.runtime import Seccomp
from ketch.runtime import seccomp as sc

needs_libseccomp = pytest.mark.skipif(not ctypes.util.find_library("seccomp"), reason="needs libseccomp")

EVERY_CAP = ("CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_BOOT", "CAP_SYS_MODULE", "CAP_BPF", "CAP_PERFMON",
             "CAP_DAC_READ_SEARCH", "CAP_SYS_TIME", "CAP_SYS_NICE", "CAP_SYSLOG")  # fmt: skip

# each probe prints "<name>=<exit status>" after its own output
PROBES = """
echo ok
ls / >/dev/null; echo ls=$?
sh -c 'sleep 0.1 & wait $!'; echo background=$?
unshare -U true 2>&1; echo unshare=$?
mount -t tmpfs x /tmp 2>&1; echo mount=$?
hostname seccomp-test 2>&1; echo hostname=$?
"""


def statuses(out: str) -> dict[str, int]:
    pairs = (line.split("=", 1) for line in out.splitlines() if "=" in line and " " not in line)
    return {key: int(value) for key, value in pairs}


def with_profile(caps: tuple[str, ...], process_caps: tuple[str, ...] | None = None) -> Any:
    """An edit of config.json: seccomp generated for ``caps``; the process holds ``process_caps`` if given."""

    def edit(config: dict[str, Any]) -> None:
        if process_caps is not None:
            sets = config["process"]["capabilities"]
            for kind in ("bounding", "effective", "permitted"):
                sets[kind] = list(process_caps)
        config["linux"]["seccomp"] = default_profile(caps)

    return edit


@needs_libseccomp
@pytest.mark.parametrize("caps", [(), DEFAULT_CAPABILITIES, DEFAULT_CAPABILITIES + EVERY_CAP])
def test_profile_compiles_with_this_libseccomp(caps: tuple[str, ...]) -> None:
    description = sc.describe(Seccomp.from_json(default_profile(caps)))
    program = sc.compile_program(description)
    assert program.bpf and len(program.bpf) % 8 == 0


@pytest.mark.root
def test_bundle_caps_profile_denies_namespaces_and_mounts(oci: Oci) -> None:
    bounding = tuple(oci.base["process"]["capabilities"]["bounding"])
    proc = oci.run(["sh", "-c", PROBES], with_profile(bounding), check=True)
    got = statuses(proc.stdout)
    assert proc.stdout.startswith("ok\n")
    assert got["ls"] == 0 and got["background"] == 0
    assert got["unshare"] != 0 and "Operation not permitted" in proc.stdout  # unshare(2): EPERM
    assert got["mount"] != 0 and got["hostname"] != 0


@pytest.mark.root
def test_the_filter_not_the_capabilities_denies(oci: Oci) -> None:
    # the process holds CAP_SYS_ADMIN, but the profile is Docker's for its default capabilities
    process_caps = (*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN")
    denied = oci.run(["sh", "-c", PROBES], with_profile(DEFAULT_CAPABILITIES, process_caps), check=True)
    got = statuses(denied.stdout)
    assert got["ls"] == 0 and got["background"] == 0
    assert got["unshare"] != 0 and got["mount"] != 0 and got["hostname"] != 0
    allowed = oci.run(["sh", "-c", PROBES], with_profile(process_caps, process_caps), check=True)
    assert statuses(allowed.stdout) == {"ls": 0, "background": 0, "unshare": 0, "mount": 0, "hostname": 0}
