"""ketch-oci's lifecycle verbs: create, start, state, kill, delete, exec, ps, list, pause, resume, hooks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import KETCH_OCI, Oci

pytestmark = pytest.mark.root


def wait_for(predicate: Any, timeout: float = 30.0) -> None:  # a TCG guest is slow; passing is not
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_create_start_kill_delete(oci: Oci) -> None:
    cid = oci.create(["sleep", "1000"])
    state = oci.state(cid)
    assert state["status"] == "created" and state["pid"] > 0 and state["ociVersion"].startswith("1.")
    assert Path(f"/proc/{state['pid']}").exists()
    assert oci("start", cid).returncode == 0
    assert oci.state(cid)["status"] == "running"
    second = oci("start", cid)
    assert second.returncode == 1 and "cannot start a container that is running" in second.stderr
    refused = oci("delete", cid)
    assert refused.returncode == 1 and "not stopped" in refused.stderr
    assert oci("kill", cid, "KILL").returncode == 0
    wait_for(lambda: oci.state(cid)["status"] == "stopped")
    assert "pid" not in oci.state(cid)
    assert oci("delete", cid).returncode == 0
    gone = oci("state", cid)
    assert gone.returncode == 1 and "does not exist" in gone.stderr


def test_a_second_create_with_a_taken_id_fails_and_leaves_the_first_whole(oci: Oci) -> None:
    """Even a stopped first container (its cgroup empty, kept until delete) keeps its cgroup."""
    cid = oci.create(["true"])
    dirs = json.loads((oci.root / cid / "state.json").read_text())["cgroup_dirs"]
    assert oci("start", cid).returncode == 0
    wait_for(lambda: oci.state(cid)["status"] == "stopped")
    again = oci("create", "--bundle", str(oci.bundle(["true"])), cid)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert all(Path(d).is_dir() for d in dirs.values())
    assert oci("delete", cid).returncode == 0
    assert not any(Path(d).exists() for d in dirs.values())


def test_delete_of_a_created_container_needs_force_and_kills_its_init(oci: Oci) -> None:
    cid = oci.create(["true"])
    pid = oci.state(cid)["pid"]
    refused = oci("delete", cid)
    assert refused.returncode == 1 and "not stopped: created" in refused.stderr
    assert oci.state(cid)["status"] == "created"
    assert oci("delete", "--force", cid).returncode == 0
    assert not Path(f"/proc/{pid}/stat").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_exec_ps_list_and_pid_file(oci: Oci, tmp_path: Path) -> None:
    cid = oci.create(["sleep", "1000"])
    oci("start", cid, check=True)
    out = oci("exec", cid, "sh", "-c", "echo in $(hostname); id -u; exit 3")
    assert out.returncode == 3 and out.stdout.split() == ["in", "ketch", "0"]
    pid_file = tmp_path / "exec.pid"
    oci("exec", "--detach", "--pid-file", str(pid_file), cid, "sleep", "1000", check=True)
    exec_pid = int(pid_file.read_text())
    pids = json.loads(oci("ps", "--format", "json", cid, check=True).stdout)
    assert exec_pid in pids and oci.state(cid)["pid"] in pids
    listing = oci("list", check=True).stdout.splitlines()
    assert listing[0].split()[:3] == ["ID", "PID", "STATUS"]
    assert any(line.split()[0] == cid and "running" in line for line in listing[1:])
    assert json.loads(oci("list", "--format", "json", check=True).stdout)[0]["id"] == cid


def test_exec_process_json_user_and_env(oci: Oci, tmp_path: Path) -> None:
    cid = oci.create(["sleep", "1000"])
    oci("start", cid, check=True)
    process = {
        "args": ["sh", "-c", "id; echo $X"],
        "cwd": "/",
        "env": ["X=from-json"],
        "user": {"uid": 42, "gid": 43},
    }
    (tmp_path / "p.json").write_text(json.dumps(process))
    out = oci("exec", "--process", str(tmp_path / "p.json"), cid, check=True).stdout.splitlines()
    assert out == ["uid=42 gid=43 groups=43", "from-json"] or out[0].startswith("uid=42 gid=43")


def test_pause_and_resume(oci: Oci) -> None:
    cid = oci.create(["sleep", "1000"])
    oci("start", cid, check=True)
    oci("pause", cid, check=True)
    assert oci.state(cid)["status"] == "paused"
    assert oci("pause", cid).returncode == 1
    oci("resume", cid, check=True)
    assert oci.state(cid)["status"] == "running"


def test_hooks_get_the_state_on_stdin(oci: Oci, tmp_path: Path) -> None:
    out = tmp_path / "hooks"
    out.mkdir()

    def hook(name: str) -> dict[str, Any]:
        return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}/{name}"]}

    def edit(c: dict[str, Any]) -> None:
        c["hooks"] = {k: [hook(k)] for k in ("prestart", "createRuntime", "poststart", "poststop")}

    cid = oci.create(["true"], edit)
    created = json.loads((out / "createRuntime").read_text())
    assert created["id"] == cid and created["pid"] == oci.state(cid)["pid"]
    assert (out / "prestart").exists()
    oci("start", cid, check=True)
    assert json.loads((out / "poststart").read_text())["status"] == "running"
    wait_for(lambda: oci.state(cid)["status"] == "stopped")
    oci("delete", cid, check=True)
    assert json.loads((out / "poststop").read_text())["status"] == "stopped"


def test_failing_hook_fails_create_and_leaves_nothing(oci: Oci) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["hooks"] = {"createRuntime": [{"path": "/bin/false"}]}

    bundle = oci.bundle(["true"], edit)
    cid = oci.new_id()
    proc = oci("create", "--bundle", str(bundle), cid)
    assert proc.returncode == 1 and "createRuntime hook #0 (/bin/false) exited with status 1" in proc.stderr
    assert not (oci.root / cid).exists()


def test_kill_9_of_create_is_cleaned_by_delete_force(oci: Oci, tmp_path: Path) -> None:
    marker = tmp_path / "hook-started"

    def edit(c: dict[str, Any]) -> None:
        c["hooks"] = {
            "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", f"touch {marker}; sleep 60"]}]
        }

    bundle = oci.bundle(["true"], edit)
    cid = oci.new_id()
    proc = subprocess.Popen([KETCH_OCI, "--root", str(oci.root), "create", "--bundle", str(bundle), cid],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(marker.exists)
        state = json.loads((oci.root / cid / "state.json").read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        subprocess.run(["pkill", "-f", f"touch {marker}"], check=False)
    assert oci("delete", "--force", cid).returncode == 0
    assert not (oci.root / cid).exists()
    assert not any(Path(d).exists() for d in state["cgroup_dirs"].values())
    if state["pid"]:
        wait_for(lambda: not Path(f"/proc/{state['pid']}").exists())


def test_an_emptied_state_file_is_reported_and_cleaned_by_delete_force(oci: Oci) -> None:
    """The state is not fsynced (it dies with its processes): a host crash may leave it empty."""
    cid = oci.create(["sleep", "100"])
    state = oci.state(cid)
    (oci.root / cid / "state.json").write_text("")
    try:
        shown = oci("state", cid)
        assert shown.returncode != 0 and "unreadable" in shown.stderr
        assert len(shown.stderr.strip().splitlines()) == 1
        assert oci("delete", "--force", cid).returncode == 0  # the dir, and the init in its default cgroup
        assert not (oci.root / cid).exists()
    finally:
        if Path(f"/proc/{state['pid']}").exists():
            os.kill(state["pid"], signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{state['pid']}").exists())


def _recv_pty(conn: socket.socket) -> tuple[bytes, int]:
    import array

    fds = array.array("i")
    msg, anc, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
    assert anc, "no descriptor came through the console socket"
    fds.frombytes(anc[0][2][: fds.itemsize])
    return msg, fds[0]


def _read_all(fd: int) -> str:
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO once the last slave fd closes
            break
        if not chunk:
            break
        output += chunk
    return output.decode()


def test_console_socket_receives_the_pty(oci: Oci, tmp_path: Path) -> None:
    path = str(tmp_path / "console.sock")

    def edit(c: dict[str, Any]) -> None:
        c["process"]["terminal"] = True
        c["process"]["consoleSize"] = {"height": 33, "width": 101}

    bundle = oci.bundle(["sh", "-c", "tty; stty size; ls -l /dev/console; sleep 0.3"], edit)
    cid = oci.new_id()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server, open(tmp_path / "err", "w+") as err:
        server.bind(path)
        server.listen(1)
        creator = subprocess.Popen([KETCH_OCI, "--root", str(oci.root), "create", "--bundle", str(bundle),
                                    "--console-socket", path, cid], stderr=err)  # fmt: skip
        server.settimeout(30)
        conn, _ = server.accept()
        with conn:
            msg, master = _recv_pty(conn)
        assert creator.wait(timeout=30) == 0, err.read()
    try:
        oci("start", cid, check=True)
        text = _read_all(master)
    finally:
        os.close(master)
    assert msg == b"/dev/ptmx"
    assert "/dev/pts/0" in text and "33 101" in text
    assert "/dev/console" in text


def test_pause_stops_a_counter_that_resume_continues(oci: Oci, tmp_path: Path) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["mounts"].append(
            {"destination": "/out", "type": "bind", "source": str(tmp_path), "options": ["rbind"]}
        )

    cid = oci.create(["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /out/n.tmp; mv /out/n.tmp /out/n; "
                      "sleep 0.01; done"], edit)  # fmt: skip
    oci("start", cid, check=True)
    count = tmp_path / "n"
    wait_for(count.exists)
    oci("pause", cid, check=True)
    frozen = int(count.read_text())
    time.sleep(0.3)
    assert int(count.read_text()) == frozen, "the counter moved while paused"
    oci("resume", cid, check=True)
    wait_for(lambda: int(count.read_text()) > frozen + 3)
