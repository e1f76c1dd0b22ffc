"""linux.resources on the real cgroup hierarchy: limits are written, seen from inside, and updated live."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import Oci

from ketch.runtime.cgroups import hierarchies

pytestmark = pytest.mark.root

V2 = list(hierarchies()) == [""]


def edit_resources(resources: dict[str, Any]) -> Any:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["resources"] = resources

    return edit


def cgroup_file(oci: Oci, cid: str, controller: str, v1: str, v2: str) -> str:
    state = json.loads((oci.root / cid / "state.json").read_text())
    dirs = state["cgroup_dirs"]
    d = dirs[""] if V2 else next(v for k, v in dirs.items() if controller in k.split(","))
    return (Path(d) / (v2 if V2 else v1)).read_text().strip()


def test_limits_are_visible_inside_the_container(oci: Oci) -> None:
    resources = {
        "memory": {"limit": 64 << 20},
        "pids": {"limit": 12},
        "cpu": {"quota": 50000, "period": 100000},
    }
    if V2:
        script = "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max"
        expected = [str(64 << 20), "12", "50000", "100000"]
    else:
        script = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max "
                  "/sys/fs/cgroup/cpu/cpu.cfs_quota_us")  # fmt: skip
        expected = [str(64 << 20), "12", "50000"]
    out = oci.run(["sh", "-c", script], edit_resources(resources), check=True).stdout.split()
    assert out == expected


def test_pids_limit_stops_a_fork_loop(oci: Oci) -> None:
    # builtins only after the loop: with the limit reached, nothing else can fork
    count = "/sys/fs/cgroup/pids.current" if V2 else "/sys/fs/cgroup/pids/pids.current"
    script = f"(for i in $(seq 1 30); do sleep 5 & done); read n < {count}; echo $n; kill -9 -1; exit 0"
    proc = oci.run(["sh", "-c", script], edit_resources({"pids": {"limit": 8}}))
    # the subshell that forked stopped at the limit (8 with it), then exited: 7 remain of the 31 asked
    assert proc.stdout.split() == ["7"], proc.stderr
    assert "can't fork" in proc.stderr or "Resource temporarily unavailable" in proc.stderr


def test_device_rules_deny_what_the_spec_denies(oci: Oci) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["devices"] = [
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666}
        ]

    proc = oci.run(["sh", "-c", "cat /dev/fuse; echo rc=$?; echo ok > /dev/null && echo null-works"], edit)
    assert "Operation not permitted" in proc.stderr
    assert "rc=1" in proc.stdout and "null-works" in proc.stdout


def test_update_changes_limits_live(oci: Oci, tmp_path: Path) -> None:
    cid = oci.create(["sleep", "100"], edit_resources({"pids": {"limit": 10}}))
    oci("start", cid, check=True)
    assert cgroup_file(oci, cid, "pids", "pids.max", "pids.max") == "10"
    oci("update", "--pids-limit", "20", cid, check=True)
    assert cgroup_file(oci, cid, "pids", "pids.max", "pids.max") == "20"
    (tmp_path / "r.json").write_text(json.dumps({"memory": {"limit": 100 << 20}}))
    oci("update", "--resources", str(tmp_path / "r.json"), cid, check=True)
    assert cgroup_file(oci, cid, "memory", "memory.limit_in_bytes", "memory.max") == str(100 << 20)


def test_a_limit_the_kernel_refuses_fails_create_naming_the_field(oci: Oci) -> None:
    proc = oci.run(["true"], edit_resources({"cpu": {"cpus": "999999"}}))
    assert proc.returncode == 1
    assert proc.stderr.startswith("ketch-oci: linux.resources.cpu.cpus:"), proc.stderr
    assert not (oci.root / oci.ids[-1]).exists()


def _run_to_stop(oci: Oci, args: list[str], resources: dict[str, Any]) -> str:
    import time

    cid = oci.create(args, edit_resources(resources))
    oci("start", cid, check=True)
    deadline = time.monotonic() + 30
    while oci.state(cid)["status"] != "stopped":
        assert time.monotonic() < deadline, "container did not stop"
        time.sleep(0.05)
    return cid


def test_a_memory_hog_is_oom_killed_and_reported(oci: Oci) -> None:
    # dd allocates its 64 MiB block at once: over the 24 MiB limit, the kernel kills it
    cid = _run_to_stop(oci, ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
                       {"memory": {"limit": 24 << 20, "swap": 24 << 20}})  # fmt: skip
    stats = json.loads(oci("events", "--stats", cid, check=True).stdout)
    assert stats["type"] == "stats" and stats["id"] == cid
    assert stats["data"]["memory"]["oomKills"] >= 1
    assert stats["data"]["memory"]["usage"]["limit"] == 24 << 20


def test_an_oom_killed_init_makes_run_exit_137(oci: Oci) -> None:
    hog = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
    proc = oci.run(hog, edit_resources({"memory": {"limit": 24 << 20, "swap": 24 << 20}}))
    assert proc.returncode == 137, proc.stderr


def test_half_a_cpu_quota_gives_about_half_a_cpu(oci: Oci) -> None:
    busy = ["sh", "-c", "timeout 2 sh -c 'while :; do :; done'; exit 0"]
    cid = _run_to_stop(oci, busy, {"cpu": {"quota": 50000, "period": 100000}})
    data = json.loads(oci("events", "--stats", cid, check=True).stdout)["data"]["cpu"]
    seconds = data["usage"]["total"] / 1e9
    assert 0.7 <= seconds <= 1.25, f"2 s of a busy loop at quota 0.5 used {seconds:.2f} s of CPU"
    assert data["throttling"]["throttledPeriods"] > 0


def _host_cgroups(pid: int) -> set[str]:
    """The cgroup paths of `pid` in every hierarchy, as the host sees them."""
    return {line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()}


def test_init_and_exec_join_every_hierarchy_without_a_procs_write(oci: Oci) -> None:
    """The setup child is born into the v2 cgroup (clone3) and moves itself into each v1 one."""
    cid = oci.create(["sleep", "30"])
    state = oci.state(cid)
    expected = {json.loads((oci.root / cid / "state.json").read_text())["cgroup_path"]}
    assert _host_cgroups(state["pid"]) == expected
    oci("start", cid, check=True)
    pid_file = oci.root.parent / "exec.pid"
    oci("exec", "--detach", "--pid-file", str(pid_file), cid, "sleep", "30", check=True)
    assert _host_cgroups(int(pid_file.read_text())) == expected


def test_without_clone3_the_parent_moves_the_child_in(oci: Oci) -> None:
    """Where clone3 is refused (seccomp's ENOSYS, old kernels), cgroup.procs is written instead."""
    bundle = oci.bundle(["sleep", "30"])
    cid = oci.new_id()
    refuse = (
        "import sys; import ketch.linux.syscalls as sc\n"
        "def refuse(*a): raise OSError(38, 'clone3: refused')\n"
        "sc.clone3_fork = refuse\n"
        "from ketch.cli.oci import main\n"
        f"sys.exit(main(['--root', {str(oci.root)!r}, 'create', '--bundle', {str(bundle)!r}, {cid!r}]))\n"
    )
    with tempfile.TemporaryFile() as err:
        proc = subprocess.run([sys.executable, "-c", refuse], stdout=err, stderr=err, timeout=60, check=False)
        err.seek(0)
        assert proc.returncode == 0, err.read().decode()
    expected = {json.loads((oci.root / cid / "state.json").read_text())["cgroup_path"]}
    assert _host_cgroups(oci.state(cid)["pid"]) == expected
