"""`ketch pull/push/images/rmi/tag/inspect/history/system check` against a real registry.

Images are made by third-party tools (umoci, skopeo) or written by hand as OCI layouts and pushed
with skopeo into Debian's docker-registry on 127.0.0.1. Hostile images and lying registries are
served by a small fake registry in this file, since a real one refuses to store them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from registryd import RegistryServer, need, skopeo_copy, skopeo_inspect_raw

pytestmark = pytest.mark.root

KETCH = str(Path(sys.executable).parent / "ketch")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


class Ketch:
    """Runs `ketch` with a private root and credentials file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = dict(os.environ, KETCH_AUTH_FILE=str(root / "auth.json"))

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([KETCH, "--root", str(self.root), *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout, check=False)  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"ketch {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([KETCH, "--root", str(self.root), *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=self.env, text=True)  # fmt: skip

    def service(self) -> Any:
        from ketch.engine.images import ImageService

        return ImageService(str(self.root / "storage"))

    def rootfs(self, image: str, path: str) -> Path | None:
        """The first layer, top down, that has `path` (overlay or vfs), or None."""
        service = self.service()
        record = service.get(image)
        for key in reversed(record.chain):
            candidate = Path(service.snapshots.layer_dir(key), path.lstrip("/"))
            if candidate.exists() or candidate.is_symlink():
                return candidate
        return None

    def check_clean(self) -> None:
        result = self("system", "check", check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "clean" in result.stdout


@pytest.fixture
def ketch(tmp_path: Path) -> Iterator[Ketch]:
    runner = Ketch(tmp_path / "root")
    yield runner
    subprocess.run(["umount", "-R", str(tmp_path)], capture_output=True)


# --- image layouts written here ------------------------------------------------------------------


def tar_of(entries: list[tuple[str, bytes | None, dict[str, Any]]]) -> bytes:
    """A tar from (name, data or None for a dir, TarInfo attributes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, attrs in entries:
            info = tarfile.TarInfo(name)
            if data is None and "type" not in attrs:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            for key, value in attrs.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


class Layout:
    """An OCI image layout written by hand: add blobs, then images, then an index."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs/sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.manifests: list[dict[str, Any]] = []

    def blob(self, data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (self.path / "blobs/sha256" / digest[7:]).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    def image(
        self, layers: list[bytes], architecture: str = "", config: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        diff_ids = ["sha256:" + hashlib.sha256(t).hexdigest() for t in layers]
        doc = {"architecture": architecture or arch(), "os": "linux", "config": config or {"Cmd": ["/bin/sh"]},
               "rootfs": {"type": "layers", "diff_ids": diff_ids}, "created": "2024-01-02T03:04:05Z",
               "history": [{"created_by": f"layer {i}"} for i in range(len(layers))]}  # fmt: skip
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, **self.blob(json.dumps(doc).encode())},
                    "layers": [{"mediaType": LAYER_GZIP, **self.blob(gzip.compress(t, mtime=0))} for t in layers]}  # fmt: skip
        return {"mediaType": OCI_MANIFEST, **self.blob(json.dumps(manifest).encode())}

    def tag(self, descriptor: dict[str, Any], tag: str, platform: dict[str, str] | None = None) -> None:
        entry = dict(descriptor, annotations={"org.opencontainers.image.ref.name": tag})
        if platform:
            entry["platform"] = platform
        self.manifests.append(entry)
        (self.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": self.manifests}))


def push_layout(layout: Path, tag: str, ref: str, *args: str) -> None:
    skopeo_copy(f"oci:{layout}:{tag}", f"docker://{ref}", *args)


# --- pulls of images made by other tools ---------------------------------------------------------------


def test_pull_busybox_and_list(ketch: Ketch, registry: RegistryServer, busybox_oci: Path) -> None:
    ref = f"{registry.host}/test/busybox:latest"
    push_layout(busybox_oci, "latest", ref)
    out = ketch("pull", ref).stdout
    assert "Pull complete" in out and out.strip().endswith(ref)
    assert "Downloaded newer image" in out
    again = ketch("pull", ref).stdout
    assert "Image is up to date" in again and "Already exists" in again
    assert os.access(ketch.rootfs(ref, "bin/busybox") or "", os.X_OK)
    images = ketch("images").stdout.splitlines()
    assert images[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert images[1].split()[:2] == [f"{registry.host}/test/busybox", "latest"]
    assert ketch("images", "-q").stdout.split() == [ketch.service().get(ref).short_id]
    assert ketch("pull", "-q", ref).stdout.strip() == ref
    ketch.check_clean()


def test_whiteouts_and_opaque_dir_through_umoci(
    ketch: Ketch, registry: RegistryServer, tmp_path: Path
) -> None:
    """umoci builds a 2-layer image with whiteouts; a third layer with an opaque dir is added with
    `umoci raw add-layer`. The pulled overlay snapshot must show the merged view."""
    need("umoci")
    layout, bundle = tmp_path / "umoci", tmp_path / "bundle"

    def umoci(*args: str) -> None:
        subprocess.run(["umoci", *args], check=True, capture_output=True)

    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:t")
    umoci("unpack", "--image", f"{layout}:t", str(bundle))
    rootfs = bundle / "rootfs"
    for path, text in (("a/keep", "k"), ("a/gone", "g"), ("opq/old", "o"), ("dir/sub/file", "f")):
        (rootfs / path).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / path).write_text(text)
    umoci("repack", "--image", f"{layout}:t", str(bundle))
    subprocess.run(["rm", "-rf", str(bundle)], check=True)
    umoci("unpack", "--image", f"{layout}:t", str(bundle))
    (rootfs / "a/gone").unlink()
    subprocess.run(["rm", "-rf", str(rootfs / "dir")], check=True)
    umoci("repack", "--image", f"{layout}:t", str(bundle))
    opaque = tar_of([("opq", None, {}), ("opq/.wh..wh..opq", b"", {}), ("opq/new", b"n", {})])
    (tmp_path / "opaque.tar").write_bytes(opaque)
    umoci("raw", "add-layer", "--image", f"{layout}:t", str(tmp_path / "opaque.tar"))
    ref = f"{registry.host}/test/whiteouts:1"
    push_layout(layout, "t", ref)
    ketch("pull", ref)
    service = ketch.service()
    image = service.get(ref)
    assert len(image.chain) == 3
    merged = tmp_path / "merged"
    merged.mkdir()
    service.snapshots.prepare("c1", image.chain[-1])
    service.snapshots.mount("c1", str(merged))
    try:
        assert (merged / "a/keep").read_text() == "k"
        assert not (merged / "a/gone").exists()
        assert not (merged / "dir").exists()
        assert sorted(os.listdir(merged / "opq")) == ["new"]
    finally:
        service.snapshots.unmount(str(merged))
        service.snapshots.remove("c1")
    ketch.check_clean()


def test_multi_platform_index(ketch: Ketch, registry: RegistryServer, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "multi")
    native = layout.image([tar_of([("which", b"native", {})])])
    other_arch = "arm64" if arch() != "arm64" else "amd64"
    other = layout.image([tar_of([("which", b"other", {})])], architecture=other_arch)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        dict(other, platform={"os": "linux", "architecture": other_arch}),
        dict(native, platform={"os": "linux", "architecture": arch()}),
    ]}  # fmt: skip
    layout.tag({"mediaType": OCI_INDEX, **layout.blob(json.dumps(index).encode())}, "multi")
    ref = f"{registry.host}/test/multi:1"
    push_layout(layout.path, "multi", ref, "--all")
    ketch("pull", ref)
    assert (ketch.rootfs(ref, "which") or Path("/nonexistent")).read_bytes() == b"native"
    inspect = json.loads(ketch("image", "inspect", ref).stdout)[0]
    assert inspect["Architecture"] == arch()
    index_digest = "sha256:" + hashlib.sha256(json.dumps(index).encode()).hexdigest()
    assert inspect["RepoDigests"] == [f"{registry.host}/test/multi@{index_digest}"]
    ketch("pull", "--platform", f"linux/{other_arch}", ref)
    assert (ketch.rootfs(ref, "which") or Path("/nonexistent")).read_bytes() == b"other"
    bad = ketch("pull", "--platform", "linux/s390x", ref, check=False)
    assert bad.returncode == 1 and "no image for platform linux/s390x" in bad.stderr
    ketch.check_clean()


def test_zstd_layer(ketch: Ketch, registry: RegistryServer, tmp_path: Path) -> None:
    """A layer compressed by Debian's zstd tool, pushed with skopeo."""
    need("zstd")
    raw = tar_of([("bin", None, {}), ("bin/hello", b"zstd!", {"mode": 0o755})])
    packed = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
    layout = Layout(tmp_path / "zstd")
    config = {"architecture": arch(), "os": "linux", "rootfs": {"type": "layers",
              "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]}}  # fmt: skip
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, **layout.blob(json.dumps(config).encode())},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", **layout.blob(packed)}]}  # fmt: skip
    layout.tag({"mediaType": OCI_MANIFEST, **layout.blob(json.dumps(manifest).encode())}, "z")
    ref = f"{registry.host}/test/zstd:1"
    push_layout(layout.path, "z", ref)
    assert json.loads(skopeo_inspect_raw(ref))["layers"][0]["mediaType"].endswith("+zstd")
    ketch("pull", ref)
    assert (ketch.rootfs(ref, "bin/hello") or Path("/nonexistent")).read_bytes() == b"zstd!"


def test_push_back_gives_identical_digests(ketch: Ketch, registry: RegistryServer, busybox_oci: Path) -> None:
    source = f"{registry.host}/test/source:1"
    push_layout(busybox_oci, "latest", source)
    ketch("pull", source)
    original = hashlib.sha256(skopeo_inspect_raw(source)).hexdigest()
    target = f"{registry.host}/other/copy:2"
    ketch("tag", source, target)
    out = ketch("push", target).stdout
    assert f"digest: sha256:{original}" in out
    assert "Mounted from test/source" in out  # a cross-repository mount within one registry
    assert hashlib.sha256(skopeo_inspect_raw(target)).hexdigest() == original
    again = ketch("push", target).stdout
    assert "Layer already exists" in again


def test_tag_rmi_prune_inspect_history(ketch: Ketch, registry: RegistryServer, busybox_oci: Path) -> None:
    ref = f"{registry.host}/test/life:1"
    push_layout(busybox_oci, "latest", ref)
    ketch("pull", ref)
    ketch("tag", ref, "mine:v1")
    names = ketch("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert sorted(names) == sorted([ref, "mine:v1"])
    doc = json.loads(ketch("image", "inspect", "mine:v1").stdout)[0]
    assert doc["Id"].startswith("sha256:") and "mine:v1" in doc["RepoTags"]
    assert doc["RootFS"]["Type"] == "layers" and doc["Os"] == "linux"
    assert ketch("image", "inspect", "--format", "{{.Os}}", "mine:v1").stdout.strip() == "linux"
    history = ketch("history", "mine:v1").stdout.splitlines()
    assert history[0].split()[:2] == ["IMAGE", "CREATED"] and "ketch tests: busybox" in history[1]
    assert ketch("rmi", "mine:v1").stdout.strip() == "Untagged: mine:v1"
    missing = ketch("rmi", "mine:v1", check=False)
    assert missing.returncode == 1 and "No such image: mine:v1" in missing.stderr
    service = ketch.service()
    image = service.get(ref)
    service.snapshots.prepare("user", image.chain[-1])  # stands for a container using the image
    busy = ketch("rmi", ref, check=False)
    assert busy.returncode == 1 and "is using its referenced image" in busy.stderr
    assert ketch("images", "-q").stdout.strip() == image.short_id  # nothing was untagged
    service.snapshots.remove("user")
    out = ketch("rmi", ref).stdout
    assert f"Deleted: {image.id}" in out
    assert ketch("images", "-q").stdout == ""
    assert not list(service.content.digests()) and not service.snapshots.layers()
    ketch.check_clean()


def test_bad_references_and_unknown_images(ketch: Ketch, registry: RegistryServer) -> None:
    bad = ketch("pull", "Alpine", check=False)
    assert bad.returncode == 1 and "invalid reference format" in bad.stderr
    missing = ketch("pull", f"{registry.host}/no/such:tag", check=False)
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    unknown = ketch("frobnicate", check=False)
    assert unknown.returncode == 125


def test_concurrent_pulls_of_one_image(ketch: Ketch, registry: RegistryServer, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "conc")
    layout.tag(layout.image([tar_of([("big", os.urandom(4 << 20), {})]), tar_of([("small", b"s", {})])]), "c")
    ref = f"{registry.host}/test/concurrent:1"
    push_layout(layout.path, "c", ref)
    procs = [ketch.popen("pull", "-q", ref) for _ in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    assert len(ketch("images", "-q").stdout.split()) == 1
    ketch.check_clean()


# --- lying registries, hostile layers, crashes ---------------------------------------------------------


class FakeRegistry:
    """Serves manifests and blobs from dicts exactly as given (lies included); `delay` slows blobs."""

    def __init__(self) -> None:
        self.manifests: dict[str, tuple[str, bytes]] = {}
        self.blobs: dict[str, bytes] = {}
        self.delay = 0.0
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add_image(
        self, repo: str, tag: str, layers: list[bytes], lie: dict[str, Any] | None = None,
        diff_ids: list[str] | None = None,
    ) -> None:  # fmt: skip
        """An image whose blobs are served verbatim; `lie` edits the first layer's descriptor."""
        diff_ids = diff_ids or ["sha256:" + hashlib.sha256(gzip.decompress(b)).hexdigest() for b in layers]
        config = json.dumps(
            {"architecture": arch(), "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        ).encode()
        descriptors = [{"mediaType": LAYER_GZIP, "digest": self._blob(b), "size": len(b)} for b in layers]
        for key, value in (lie or {}).items():
            descriptors[0][key] = value
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": descriptors,
                    "config": {"mediaType": OCI_CONFIG, "digest": self._blob(config), "size": len(config)}}  # fmt: skip
        body = json.dumps(manifest).encode()
        self.manifests[f"{repo}:{tag}"] = (OCI_MANIFEST, body)

    def _blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return digest

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._serve(body=True)

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def _serve(self, body: bool) -> None:
                path = self.path.split("?")[0]
                if path == "/v2/":
                    return self._send(200, "application/json", b"{}", body)
                repo, _, rest = path[4:].partition("/manifests/")
                if rest and f"{repo}:{rest}" in fake.manifests:
                    media, data = fake.manifests[f"{repo}:{rest}"]
                    return self._send(200, media, data, body)
                _, _, digest = path.partition("/blobs/")
                if digest in fake.blobs:
                    return self._send(200, "application/octet-stream", fake.blobs[digest], body, fake.delay)
                return self._send(404, "application/json", b'{"errors":[{"code":"NOT_FOUND"}]}', body)

            def _send(self, code: int, media: str, data: bytes, body: bool, delay: float = 0.0) -> None:
                self.send_response(code)
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not body:
                    return
                step = max(1, len(data) // 20) if delay else len(data) or 1
                for i in range(0, len(data), step):
                    self.wfile.write(data[i : i + step])
                    time.sleep(delay / 20 if delay else 0)

            def log_message(self, *_args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    server = FakeRegistry()
    yield server
    server.close()


def gz(entries: list[tuple[str, bytes | None, dict[str, Any]]]) -> bytes:
    return gzip.compress(tar_of(entries), mtime=0)


def assert_failed_cleanly(ketch: Ketch, ref: str, message: str) -> None:
    result = ketch("pull", ref, check=False)
    assert result.returncode == 1, result.stdout
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert ketch("images", "-q").stdout == ""
    assert not ketch.service().snapshots.layers()
    ketch.check_clean()


HOSTILE = {
    "dotdot": ([("../escaped", b"x", {})], "escapes"),
    "absolute": ([("/abs-escaped", b"x", {})], ""),
    "symlink-parent": (
        [("link", None, {"type": tarfile.SYMTYPE, "linkname": "/tmp"}), ("link/escaped", b"x", {})],
        "",
    ),
    "hardlink-out": ([("h", None, {"type": tarfile.LNKTYPE, "linkname": "../../etc/passwd"})], ""),
    "whiteout-out": ([("../.wh.escaped", b"", {})], ""),
    "tar-bomb": ([("bomb", None, {"type": tarfile.REGTYPE, "size": 1 << 40})], "tar bomb"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layers_fail_cleanly(ketch: Ketch, fake: FakeRegistry, case: str, tmp_path: Path) -> None:
    entries, _ = HOSTILE[case]
    fake.add_image("evil/img", case, [gz([("ok", b"fine", {}), *entries])])
    passwd = os.stat("/etc/passwd")
    result = ketch("pull", f"{fake.host}/evil/img:{case}", check=False)
    assert result.returncode == 1 and "layer" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped").exists()
    assert os.stat("/etc/passwd").st_nlink == passwd.st_nlink
    assert ketch("images", "-q").stdout == "" and not ketch.service().snapshots.layers()
    ketch.check_clean()


def test_lying_digest_size_and_truncated_blob(ketch: Ketch, fake: FakeRegistry) -> None:
    layer = gz([("file", b"data" * 1000, {})])
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    fake.add_image("lie/digest", "1", [layer], lie={"digest": wrong})
    fake.blobs[wrong] = layer  # served under a name that is not its digest
    assert_failed_cleanly(ketch, f"{fake.host}/lie/digest:1", "digest mismatch")
    fake.add_image("lie/size", "1", [layer], lie={"size": len(layer) + 10})
    assert_failed_cleanly(ketch, f"{fake.host}/lie/size:1", "bytes")
    fresh = gz([("file", os.urandom(4000), {})])  # not `layer`: its verified prefix may be kept for resuming
    fake.add_image("lie/truncated", "1", [fresh])
    fake.blobs["sha256:" + hashlib.sha256(fresh).hexdigest()] = fresh[: len(fresh) // 2]
    assert_failed_cleanly(ketch, f"{fake.host}/lie/truncated:1", "bytes")
    other = "sha256:" + hashlib.sha256(b"not it").hexdigest()
    fake.add_image("lie/diffid", "1", [gz([("file", b"other", {})])], diff_ids=[other])
    assert_failed_cleanly(ketch, f"{fake.host}/lie/diffid:1", "the config says")
    fake.add_image("lie/notgzip", "1", [b"\x1f\x8b" + os.urandom(4000)], diff_ids=[other])
    assert_failed_cleanly(ketch, f"{fake.host}/lie/notgzip:1", "")


def test_kill_9_during_pull_then_check_and_repull(ketch: Ketch, fake: FakeRegistry) -> None:
    layers = [gz([(f"f{i}", os.urandom(1 << 20), {})]) for i in range(3)]
    fake.add_image("slow/img", "1", layers)
    fake.delay = 0.6  # each blob takes ~0.6 s, so kills land in downloads and unpacks alike
    ref = f"{fake.host}/slow/img:1"
    rng = random.Random(4)
    for _ in range(5):
        proc = ketch.popen("pull", ref)
        time.sleep(rng.uniform(0.05, 1.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ketch.check_clean()
    fake.delay = 0.0
    ketch("pull", ref)
    for i in range(3):
        assert ketch.rootfs(ref, f"f{i}") is not None
    ketch.check_clean()


# --- login, logout and authenticated pulls through the CLI -------------------------------------------


def _engine_config(ketch: Ketch, **settings: Any) -> None:
    ketch.root.mkdir(parents=True, exist_ok=True)
    (ketch.root / "engine.json").write_text(json.dumps(settings))


def test_login_pull_push_logout_over_tls(
    ketch: Ketch, tls_registry: RegistryServer, busybox_oci: Path
) -> None:
    """TLS verified against the test CA in a Docker-style certs.d, htpasswd credentials from `login`."""
    reg = tls_registry
    _engine_config(ketch, **{"certs-dir": str(reg.certs_dir)})
    ref = f"{reg.host}/auth/busybox:1"
    push_layout(busybox_oci, "latest", ref, "--dest-cert-dir", str(reg.certs_dir / reg.host),
                "--dest-creds", f"{reg.user}:{reg.password}", "--dest-tls-verify=true")  # fmt: skip
    anonymous = ketch("pull", ref, check=False)
    assert anonymous.returncode == 1 and "auth" in anonymous.stderr.lower()
    wrong = ketch("login", "-u", reg.user, "-p", "nope", reg.host, check=False)
    assert wrong.returncode == 1 and not (ketch.root / "auth.json").exists()
    assert (
        ketch("login", "-u", reg.user, "--password-stdin", reg.host, check=False).returncode != 0
    )  # empty stdin
    assert ketch("login", "-u", reg.user, "-p", reg.password, reg.host).stdout.strip() == "Login Succeeded"
    auths = json.loads((ketch.root / "auth.json").read_text())["auths"]
    assert reg.host in auths and (ketch.root / "auth.json").stat().st_mode & 0o077 == 0
    ketch("pull", ref)
    ketch("tag", ref, f"{reg.host}/auth/copy:2")
    assert "digest: sha256:" in ketch("push", f"{reg.host}/auth/copy:2").stdout
    assert ketch("logout", reg.host).stdout.strip() == f"Removing login credentials for {reg.host}"
    ketch("rmi", ref)
    assert ketch("pull", ref, check=False).returncode == 1


def test_tls_verify_false_needs_no_ca(ketch: Ketch, tls_registry: RegistryServer, busybox_oci: Path) -> None:
    """Without the test CA anywhere, --tls-verify=false still logs in and pulls over TLS."""
    reg = tls_registry
    _engine_config(ketch, **{"certs-dir": str(ketch.root / "no-certs")})
    ref = f"{reg.host}/auth/busybox:1"
    push_layout(busybox_oci, "latest", ref, "--dest-cert-dir", str(reg.certs_dir / reg.host),
                "--dest-creds", f"{reg.user}:{reg.password}", "--dest-tls-verify=true")  # fmt: skip
    ketch("login", "-u", reg.user, "-p", reg.password, "--tls-verify=false", reg.host)
    ketch("pull", "--tls-verify=false", ref)
    assert os.access(ketch.rootfs(ref, "bin/busybox") or "", os.X_OK)


def test_token_auth_through_the_cli(ketch: Ketch, token_registry: RegistryServer, busybox_oci: Path) -> None:
    reg = token_registry
    ref = f"{reg.host}/tok/busybox:1"
    push_layout(busybox_oci, "latest", ref, "--dest-creds", f"{reg.user}:{reg.password}")
    assert ketch("pull", ref, check=False).returncode == 1
    ketch("login", "-u", reg.user, "-p", reg.password, reg.host)
    ketch("pull", ref)
    assert os.access(ketch.rootfs(ref, "bin/busybox") or "", os.X_OK)


def test_image_built_by_buildah(ketch: Ketch, registry: RegistryServer, tmp_path: Path) -> None:
    """buildah (from scratch, copy, config, commit, push in Docker's format) -> ketch pull."""
    need("buildah")
    store = tmp_path / "buildah"
    run = Path(tempfile.mkdtemp(prefix="kb", dir="/tmp"))  # buildah wants a short runroot
    bah = ["buildah", "--root", str(store / "root"), "--runroot", str(run), "--storage-driver", "vfs"]

    def buildah(*args: str) -> str:
        return subprocess.run([*bah, *args], check=True, capture_output=True, text=True).stdout.strip()

    try:
        (tmp_path / "hello").write_text("from buildah\n")
        container = buildah("from", "scratch")
        buildah("copy", container, str(tmp_path / "hello"), "/hello")
        buildah("config", "--label", "made=buildah", "--cmd", '["/hello"]', container)
        buildah("commit", "-q", "--format", "docker", container, "localhost/bb:1")
        ref = f"{registry.host}/test/buildah:1"
        buildah("push", "--tls-verify=false", "localhost/bb:1", f"docker://{ref}")
    finally:
        subprocess.run([*bah, "rm", "-a"], capture_output=True)
        subprocess.run([*bah, "rmi", "-a", "-f"], capture_output=True)
        subprocess.run(["umount", "-R", str(store)], capture_output=True)
        shutil.rmtree(run, ignore_errors=True)
    assert (
        json.loads(skopeo_inspect_raw(ref))["mediaType"]
        == "application/vnd.docker.distribution.manifest.v2+json"
    )
    ketch("pull", ref)
    assert (ketch.rootfs(ref, "hello") or Path("/nonexistent")).read_text() == "from buildah\n"
    doc = json.loads(ketch("image", "inspect", ref).stdout)[0]
    assert doc["Config"]["Labels"]["made"] == "buildah" and doc["Config"]["Cmd"] == ["/hello"]
    assert ketch("images", "--filter", "label=made=buildah", "-q").stdout.strip() == doc["Id"][7:19]
