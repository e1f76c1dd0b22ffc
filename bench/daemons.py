"""What the benchmarks share: waiting for a daemon, and a private containerd + dockerd started by hand."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

Spawn = Callable[[str, list[str]], None]  # (name, argv): start a process the caller stops later


def wait_for(check: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def start_docker(directory: Path, spawn: Spawn) -> str:
    """containerd and dockerd with roots, sockets and no networking of their own under `directory`
    (keep it short: socket paths are limited); the -H value that reaches dockerd."""
    directory.mkdir()
    containerd = directory / "c.sock"
    spawn("containerd", ["containerd", "--root", str(directory / "cr"), "--state", str(directory / "cs"),
                         "--address", str(containerd)])  # fmt: skip
    wait_for(containerd.exists, "containerd")
    sock = directory / "d.sock"
    spawn("dockerd", ["dockerd", "--data-root", str(directory / "data"), "--exec-root", str(directory / "x"),
                      "--pidfile", str(directory / "d.pid"), "-H", f"unix://{sock}", "--containerd", str(containerd),
                      "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=overlay2"])  # fmt: skip
    host = f"unix://{sock}"
    wait_for(lambda: subprocess.run(["docker", "-H", host, "info"], capture_output=True).returncode == 0,
             "dockerd", 60)  # fmt: skip
    return host
