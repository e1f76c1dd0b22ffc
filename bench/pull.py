"""`ketch pull` against `docker pull` and `podman pull` from one local registry, side by side in one run.

    .venv/bin/python bench/pull.py [--runs N] [--tools ketch,docker,podman]

The image: 5 gzip layers cut from this host's /usr (binaries, libraries, many small files,
already-compressed jars), ~260 MB unpacked. It is built once and cached in /var/tmp. A
docker-registry on 127.0.0.1 serves it; every round pulls it with each tool into fresh
storage, in turn, so machine noise hits them alike. The floor is `gzip -dc` of the same blobs.
dockerd (Debian's docker.io) is started by hand on private sockets and a private data root.
Needs root.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from daemons import start_docker, wait_for

REPO = Path(__file__).resolve().parents[1]
CACHE = Path("/var/tmp/ketch-bench-pull")
LAYERS = [  # (source directory, byte budget)
    ("/usr/lib/x86_64-linux-gnu", 70 << 20),
    ("/usr/share", 40 << 20),
    ("/usr/bin", 50 << 20),
    ("/usr/lib/jvm", 60 << 20),
    ("/usr/lib/python3", 40 << 20),
]
IMAGE = "bench/big:latest"


def _pick(src: str, budget: int) -> list[str]:
    out, used = [], 0
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            size = os.path.getsize(path)
            if used + size > budget:
                continue
            out.append(path)
            used += size
    return out


def build_image(where: Path) -> Path:
    """An OCI layout with 5 gzip layers; returns its path."""
    layout = where / "layout"
    if (layout / "index.json").exists():
        return layout
    tmp = where / "layout.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    blobs = tmp / "blobs/sha256"
    blobs.mkdir(parents=True)
    layers, diff_ids = [], []
    for src, budget in LAYERS:
        raw = tmp / "layer.tar"
        with tarfile.open(raw, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in _pick(src, budget):
                tar.add(path, arcname=path.lstrip("/"), recursive=False)
        diff_ids.append("sha256:" + _sha(raw))
        gz = tmp / "layer.tar.gz"
        with open(raw, "rb") as fin, gzip.open(gz, "wb", compresslevel=6) as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        digest = _sha(gz)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": f"sha256:{digest}", "size": gz.stat().st_size})  # fmt: skip
        gz.rename(blobs / digest)
        raw.unlink()
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}  # fmt: skip
    cfg = _put(blobs, json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg}, "layers": layers}  # fmt: skip
    man = _put(blobs, json.dumps(manifest).encode())
    index = {"schemaVersion": 2, "manifests": [{"mediaType": manifest["mediaType"], **man,
             "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}  # fmt: skip
    (tmp / "index.json").write_text(json.dumps(index))
    (tmp / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    tmp.rename(layout)
    return layout


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _put(blobs: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except Exception:
        return False


class Services:
    """docker-registry and (when asked) containerd + dockerd, on private ports, sockets and roots."""

    def __init__(self, work: Path) -> None:
        self.work, self.procs = work, []
        self.port = free_port()

    def start_registry(self) -> str:
        conf = self.work / "registry.yml"
        conf.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {self.work}/registry\n"
                        f"http:\n  addr: 127.0.0.1:{self.port}\nlog:\n  level: error\n")  # fmt: skip
        self._spawn("docker-registry", ["docker-registry", "serve", str(conf)])
        wait_for(lambda: http_ok(f"http://127.0.0.1:{self.port}/v2/"), "the registry")
        return f"127.0.0.1:{self.port}"

    def start_docker(self) -> str:
        return start_docker(self.work / "d", self._spawn)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.work / f"{name}.log", "w")  # noqa: SIM115
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=log))

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tools", default="ketch,docker,podman")
    opts = parser.parse_args()
    tools = opts.tools.split(",")
    CACHE.mkdir(parents=True, exist_ok=True)
    layout = build_image(CACHE)
    manifest = json.loads(layout.joinpath("index.json").read_text())["manifests"][0]
    man = json.loads((layout / "blobs/sha256" / manifest["digest"][7:]).read_text())
    packed = sum(layer["size"] for layer in man["layers"])
    work = Path(tempfile.mkdtemp(prefix="ketch-bench-pull-", dir="/var/tmp"))
    services = Services(work)
    try:
        host = services.start_registry()
        ref = f"{host}/{IMAGE}"
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest",
                        f"docker://{ref}"], check=True)  # fmt: skip
        docker = services.start_docker() if "docker" in tools else ""
        results = run_rounds(opts.runs, tools, ref, docker, work, layout, man)
    finally:
        services.stop()
        subprocess.run(["umount", "-R", str(work)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    report(results, packed, tools)


def run_rounds(
    runs: int, tools: list[str], ref: str, docker: str, work: Path, layout: Path, man: dict
) -> dict:
    ketch = str(Path(sys.executable).parent / "ketch")
    results: dict[str, list[float]] = {t: [] for t in [*tools, "gzip -dc"]}
    blobs = [str(layout / "blobs/sha256" / layer["digest"][7:]) for layer in man["layers"]]
    for i in range(runs):
        root = work / f"round{i}"
        if "ketch" in tools:
            env = dict(os.environ, KETCH_AUTH_FILE=str(work / "auth.json"))
            results["ketch"].append(timed([ketch, "--root", str(root / "ketch"), "pull", "-q", ref], env))
            shutil.rmtree(root / "ketch", ignore_errors=True)
        if "docker" in tools:
            results["docker"].append(timed(["docker", "-H", docker, "pull", "-q", ref]))
            subprocess.run(["docker", "-H", docker, "rmi", "-f", ref], capture_output=True, check=True)
        if "podman" in tools:
            pr = root / "podman"
            run = tempfile.mkdtemp(prefix="kbp", dir="/tmp")  # podman wants a runroot under 50 characters
            podman = ["podman", "--root", str(pr), "--runroot", run]
            results["podman"].append(timed([*podman, "pull", "-q", "--tls-verify=false", ref]))
            subprocess.run([*podman, "system", "reset", "-f"], capture_output=True)
            for path in (str(pr), run):
                subprocess.run(["umount", "-R", path], capture_output=True)
                shutil.rmtree(path, ignore_errors=True)
        results["gzip -dc"].append(
            timed(["sh", "-c", 'for b; do gzip -dc "$b"; done >/dev/null', "sh", *blobs])
        )
    return results


def report(results: dict[str, list[float]], packed: int, tools: list[str]) -> None:
    print(
        f"image: 5 layers, {packed / 1e6:.0f} MB compressed; seconds (median of {len(results['gzip -dc'])})"
    )
    med = {t: statistics.median(v) for t, v in results.items() if v}
    for tool, value in med.items():
        print(f"  {tool:<10} {value:6.2f}   runs: {' '.join(f'{x:.2f}' for x in results[tool])}")
    if "ketch" in med:
        for peer in ("docker", "podman", "gzip -dc"):
            if peer in med:
                print(f"  ketch/{peer} = {med['ketch'] / med[peer]:.2f}")


if __name__ == "__main__":
    main()
