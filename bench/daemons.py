"""What the benchmarks share: waiting for a daemon, and a private containerd + dockerd started by hand."""

from __future__ import annotations

import os
import subprocess
import sys
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


def cgroups(names: tuple[str, ...] = ("docker", "buildkit")) -> set[str]:
    """The cgroups with these top-level names (in every cgroup v1 hierarchy, or v2), and all under them."""
    tops = [
        t for name in names for t in (*Path("/sys/fs/cgroup").glob(f"*/{name}"), Path("/sys/fs/cgroup", name))
    ]
    return {str(t) for t in tops if t.is_dir()} | {
        str(p) for t in tops if t.is_dir() for p in t.rglob("*") if p.is_dir()
    }


def remove_cgroups(before: set[str]) -> None:
    """The (empty) cgroups under docker/ made since `before`: a dockerd makes docker/ (and
    docker/buildkit for BuildKit) in every hierarchy and leaves them when it stops."""
    made = sorted(cgroups() - before, key=len, reverse=True)
    for path in made:
        try:
            os.rmdir(path)
        except OSError as err:
            print(f"cleanup: cannot remove the cgroup {path}: {err}", file=sys.stderr)
    if made:
        print(f"cleanup: removed {len(made)} cgroups docker made", file=sys.stderr)


def start_docker(directory: Path, spawn: Spawn, bridge_ip: str | None = None) -> str:
    """containerd and dockerd with roots and sockets under `directory` (keep it short: socket paths
    are limited); the -H value that reaches dockerd. dockerd has no networking of its own unless
    `bridge_ip` ("172.31.250.1/24") is given: then docker0 with that address (--bip) and its
    iptables rules, which it leaves behind when it stops (the caller removes them)."""
    directory.mkdir()
    containerd = directory / "c.sock"
    spawn("containerd", ["containerd", "--root", str(directory / "cr"), "--state", str(directory / "cs"),
                         "--address", str(containerd)])  # fmt: skip
    wait_for(containerd.exists, "containerd")
    sock = directory / "d.sock"
    network = ["--iptables=false", "--ip6tables=false", "--bridge=none"]
    if bridge_ip:
        network = ["--bip", bridge_ip]
    spawn("dockerd", ["dockerd", "--data-root", str(directory / "data"), "--exec-root", str(directory / "x"),
                      "--pidfile", str(directory / "d.pid"), "-H", f"unix://{sock}", "--containerd", str(containerd),
                      "--storage-driver=overlay2", *network])  # fmt: skip
    host = f"unix://{sock}"
    wait_for(lambda: subprocess.run(["docker", "-H", host, "info"], capture_output=True).returncode == 0,
             "dockerd", 60)  # fmt: skip
    return host
