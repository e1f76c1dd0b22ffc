"""Fixtures for tests that drive `ketch-oci` against the real kernel with a busybox bundle."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from registryd import busybox_oci, registry, tls_registry, token_registry  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[2]
KETCH_OCI = str(Path(sys.executable).parent / "ketch-oci")


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: namespaces, mounts and cgroups")
    if not shutil.which("busybox"):
        pytest.skip("needs busybox-static (apt-get install busybox-static)")


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One read-only busybox rootfs shared by every test (made by scripts/busybox-bundle)."""
    _need_root()
    bundle = tmp_path_factory.mktemp("busybox")
    env = dict(os.environ, KETCH_OCI=KETCH_OCI)
    subprocess.run(
        [str(REPO / "scripts/busybox-bundle"), str(bundle)], check=True, env=env, capture_output=True
    )
    return bundle / "rootfs"


@pytest.fixture(scope="session")
def base_config(busybox_rootfs: Path) -> dict[str, Any]:
    with open(busybox_rootfs.parent / "config.json") as f:
        config: dict[str, Any] = json.load(f)
    config["root"]["path"] = str(busybox_rootfs)
    return config


class Oci:
    """Runs ketch-oci with a private state root and cleans up every container it made."""

    def __init__(self, root: Path, bundles: Path, base: dict[str, Any]) -> None:
        self.root, self.bundles, self.base = root, bundles, base
        self.ids: list[str] = []

    def __call__(self, *args: str, check: bool = False, **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("timeout", 60)
        # files, not pipes: a created container's init keeps our stdio open until it exits
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run([KETCH_OCI, "--root", str(self.root), *args], text=True, check=False,
                                  stdout=out, stderr=err, **kw)  # fmt: skip
            out.seek(0)
            err.seek(0)
            proc.stdout, proc.stderr = out.read(), err.read()
        if check and proc.returncode != 0:
            raise AssertionError(f"ketch-oci {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def bundle(self, args: list[str], edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
        config = copy.deepcopy(self.base)
        config["process"]["args"] = args
        if edit:
            edit(config)
        path = self.bundles / uuid.uuid4().hex[:8]
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config))
        return path

    def new_id(self) -> str:
        cid = "t" + uuid.uuid4().hex[:10]
        self.ids.append(cid)
        return cid

    def run(self, args: list[str], edit: Callable[[dict[str, Any]], None] | None = None, **kw: Any
            ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        bundle = self.bundle(args, edit)
        return self("run", "--bundle", str(bundle), self.new_id(), **kw)

    def create(self, args: list[str], edit: Callable[[dict[str, Any]], None] | None = None, **kw: Any) -> str:
        bundle = self.bundle(args, edit)
        cid = self.new_id()
        self("create", "--bundle", str(bundle), cid, check=True, **kw)
        return cid

    def state(self, cid: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self("state", cid, check=True).stdout)
        return result

    def cleanup(self) -> None:
        for cid in self.ids:
            self("delete", "--force", cid)


@pytest.fixture
def oci(tmp_path: Path, base_config: dict[str, Any]) -> Iterator[Oci]:
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    runner = Oci(tmp_path / "state", bundles, base_config)
    try:
        yield runner
    finally:
        runner.cleanup()
        from ketch.runtime.cgroups import hierarchies

        points = hierarchies().values()
        leftovers = [
            Path(p, "ketch", cid) for p in points for cid in runner.ids if Path(p, "ketch", cid).exists()
        ]
        for d in leftovers:
            d.rmdir()
        assert not leftovers, f"cgroups left behind: {leftovers}"
