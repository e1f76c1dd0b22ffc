"""ketch-oci on the real kernel: each field of config.json is checked from inside the container."""

from __future__ import annotations

import os
from typing import Any

import pytest
from conftest import Oci

pytestmark = pytest.mark.root


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def test_isolation_hostname_pid1_network_and_mounts(oci: Oci) -> None:
    out = oci.run(
        sh("hostname; ps -o pid,args; ip -o link; cat /proc/self/mountinfo; ls /"), check=True
    ).stdout
    lines = out.splitlines()
    assert lines[0] == "ketch"
    ps = [line.split(None, 1) for line in lines[2:4]]
    assert ps[0] == ["1", "sh -c " + "hostname; ps -o pid,args; ip -o link; cat /proc/self/mountinfo; ls /"]
    links = [line for line in lines if ": <" in line]
    assert len(links) == 1 and links[0].startswith("1: lo:")
    mounts = [line for line in lines if " - " in line]
    assert mounts[0].split()[4] == "/", "the root of the container is its own mount"
    assert not any("/work" in m for m in mounts)
    assert "work" not in lines[-20:]


def test_namespaces_differ_from_the_host(oci: Oci) -> None:
    kinds = ["pid", "net", "mnt", "ipc", "uts", "cgroup"]
    out = oci.run(
        sh("for n in " + " ".join(kinds) + "; do readlink /proc/self/ns/$n; done"), check=True
    ).stdout
    inside = out.split()
    host = [os.readlink(f"/proc/self/ns/{n}") for n in kinds]
    assert len(inside) == len(kinds)
    for kind, a, b in zip(kinds, inside, host, strict=True):
        assert a != b, f"{kind} namespace is the host's"


def test_capabilities_are_exactly_the_spec_sets(oci: Oci) -> None:
    out = oci.run(sh("grep Cap /proc/self/status"), check=True).stdout
    caps = dict(line.split(":\t") for line in out.splitlines())
    # CAP_AUDIT_WRITE (29), CAP_KILL (5), CAP_NET_BIND_SERVICE (10)
    expected = f"{(1 << 29) | (1 << 5) | (1 << 10):016x}"
    assert caps["CapEff"] == expected and caps["CapBnd"] == expected and caps["CapPrm"] == expected


def test_seccomp_denies_with_the_configured_errno(oci: Oci) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}],
        }
        c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})

    proc = oci.run(sh("mkdir /tmp/x; echo rc=$?; touch /tmp/y && echo touched"), edit)
    assert "Function not implemented" in proc.stderr  # ENOSYS is 38
    assert "rc=1" in proc.stdout and "touched" in proc.stdout


def test_masked_paths_read_empty_and_readonly_paths_refuse_writes(oci: Oci) -> None:
    script = "wc -c < /proc/keys; ls /sys/firmware | wc -l; echo x > /proc/sys/kernel/hostname; echo rc=$?"
    proc = oci.run(sh(script))
    lines = proc.stdout.split()
    assert lines[0] == "0" and lines[1] == "0"
    assert "rc=1" in proc.stdout
    assert "Read-only file system" in proc.stderr


def test_readonly_root(oci: Oci) -> None:
    proc = oci.run(sh("touch /newfile; echo rc=$?"))
    assert "rc=1" in proc.stdout and "Read-only file system" in proc.stderr


def test_rlimits_user_groups_cwd_env(oci: Oci) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]
        c["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [1002, 1003]}
        c["process"]["cwd"] = "/tmp"
        c["process"]["env"].append("GREETING=hello there")

    out = oci.run(
        sh('ulimit -n; ulimit -Hn; id; pwd; echo "$GREETING"'), edit, check=True
    ).stdout.splitlines()
    assert out[0] == "123" and out[1] == "456"
    assert out[2] == "uid=1000 gid=1001 groups=1002,1003"
    assert out[3] == "/tmp"
    assert out[4] == "hello there"


def test_exit_code_is_the_containers(oci: Oci) -> None:
    assert oci.run(sh("exit 7")).returncode == 7


def test_run_reports_death_by_signal_as_128_plus_n(oci: Oci) -> None:
    import subprocess
    import time

    from conftest import KETCH_OCI

    bundle, cid = oci.bundle(["sleep", "1000"]), oci.new_id()
    runner = subprocess.Popen([KETCH_OCI, "--root", str(oci.root), "run", "--bundle", str(bundle), cid])
    deadline = time.monotonic() + 10
    while oci("state", cid).returncode != 0 or oci.state(cid)["status"] != "running":
        assert time.monotonic() < deadline, "container never ran"
        time.sleep(0.02)
    oci("kill", cid, "KILL", check=True)
    assert runner.wait(timeout=10) == 137


def test_program_not_found_fails_create_clearly(oci: Oci) -> None:
    proc = oci.run(["/no/such/program"])
    assert proc.returncode == 1
    assert "no such file or directory" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert oci("list", "-q").stdout == ""


def test_no_host_fd_leaks_into_the_container(oci: Oci) -> None:
    r, w = os.pipe()
    try:
        proc = oci.run(sh("ls /proc/self/fd"), pass_fds=(r, w), check=True)
    finally:
        os.close(r)
        os.close(w)
    fds = sorted(int(x) for x in proc.stdout.split())
    assert fds == [0, 1, 2, 3], f"unexpected descriptors inside the container: {fds}"  # 3: ls's own dir fd


def test_preserve_fds_passes_exactly_n(oci: Oci, tmp_path: Any) -> None:
    import shlex
    import subprocess

    from conftest import KETCH_OCI

    payload = tmp_path / "payload"
    payload.write_text("through fd 3\n")
    bundle = oci.bundle(sh("cat /proc/self/fd/3; ls /proc/self/fd"))
    cmd = [
        KETCH_OCI,
        "--root",
        str(oci.root),
        "run",
        "--preserve-fds",
        "1",
        "--bundle",
        str(bundle),
        oci.new_id(),
    ]
    # the shell gives ketch-oci the file as fd 3 and fd 4; only 3 is preserved
    line = f"exec {shlex.join(cmd)} 3<{shlex.quote(str(payload))} 4<{shlex.quote(str(payload))}"
    proc = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=60, check=False)
    lines = proc.stdout.splitlines()
    assert lines[0] == "through fd 3", proc.stderr
    assert sorted(int(x) for x in lines[1:]) == [0, 1, 2, 3, 4]  # 4 is ls's own directory fd


def test_devices_and_dev_links(oci: Oci) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["devices"] = [
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o640}
        ]

    out = oci.run(sh("ls -l /dev/null /dev/fuse /dev/ptmx /dev/fd; echo hi > /dev/null && echo ok"), edit,
                  check=True).stdout  # fmt: skip
    assert "crw-rw-rw-" in out.splitlines()[0] or "crw-rw-rw-" in out
    assert "crw-r-----" in out and "10, 229" in out
    assert "/dev/ptmx -> pts/ptmx" in out and "/dev/fd -> /proc/self/fd" in out
    assert out.rstrip().endswith("ok")


def test_user_namespace_with_mappings(oci: Oci, busybox_rootfs: Any) -> None:
    import shutil
    import tempfile

    # the mapped root is an unprivileged host user: it needs a rootfs whose parents it can traverse
    top = tempfile.mkdtemp(prefix="ketch-userns-")
    os.chmod(top, 0o755)
    rootfs = os.path.join(top, "rootfs")
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)

    def edit(c: dict[str, Any]) -> None:
        c["root"]["path"] = rootfs
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["mounts"] = [m for m in c["mounts"] if m["destination"] not in ("/sys", "/sys/fs/cgroup")]

    try:
        out = oci.run(
            sh("cat /proc/self/uid_map; id -u; readlink /proc/self/ns/user"), edit, check=True
        ).stdout.split()
    finally:
        shutil.rmtree(top)
    assert out[:3] == ["0", "100000", "65536"]
    assert out[3] == "0"
    assert out[4] != os.readlink("/proc/self/ns/user")


def test_sysctl_and_domainname(oci: Oci) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
        c["domainname"] = "example.test"
        c["linux"]["readonlyPaths"] = []

    out = oci.run(sh("cat /proc/sys/net/ipv4/ip_forward; cat /proc/sys/kernel/domainname"), edit, check=True)
    assert out.stdout.split() == ["1", "example.test"]


def test_broken_config_names_the_field_and_leaves_nothing(oci: Oci) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["namespaces"].append({"type": "bogus"})

    proc = oci.run(["true"], edit)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "ketch-oci: linux.namespaces[6].type: unknown namespace 'bogus'"
    assert not (oci.root / oci.ids[-1]).exists()


def test_missing_rootfs_leaves_no_cgroup(oci: Oci) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["root"]["path"] = "/nonexistent/rootfs"

    proc = oci.run(["true"], edit)
    assert proc.returncode == 1 and "rootfs /nonexistent/rootfs does not exist" in proc.stderr
    assert not (oci.root / oci.ids[-1]).exists()


def test_oom_score_adj_and_shared_root_propagation(oci: Oci) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["process"]["oomScoreAdj"] = 500
        c["linux"]["rootfsPropagation"] = "shared"

    out = oci.run(
        sh("cat /proc/self/oom_score_adj; awk '$5 == \"/\"' /proc/self/mountinfo"), edit, check=True
    )
    lines = out.stdout.splitlines()
    assert lines[0] == "500"
    assert "shared:" in lines[1]


def test_seccomp_denying_getcwd_does_not_break_setup(oci: Oci) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["process"]["noNewPrivileges"] = False
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                 "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]}  # fmt: skip

    proc = oci.run(sh("pwd -P; echo done"), edit)
    assert proc.stdout.splitlines() == ["", "done"], proc.stderr  # busybox pwd prints nothing when denied


def test_without_a_mount_namespace_only_the_root_changes(oci: Oci) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["namespaces"] = [
            ns for ns in c["linux"]["namespaces"] if ns["type"] not in ("mount", "pid")
        ]
        c["linux"]["maskedPaths"] = []
        c["linux"]["readonlyPaths"] = []

    proc = oci.run(sh("readlink /proc/1/ns/mnt 2>&1; ls /bin/busybox"), edit)
    assert "/bin/busybox" in proc.stdout, proc.stderr
    assert "no mount namespace" in proc.stderr  # the warning


def test_join_a_mount_namespace_by_path(oci: Oci) -> None:
    import subprocess

    holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "100"])
    try:
        ns = f"/proc/{holder.pid}/ns/mnt"
        for _ in range(100):
            if os.readlink(ns) != os.readlink("/proc/self/ns/mnt"):
                break
            import time

            time.sleep(0.01)

        def edit(c: dict[str, Any]) -> None:
            c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "mount"]
            c["linux"]["namespaces"].append({"type": "mount", "path": ns})

        cid = oci.create(["sleep", "100"], edit)
        pid = oci.state(cid)["pid"]
        assert os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink(ns)
        assert os.path.exists(f"/proc/{pid}/root/bin/busybox")
    finally:
        holder.kill()
        holder.wait()


def test_time_namespace_with_a_boottime_offset(oci: Oci) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["namespaces"].append({"type": "time"})
        c["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 1000, "nanosecs": 0}}

    def host_uptime() -> int:
        with open("/proc/uptime") as f:
            return int(f.read().split(".")[0])

    # The container reads its uptime between these two host reads, so it
    # lies between them once shifted by the offset (whole seconds, floored).
    before = host_uptime()
    out = oci.run(sh("cut -d. -f1 /proc/uptime"), edit, check=True).stdout
    after = host_uptime()
    assert 86400 * 1000 + before <= int(out) <= 86400 * 1000 + after
