"""docker (Debian's docker.io, dockerd started by hand on private sockets) reads what `ketch save`
writes, and ketch reads what `docker save` writes: the same image ID both ways."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

KETCH = str(Path(sys.executable).parent / "ketch")


@pytest.fixture(scope="module")
def docker() -> Iterator[list[str]]:
    """`docker -H unix://...` for a private containerd + dockerd, stopped and removed afterwards."""
    for tool in ("dockerd", "containerd", "docker"):
        if not shutil.which(tool):
            pytest.skip(f"needs {tool} (apt-get install docker.io)")
    work = Path(tempfile.mkdtemp(prefix="kd", dir="/tmp"))  # short: socket paths have a length limit
    procs: list[subprocess.Popen[bytes]] = []
    cgroups_before = _docker_cgroups()
    log = open(work / "daemons.log", "wb")  # noqa: SIM115  (closed in finally)
    try:
        ctr = work / "c.sock"
        procs.append(subprocess.Popen(["containerd", "--root", str(work / "cr"), "--state", str(work / "cs"),
                                       "--address", str(ctr)], stdout=log, stderr=log))  # fmt: skip
        _wait(ctr.exists, "containerd")
        procs.append(subprocess.Popen(["dockerd", "--data-root", str(work / "data"), "--exec-root", str(work / "x"),
                                       "--pidfile", str(work / "d.pid"), "-H", f"unix://{work}/d.sock",
                                       "--containerd", str(ctr), "--iptables=false", "--ip6tables=false",
                                       "--bridge=none"], stdout=log, stderr=log))  # fmt: skip
        cli = ["docker", "-H", f"unix://{work}/d.sock"]
        _wait(lambda: subprocess.run([*cli, "info"], capture_output=True).returncode == 0, "dockerd")
        yield cli
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        subprocess.run(["umount", "-R", str(work)], capture_output=True)
        for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            if str(work) in line.split()[1]:
                subprocess.run(["umount", "-l", line.split()[1]], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        for path in sorted(_docker_cgroups() - cgroups_before, key=len, reverse=True):
            try:
                os.rmdir(path)  # dockerd makes docker/ in every hierarchy and never removes it
            except OSError:
                pass


def _docker_cgroups() -> set[str]:
    tops = [*Path("/sys/fs/cgroup").glob("*/docker"), *Path("/sys/fs/cgroup").glob("docker")]
    return {str(t) for t in tops} | {str(p) for t in tops for p in t.rglob("*") if p.is_dir()}


def _wait(check: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not start")


def test_docker_loads_ketch_save_and_back(docker: list[str], busybox_oci: Path, tmp_path: Path) -> None:
    def ketch(*args: str) -> str:
        return subprocess.run([KETCH, "--root", str(tmp_path / "k"), *args], check=True, capture_output=True,
                              text=True).stdout  # fmt: skip

    with tarfile.open(tmp_path / "layout.tar", "w") as tar:
        tar.add(busybox_oci, arcname=".")
    ketch("load", "-i", str(tmp_path / "layout.tar"))
    image_id = ketch("images", "-q", "--no-trunc").strip()
    ketch("tag", image_id, "interop/bb:1")
    ketch("save", "-o", str(tmp_path / "ketch.tar"), "interop/bb:1")
    try:
        subprocess.run([*docker, "load", "-i", str(tmp_path / "ketch.tar")], check=True, capture_output=True)
        got = subprocess.run([*docker, "image", "inspect", "--format", "{{.Id}}", "interop/bb:1"], check=True,
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
        assert got == image_id
        subprocess.run([*docker, "save", "-o", str(tmp_path / "docker.tar"), "interop/bb:1"], check=True)
    finally:
        subprocess.run([*docker, "rmi", "-f", "interop/bb:1"], capture_output=True)
    ketch("rmi", "interop/bb:1")
    assert "Loaded image: interop/bb:1" in ketch("load", "-i", str(tmp_path / "docker.tar"))
    assert ketch("image", "inspect", "--format", "{{.Id}}", "interop/bb:1").strip() == image_id
    assert os.path.getsize(tmp_path / "docker.tar") > 0
