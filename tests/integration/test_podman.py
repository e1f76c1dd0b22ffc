"""podman drives ketch-oci: run, run -it (a pty through --console-socket), exec, exec -it, rm -f."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import KETCH_OCI

pytestmark = pytest.mark.root

IMAGE = "localhost/ketch-busybox:test"


class Podman:
    def __init__(self, top: Path) -> None:
        self.top = top
        self.base = [
            "podman", "--root", str(top / "root"), "--runroot", str(top / "runroot"), "--tmpdir", str(top / "tmp"),
            "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
            "--runtime", KETCH_OCI,
        ]  # fmt: skip

    def __call__(self, *args: str, tty: bool = False) -> subprocess.CompletedProcess[str]:
        cmd = [*self.base, *args]
        if tty:  # podman -t wants a terminal of its own: script(1) gives it one
            cmd = ["script", "-qec", shlex.join(cmd), "/dev/null"]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL
        )


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> Iterator[Podman]:
    if not shutil.which("podman") or not shutil.which("script"):
        pytest.skip("needs podman and script(1) (apt-get install podman util-linux)")
    top = tmp_path_factory.mktemp("podman")
    (top / "tmp").mkdir()
    pod = Podman(top)
    # podman's cgroupfs manager puts containers under libpod_parent: remove it after if we made it
    parents = [p for p in Path("/sys/fs/cgroup").glob("*/libpod_parent") if p.is_dir()]
    with tarfile.open(top / "busybox.tar", "w") as tar:
        tar.add(busybox_rootfs, arcname=".")
    imported = pod("import", str(top / "busybox.tar"), IMAGE)
    assert imported.returncode == 0, imported.stderr
    try:
        yield pod
    finally:
        pod("rm", "--all", "--force", "--time", "0")
        pod("rmi", "--all", "--force")
        subprocess.run(["umount", "-R", str(top / "root")], capture_output=True, check=False)
        subprocess.run(["umount", "-R", str(top / "runroot")], capture_output=True, check=False)
        for made in set(Path("/sys/fs/cgroup").glob("*/libpod_parent")) - set(parents):
            for d in sorted(made.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                d.rmdir()


def test_podman_run(podman: Podman) -> None:
    out = podman("run", "--rm", "--net", "none", IMAGE, "sh", "-c", "echo hello; id -u; echo $$")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["hello", "0", "1"]  # the program is PID 1


def test_podman_run_exit_code(podman: Podman) -> None:
    assert podman("run", "--rm", "--net", "none", IMAGE, "sh", "-c", "exit 3").returncode == 3


def test_podman_run_with_a_terminal(podman: Podman) -> None:
    # the sleep keeps the pty open until conmon has read it: output written right before the last
    # slave fd closes can be lost between the kernel's flip buffer and conmon's read (a podman/kernel race)
    out = podman(
        "run", "--rm", "-it", "--net", "none", IMAGE, "sh", "-c", "tty; echo done; sleep 0.5", tty=True
    )
    assert out.returncode == 0, out.stderr
    assert "/dev/pts/0" in out.stdout and "done" in out.stdout


def test_podman_exec_plain_and_with_a_terminal(podman: Podman) -> None:
    started = podman("run", "-d", "--net", "none", IMAGE, "sleep", "1000")
    assert started.returncode == 0, started.stderr
    cid = started.stdout.strip()
    try:
        plain = podman("exec", cid, "sh", "-c", "echo exec-ok; cat /proc/1/cmdline")
        assert plain.returncode == 0, plain.stderr
        assert plain.stdout.startswith("exec-ok\nsleep")
        with_tty = podman("exec", "-it", cid, "sh", "-c", "tty; sleep 0.5", tty=True)
        assert with_tty.returncode == 0, with_tty.stderr
        assert "/dev/pts/" in with_tty.stdout
    finally:
        assert podman("rm", "--force", "--time", "0", cid).returncode == 0
