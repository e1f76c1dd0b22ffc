"""The `ketch` container verbs against the real kernel, with an image imported from Debian's busybox."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from enginefix import IMAGE, KETCH, Engine, engine_fixture  # noqa: F401  (the fixture `engine`)

pytestmark = pytest.mark.root


def _cgroups_of(container_id: str) -> list[Path]:
    from ketch.runtime.cgroups import hierarchies

    return [
        Path(p, "ketch", container_id)
        for p in hierarchies().values()
        if Path(p, "ketch", container_id).exists()
    ]


# --- run and its exit codes -------------------------------------------------------------------------


def test_run_rm_prints_output_and_leaves_nothing(engine: Engine) -> None:
    result = engine(
        "run", "--rm", "--name", "once", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3", check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert engine("ps", "-aq").stdout == ""
    assert not list((engine.root / "containers").iterdir())
    assert not (engine.root / "names" / "once").exists()
    assert not list((engine.root / "storage/snapshots/containers").iterdir())


def test_exit_codes_follow_docker(engine: Engine) -> None:
    assert engine("run", "--rm", "--pull", "never", "no/such:image", check=False).returncode == 125  # offline
    bad = engine("run", "--rm", "-m", "10xb", IMAGE, "true", check=False)
    assert bad.returncode == 125 and "10xb" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert engine("run", "--rm", IMAGE, "/bin/nonexistent", check=False).returncode == 127
    assert engine("run", "--rm", IMAGE, "/etc/passwd", check=False).returncode == 126
    engine("run", "-d", "--name", "killed", IMAGE, "sleep", "1000")
    engine("kill", "killed")
    assert engine("wait", "killed").stdout.strip() == "137"  # SIGKILL: 128 + 9
    engine("rm", "killed")
    assert engine("frobnicate", check=False).returncode == 125


def test_stdin_and_tty(engine: Engine) -> None:
    piped = engine("run", "--rm", "-i", IMAGE, "sh", "-c", "cat; echo done", input="through stdin\n")
    assert piped.stdout == "through stdin\ndone\n"
    assert engine("run", "--rm", IMAGE, "cat", input="ignored\n").stdout == ""  # no -i: stdin is /dev/null
    master, slave = pty.openpty()
    proc = subprocess.Popen([KETCH, "run", "--rm", "-it", IMAGE, "sh", "-c", "tty; read line; echo got $line"],
                            stdin=slave, stdout=slave, stderr=slave, env=engine.env)  # fmt: skip
    os.close(slave)
    output = _read_until(master, b"/dev/pts/0")
    os.write(master, b"typed\r")  # through our pty, the monitor, the container's pty
    output += _read_until(master, b"got typed")
    assert proc.wait(20) == 0
    os.close(master)
    assert b"/dev/pts/0" in output and b"got typed" in output


def _read_until(fd: int, wanted: bytes, timeout: float = 20) -> bytes:
    output = b""
    deadline = time.monotonic() + timeout
    while wanted not in output and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                output += os.read(fd, 4096)
            except OSError:
                break
    return output


def test_detached_lifecycle_logs_exec_stop_rm(engine: Engine) -> None:
    cid = engine("run", "-d", "--name", "ticker", IMAGE, "sh", "-c",
                 "trap 'echo bye; exit 0' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done").stdout.strip()  # fmt: skip
    assert len(cid) == 64
    ps = engine("ps").stdout.splitlines()
    assert (
        ps[0].split()[:2] == ["CONTAINER", "ID"]
        and cid[:12] in ps[1]
        and "Up " in ps[1]
        and "ticker" in ps[1]
    )
    engine.wait_for("ticker", lambda d: True)
    time.sleep(0.5)
    logs = engine("logs", "ticker").stdout.splitlines()
    assert logs[:2] == ["tick 0", "tick 1"]
    assert engine("logs", "--tail", "1", "ticker").stdout.count("\n") == 1
    stamped = engine("logs", "-t", "--tail", "1", "ticker").stdout
    assert stamped[:4].isdigit() and "T" in stamped.split()[0]
    assert engine("exec", "ticker", "sh", "-c", "echo in $(hostname)").stdout == f"in {cid[:12]}\n"
    assert engine("exec", "ticker", "sh", "-c", "exit 4", check=False).returncode == 4
    assert engine("exec", "-u", "nobody", "ticker", "id", "-u").stdout.strip() == "65534"
    refused = engine("rm", "ticker", check=False)
    assert refused.returncode == 1 and "running container" in refused.stderr
    assert engine("stop", "ticker").stdout.strip() == "ticker"
    doc = engine.inspect("ticker")
    assert doc["State"]["Status"] == "exited" and doc["State"]["ExitCode"] == 0
    assert "bye" in engine("logs", "ticker").stdout
    assert engine("wait", "ticker").stdout.strip() == "0"
    engine("rm", "ticker")
    assert not _cgroups_of(cid)


def test_inspect_fields(engine: Engine) -> None:
    # long-lived: under TCG (the v2 guest) a command can take seconds, and a short sleep may end
    # before the first inspect after `start` sees it running
    engine("create", "--name", "described", "-e", "A=1", "-l", "k=v", "-w", "/tmp", "--restart", "on-failure:2", IMAGE,
           "sleep", "1000")  # fmt: skip
    try:
        doc = engine.inspect("described")
        assert (
            doc["Name"] == "/described"
            and doc["State"]["Status"] == "created"
            and doc["State"]["Running"] is False
        )
        assert doc["Path"] == "sleep" and doc["Args"] == ["1000"]
        assert (
            "A=1" in doc["Config"]["Env"]
            and doc["Config"]["Labels"] == {"k": "v"}
            and doc["Config"]["WorkingDir"] == "/tmp"
        )
        assert doc["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
        assert doc["Image"].startswith("sha256:")
        engine("start", "described")
        doc = engine.wait_for("described", lambda d: d["State"]["Running"])
        assert doc["State"]["Pid"] > 0 and doc["State"]["StartedAt"] != "0001-01-01T00:00:00Z"
    finally:  # the module shares one engine: a leftover would fail the tests after this one
        engine("rm", "-f", "described", check=False)


def test_name_conflict_leaves_nothing_half_made(engine: Engine) -> None:
    engine("create", "--name", "taken", IMAGE, "true")
    before = sorted(p.name for p in (engine.root / "containers").iterdir())
    second = engine("run", "--name", "taken", IMAGE, "true", check=False)
    assert second.returncode == 125 and "already in use" in second.stderr
    assert sorted(p.name for p in (engine.root / "containers").iterdir()) == before
    engine("rm", "taken")


# --- restart policies and monitors -----------------------------------------------------------------------


def test_on_failure_restarts_exactly_n_times(engine: Engine) -> None:
    engine("run", "-d", "--name", "flaky", "--restart", "on-failure:3", IMAGE, "sh", "-c", "echo run; exit 2")
    doc = engine.wait_for("flaky", lambda d: d["State"]["Status"] == "exited" and d["RestartCount"] == 3, 30)
    assert doc["State"]["ExitCode"] == 2
    time.sleep(1)
    assert engine.inspect("flaky")["RestartCount"] == 3
    assert engine("logs", "flaky").stdout.count("run") == 4
    engine("rm", "flaky")


def test_always_restarts_after_the_init_is_killed(engine: Engine) -> None:
    engine("run", "-d", "--name", "phoenix", "--restart", "always", IMAGE, "sleep", "1000")
    first = engine.wait_for("phoenix", lambda d: d["State"]["Running"])["State"]["Pid"]
    os.kill(first, signal.SIGKILL)
    doc = engine.wait_for("phoenix", lambda d: d["State"]["Running"] and d["State"]["Pid"] != first, 20)
    assert doc["RestartCount"] == 1
    engine("stop", "-t", "1", "phoenix")  # a manual stop ends the policy
    time.sleep(0.5)
    assert engine.inspect("phoenix")["State"]["Status"] == "exited"
    engine("rm", "phoenix")


def test_ps_tells_the_truth_after_the_monitor_is_killed(engine: Engine) -> None:
    from ketch.engine.containers import ContainerStore

    cid = engine("run", "-d", "--name", "orphan", IMAGE, "sleep", "1000").stdout.strip()
    doc = engine.wait_for("orphan", lambda d: d["State"]["Running"])
    monitor = ContainerStore(str(engine.root)).raw_state(cid).monitor
    os.kill(monitor, signal.SIGKILL)
    time.sleep(0.2)
    assert engine.inspect("orphan")["State"]["Status"] == "running"  # its init lives on
    os.kill(doc["State"]["Pid"], signal.SIGKILL)
    doc = engine.wait_for("orphan", lambda d: not d["State"]["Running"], 10)
    assert doc["State"]["ExitCode"] == 255 and "Exited (255)" in engine("ps", "-a").stdout
    engine("rm", "-f", "orphan")


# --- Docker's defaults, checked from inside ----------------------------------------------------------------


def test_defaults_from_inside(engine: Engine) -> None:
    script = (
        "grep CapEff /proc/self/status; "
        "stat -c '%t,%T' /proc/keys; "
        "unshare -U true 2>/dev/null && echo unshare-allowed || echo unshare-denied; "
        "mount -t tmpfs t /tmp 2>/dev/null && echo mount-allowed || echo mount-denied; "
        "ls /dev; "
        "cat /etc/hostname; grep -c localhost /etc/hosts"
    )
    out = engine("run", "--rm", "--hostname", "box", IMAGE, "sh", "-c", script).stdout.split()
    assert out[:3] == ["CapEff:", "00000000a80425fb", "1,3"]  # /proc/keys masked by /dev/null (1,3)
    assert "unshare-denied" in out and "mount-denied" in out
    devices = set(out[out.index("mount-denied") + 1 : out.index("box")])
    assert devices <= {"console", "core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr",
                       "stdin", "stdout", "tty", "urandom", "zero"}  # fmt: skip
    assert out[-2:] == ["box", "2"]
    privileged = engine("run", "--rm", "--privileged", IMAGE, "grep", "CapEff", "/proc/self/status").stdout
    assert privileged.split()[1] != "00000000a80425fb"


def test_volumes_named_anonymous_and_bind(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "host.txt").write_text("from the host\n")
    out = engine("run", "--rm", "-v", f"{tmp_path}:/mnt:ro", "-v", "named:/data", IMAGE, "sh", "-c",
                 "cat /mnt/host.txt; cat /data/seed; echo more > /data/new; touch /mnt/x 2>/dev/null || echo ro").stdout  # fmt: skip
    assert out == "from the host\nfrom the image\nro\n"
    again = engine("run", "--rm", "-v", "named:/data", IMAGE, "cat", "/data/new").stdout
    assert again == "more\n"


def test_many_concurrent_detached_runs(engine: Engine) -> None:
    def run(i: int) -> str:
        return engine("run", "-d", IMAGE, "sleep", "1000", timeout=120).stdout.strip()

    with ThreadPoolExecutor(50) as pool:
        ids = list(pool.map(run, range(50)))
    assert len(set(ids)) == 50
    names = engine("ps", "--format", "{{.Names}}").stdout.split()
    assert len(names) == len(set(names)) == 50
    engine("rm", "-f", *ids, timeout=300)
    assert engine("ps", "-aq").stdout == ""


# --- verbs around a running container ------------------------------------------------------------------


def test_pause_top_stats_rename_update(engine: Engine) -> None:
    cid = engine("run", "-d", "--name", "busy", "-m", "64m", IMAGE, "sleep", "1000").stdout.strip()
    engine.wait_for("busy", lambda d: d["State"]["Running"])
    top = engine("top", "busy").stdout.splitlines()
    assert "PID" in top[0] and any("sleep 1000" in line for line in top[1:])
    engine("pause", "busy")
    assert engine.inspect("busy")["State"]["Paused"] is True and "(Paused)" in engine("ps").stdout
    assert engine("exec", "busy", "true", check=False).returncode != 0
    engine("unpause", "busy")
    assert engine.inspect("busy")["State"]["Status"] == "running"
    stats = engine("stats", "--no-stream", "busy").stdout.splitlines()
    assert stats[0].split()[:3] == ["CONTAINER", "ID", "NAME"] and "busy" in stats[1] and "64MiB" in stats[1]
    engine("rename", "busy", "renamed")
    assert (
        engine.inspect("renamed")["Name"] == "/renamed"
        and engine("inspect", "busy", check=False).returncode == 1
    )
    engine("update", "-m", "96m", "renamed")
    limit = engine("exec", "renamed", "sh", "-c",
                   "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes").stdout  # fmt: skip
    assert limit.strip() == str(96 << 20)
    assert engine.inspect("renamed")["HostConfig"]["Memory"] == 96 << 20
    engine("rm", "-f", "renamed")
    assert not _cgroups_of(cid)


def _attached_clients(engine: Engine, name: str) -> int:
    """Connections to the container's attach socket (its monitor's listener excluded)."""
    cid = engine.inspect(name)["Id"]
    path = str(engine.runroot / "attach" / cid[:32])
    return sum(1 for line in Path("/proc/net/unix").read_text().splitlines() if line.endswith(path)) - 1


def test_attach_and_container_prune(engine: Engine) -> None:
    engine("run", "-d", "--name", "talker", IMAGE, "sh", "-c",
           "while [ ! -e /tmp/go ]; do sleep 0.05; done; echo late; exit 5")  # fmt: skip
    attach = subprocess.Popen([KETCH, "attach", "talker"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              env=engine.env, text=True)  # fmt: skip
    deadline = time.monotonic() + 30
    while _attached_clients(engine, "talker") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    engine("exec", "talker", "sh", "-c", "echo > /tmp/go")  # the output comes only once we are attached
    out, _ = attach.communicate(timeout=30)
    assert (attach.returncode, out) == (5, "late\n")
    engine("create", "--name", "never-started", IMAGE, "true")
    engine("create", "--name", "kept", "--label", "keep=yes", IMAGE, "true")
    engine("run", "-d", "--name", "still-running", IMAGE, "sleep", "1000")
    kept = engine("container", "prune", "-f", "--filter", "until=1h").stdout  # all are younger
    assert "Deleted Containers:" not in kept
    pruned = engine("container", "prune", "-f", "--filter", "label!=keep=yes").stdout
    assert "Deleted Containers:" in pruned
    assert sorted(engine("ps", "-a", "--format", "{{.Names}}").stdout.split()) == ["kept", "still-running"]
    bad = engine("container", "prune", "-f", "--filter", "color=red", check=False)
    assert bad.returncode != 0 and "invalid filter" in bad.stderr
    pruned = engine("container", "prune", "-f", "--filter", "label=keep").stdout
    assert "Deleted Containers:" in pruned
    assert engine("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["still-running"]
    engine("rm", "-f", "still-running")


def test_healthcheck_turns_unhealthy_then_healthy(engine: Engine) -> None:
    # failures inside the start period do not count: "starting" holds for 8 s, even on a slow machine
    # (the TCG guest takes seconds between `run -d` and `ps`)
    engine("run", "-d", "--name", "checked", "--health-cmd", "cat /tmp/ok", "--health-interval", "0.2s",
           "--health-retries", "2", "--health-start-period", "8s", IMAGE, "sleep", "1000")  # fmt: skip
    assert "(health: starting)" in engine("ps").stdout
    doc = engine.wait_for("checked", lambda d: d["State"].get("Health", {}).get("Status") == "unhealthy", 60)
    assert doc["State"]["Health"]["FailingStreak"] >= 2 and doc["State"]["Health"]["Log"][-1]["ExitCode"] == 1
    assert "(unhealthy)" in engine("ps").stdout
    engine("exec", "checked", "sh", "-c", "echo fine > /tmp/ok")
    doc = engine.wait_for("checked", lambda d: d["State"]["Health"]["Status"] == "healthy")
    assert doc["State"]["Health"]["Log"][-1]["Output"] == "fine\n"
    engine("rm", "-f", "checked")


def test_init_reaps_and_forwards_signals(engine: Engine) -> None:
    if not (shutil.which("tini-static") or shutil.which("tini")):
        pytest.skip("needs tini (apt-get install tini)")
    out = engine("run", "--rm", "--init", IMAGE, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '").stdout
    assert out.startswith("/dev/init")
    engine("run", "-d", "--init", "--name", "inited", IMAGE, "sleep", "1000")
    start = time.monotonic()
    engine("stop", "-t", "5", "inited")  # tini forwards SIGTERM to sleep, which dies at once
    assert time.monotonic() - start < 4
    assert engine.inspect("inited")["State"]["ExitCode"] == 143
    engine("rm", "inited")


def test_detach_keys_leave_the_container_running(engine: Engine) -> None:
    for name, keys, typed in (("detach1", None, b"\x10\x11"), ("detach2", "ctrl-a,x", b"\x01x")):
        master, slave = pty.openpty()
        flags = ["--detach-keys", keys] if keys else []
        proc = subprocess.Popen([KETCH, "run", "-it", *flags, "--name", name, IMAGE, "sh", "-c",
                                 "echo ready; sleep 1000"], stdin=slave, stdout=slave, stderr=slave, env=engine.env)  # fmt: skip
        os.close(slave)
        try:
            assert b"ready" in _read_until(master, b"ready")
            os.write(
                master, b"\x10" + typed
            )  # a lone ctrl-p first: not the sequence, it goes on to the container
            assert proc.wait(20) == 0
        finally:
            proc.kill()
            os.close(master)
        assert engine.inspect(name)["State"]["Running"] is True
        engine("rm", "-f", name)


def test_exec_detach_keys_leave_the_process_running(engine: Engine) -> None:
    engine("run", "-d", "--name", "execdetach", IMAGE, "sleep", "1000")
    master, slave = pty.openpty()
    script = "echo ready; sleep 2; echo more output; echo done > /after"  # writes after we have left
    proc = subprocess.Popen([KETCH, "exec", "-it", "--detach-keys", "ctrl-a,x", "execdetach", "sh", "-c", script],
                            stdin=slave, stdout=slave, stderr=slave, env=engine.env)  # fmt: skip
    os.close(slave)
    try:
        assert b"ready" in _read_until(master, b"ready")
        os.write(master, b"\x01x")
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        os.close(master)  # our terminal goes: the process must not get its hangup
    deadline = time.monotonic() + 20
    while engine("exec", "execdetach", "cat", "/after", check=False).stdout != "done\n":
        assert time.monotonic() < deadline, "the detached exec did not go on"
        time.sleep(0.2)
    engine("rm", "-f", "execdetach")


def test_monitors_and_setup_children_import_nothing_the_supervisor_did_not(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A module first imported after the supervisor's fork costs every container private memory
    (monitor) or start time (setup child): the supervisor's preload list must cover them all."""
    from enginefix import running_engine

    engines = running_engine(tmp_path_factory, "trace")
    eng = next(engines)
    try:
        trace = eng.base / "trace"
        eng.env["KETCH_MONITOR_TRACE"] = str(trace)  # before the supervisor starts: it inherits it
        for network in ("none", "bridge"):
            eng("run", "--rm", "--network", network, IMAGE, "true")
        eng("run", "-d", "--name", "traced", "--health-cmd", "true", "--health-interval", "1s", IMAGE,
            "sleep", "100")  # fmt: skip
        eng("exec", "traced", "true")
        eng("rm", "-f", "traced")
        files = list(eng.base.glob("trace.*"))
        assert len(files) >= 6  # three monitors and three setup children
        extra = {f.name: f.read_text().split() for f in files if f.read_text().strip()}
        assert not extra, f"imported after the fork: {extra}"
    finally:
        next(engines, None)
