"""A `ketch` engine with private roots and a busybox image, for the tests of the engine's verbs.

Import from tests in this directory (`from enginefix import IMAGE, Engine, engine_fixture, ...`):
`engine_fixture` is the module-scoped fixture `engine` (so that a test's `engine` argument shadows no import),
one engine, with one import of the image, for each test module that imports it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

KETCH = str(Path(sys.executable).parent / "ketch")
IMAGE = "busybox:test"
APPLETS = ("sh", "ls", "cat", "echo", "sleep", "id", "hostname", "ps", "true", "false", "mount", "unshare",
           "grep", "env", "tty", "stat", "wc", "head", "kill", "pwd", "tr", "test", "rm", "ln", "mkdir",
           "touch")  # fmt: skip
SEED = "from the image\n"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"


class Engine:
    """Runs `ketch` with private roots; removes every container and volume and stops the supervisor at the end.
    `config`: the engine.json written before first use (Docker's daemon.json keys)."""

    def __init__(self, base: Path, *flags: str, config: dict[str, Any] | None = None) -> None:
        self.base, self.flags = base, flags
        self.root, self.runroot = base / "root", base / "run"
        self.env = dict(os.environ, KETCH_ROOT=str(self.root), KETCH_RUNROOT=str(self.runroot),
                        KETCH_AUTH_FILE=str(base / "auth.json"))  # fmt: skip
        if config is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "engine.json").write_text(json.dumps(config))

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 60, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        if kw.get("input") is None:
            kw.setdefault("stdin", subprocess.DEVNULL)  # never a prompt waiting on the terminal
        proc = subprocess.run([KETCH, *self.flags, *args], capture_output=True, text=True, env=self.env,
                              timeout=timeout, check=False, **kw)  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"ketch {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def raw(self, *args: str, data: bytes = b"") -> bytes:
        """stdout as bytes (tar streams), feeding `data` as stdin."""
        proc = subprocess.run([KETCH, *self.flags, *args], input=data, capture_output=True, env=self.env,
                              timeout=60, check=False)  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"ketch {' '.join(args)} failed ({proc.returncode}): {proc.stderr!r}")
        return proc.stdout

    # --- containers ---

    def inspect(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self("inspect", "--type", "container", name).stdout)[0]
        return doc

    def wait_for(self, name: str, check: Any, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            doc = self.inspect(name)
            if check(doc):
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; last state {doc['State']}")
            time.sleep(0.05)

    def run(self, name: str, script: str) -> None:
        """Run `sh -c script` in a new container `name` to completion."""
        self("run", "--name", name, IMAGE, "sh", "-c", script)

    def start_detached(self, name: str, script: str) -> None:
        """A running container that ran `script` first (then sleeps)."""
        self("run", "-d", "--name", name, IMAGE, "sh", "-c", f"{script}; touch /ready; sleep 1000")
        deadline = time.monotonic() + 20
        while self("cp", f"{name}:/ready", "-", check=False).returncode != 0:
            assert time.monotonic() < deadline, "the container did not get ready"
            time.sleep(0.05)

    # --- files in containers ---

    def tar(self, container_path: str, *flags: str) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
        """`cp CONTAINER:PATH -` as {name: (info, data)}."""
        data = self.raw("cp", *flags, container_path, "-")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            return {m.name: (m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar}  # type: ignore[union-attr]

    def cat(self, container_path: str) -> str:
        (_info, data), *_ = self.tar(container_path).values()
        return data.decode()

    # --- volumes ---

    def volume(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self("volume", "inspect", name).stdout)[0]
        return doc

    def names(self, *flags: str) -> list[str]:
        return self("volume", "ls", "-q", *flags).stdout.split()

    def cleanup(self) -> None:
        """`system reset`: containers, volumes, networks, their bridges, rules, DNS server, supervisor."""
        self("system", "reset", "-f", check=False)
        pid_file = self.runroot / "supervisor.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def bridges(self) -> set[str]:
        """The bridge devices of this engine's networks (made or not)."""
        tag = hashlib.sha256(os.path.realpath(self.runroot).encode()).hexdigest()[:6]
        records = (self.root / "networks").glob("*.json")
        return {f"ketch{tag}"} | {b for p in records if (b := json.loads(p.read_text()).get("bridge", ""))}

    def network_leftovers(self, bridges: set[str]) -> list[str]:
        """What this engine made on the host that is still there: its bridges, chains, DNS server."""
        tag = hashlib.sha256(os.path.realpath(self.runroot).encode()).hexdigest()[:6]
        found = [f"bridge {b}" for b in bridges if Path(f"/sys/class/net/{b}").exists()]
        for tool in ("iptables-save", "ip6tables-save"):
            if shutil.which(tool):
                rules = subprocess.run([tool], capture_output=True, text=True, check=False).stdout
                found += [f"{tool}: {line}" for line in rules.splitlines() if f"KETCH{tag}" in line]
        for proc in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = proc.read_bytes().split(b"\0")
            except OSError:
                continue
            if b"ketch.network.dnsd" in argv and str(self.runroot).encode() in argv:
                found.append(f"dns server {proc.parent.name}")
        return found


def add_member(tar: tarfile.TarFile, name: str, text: str | None = None, **fields: Any) -> None:
    """A member: a directory without `text`, else a file; `fields` set TarInfo attributes."""
    info = tarfile.TarInfo(name)
    info.type, info.mode = (tarfile.DIRTYPE, 0o755) if text is None else (tarfile.REGTYPE, 0o644)
    for key, value in fields.items():
        setattr(info, key, value)
    data = (text or "").encode()
    if info.type != tarfile.REGTYPE:
        tar.addfile(info)
        return
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def busybox_tar(path: Path) -> None:
    """An image rootfs: busybox with APPLETS in /bin, root and nobody, /data/seed and /data/other."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("needs busybox-static")
    with tarfile.open(path, "w") as tar:
        for d in ("bin", "etc", "tmp", "root", "data"):
            add_member(tar, d, mode=0o1777 if d == "tmp" else 0o755)
        tar.add(busybox, arcname="bin/busybox")
        for applet in APPLETS:
            add_member(tar, f"bin/{applet}", type=tarfile.SYMTYPE, linkname="busybox")
        for name, text in (("etc/passwd", PASSWD), ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
                           ("data/seed", SEED), ("data/other", "other\n")):  # fmt: skip
            add_member(tar, name, text)


def mounts_under(base: Path) -> list[str]:
    """The mount points at or below `base`, in the order they were mounted."""
    return [target for line in Path("/proc/self/mounts").read_text().splitlines()
            if (target := line.split()[1]) == str(base) or target.startswith(f"{base}/")]  # fmt: skip


def running_engine(
    tmp_path_factory: pytest.TempPathFactory, name: str, *flags: str, config: dict[str, Any] | None = None
) -> Iterator[Engine]:
    """An engine with IMAGE imported; at the end nothing of it may be left: containers, supervisor, mounts.

    KETCH_TEST_USERNS_REMAP=USER runs it with engine.json's userns-remap (USER needs /etc/subuid and
    /etc/subgid ranges): every container then has a user namespace. Its base is then a private
    directory of /tmp the remapped root can traverse (pytest's are 0700), removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    remap = os.environ.get("KETCH_TEST_USERNS_REMAP", "")
    if remap and config is None:
        config = {"userns-remap": remap}
    if config and config.get("userns-remap"):
        base = Path(tempfile.mkdtemp(prefix=f"ketch-{name}-"))
        base.chmod(0o711)
    else:
        base = tmp_path_factory.mktemp(name)
    eng = Engine(base, *flags, config=config)
    busybox_tar(base / "busybox.tar")
    eng("import", "--change", "ENV PATH=/bin", "--change", 'CMD ["sh"]', str(base / "busybox.tar"), IMAGE)
    try:
        yield eng
    finally:
        bridges = eng.bridges()
        eng.cleanup()
        leftovers = mounts_under(base)
        for target in reversed(leftovers):
            subprocess.run(["umount", "-l", target], check=False)
        assert not leftovers, f"mounts left behind: {leftovers}"
        left = eng.network_leftovers(bridges)
        if base.name.startswith("ketch-") and not leftovers:
            shutil.rmtree(base)
        assert not left, f"network state left behind: {left}"


@pytest.fixture(scope="module", name="engine")
def engine_fixture(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """One engine for the test module, under a temporary directory named after it."""
    yield from running_engine(
        tmp_path_factory, request.module.__name__.rpartition(".")[2].removeprefix("test_")
    )
