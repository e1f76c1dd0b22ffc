"""ketch save, load and import against real storage, with podman and skopeo as the third-party readers and writers."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.root

KETCH = str(Path(sys.executable).parent / "ketch")
NAME = "ketch-test/busybox:1"


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: layers are unpacked with their owners")
    if not shutil.which("busybox"):
        pytest.skip("needs busybox (apt-get install busybox-static)")


def ketch(
    root: Path, *args: str, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        [KETCH, "--root", str(root), *args], input=input, capture_output=True, timeout=60, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ketch {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc


def inspect(root: Path, name: str) -> dict[str, Any]:
    doc: list[dict[str, Any]] = json.loads(ketch(root, "image", "inspect", name).stdout)
    return doc[0]


def image_ids(root: Path) -> list[str]:
    return ketch(root, "images", "-q", "--no-trunc").stdout.decode().split()


def _add(
    tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, target: str = ""
) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data), target
    info.mode = 0o644 if kind == tarfile.REGTYPE else 0o755
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]


def _write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            _add(tar, name, data)


@pytest.fixture
def roots(tmp_path: Path) -> Iterator[Callable[[], Path]]:
    """Fresh storage roots, removed afterwards."""
    made: list[Path] = []

    def new() -> Path:
        made.append(tmp_path / f"root{len(made)}")
        return made[-1]

    yield new
    for root in made:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A root holding NAME, imported from a gzipped busybox rootfs: (root, image id)."""
    _need_root()
    top = tmp_path_factory.mktemp("archive")
    rootfs = top / "rootfs.tar.gz"
    with open(shutil.which("busybox") or "", "rb") as f:
        busybox = f.read()
    with tarfile.open(rootfs, "w:gz") as tar:
        for d in ("bin", "etc"):
            _add(tar, d, kind=tarfile.DIRTYPE)
        _add(tar, "bin/busybox", busybox)
        for link in ("sh", "ls"):
            _add(tar, f"bin/{link}", kind=tarfile.SYMTYPE, target="busybox")
        _add(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    root = top / "source"
    image_id = (
        ketch(root, "import", "-c", "ENV A=b", "-c", 'CMD ["sh"]', str(rootfs), NAME).stdout.decode().strip()
    )
    yield root, image_id
    shutil.rmtree(top)


@pytest.fixture(scope="module")
def docker_archive(source: tuple[Path, str]) -> Path:
    path = source[0].parent / "saved.tar"
    ketch(source[0], "save", "-o", str(path), "ketch-test/busybox")
    return path


def _assert_loaded(root: Path, image_id: str, name: str | None = NAME) -> None:
    assert image_ids(root) == [image_id]
    doc = inspect(root, image_id)
    assert doc["RepoTags"] == ([name] if name else [])
    assert os.path.isfile(os.path.join(doc["GraphDriver"]["Data"]["UpperDir"], "bin", "busybox"))


# --- import --------------------------------------------------------------------------------------------


def test_import_applies_changes(source: tuple[Path, str]) -> None:
    root, image_id = source
    assert image_id.startswith("sha256:")
    doc = inspect(root, NAME)
    assert doc["Id"] == image_id
    assert doc["Config"]["Env"] == ["A=b"] and doc["Config"]["Cmd"] == ["sh"]
    assert doc["Comment"].startswith("Imported from ") and doc["Os"] == "linux"
    assert len(doc["RootFS"]["Layers"]) == 1


def test_import_from_stdin_with_message(source: tuple[Path, str], roots: Callable[[], Path]) -> None:
    root = roots()
    plain = gzip.decompress((source[0].parent / "rootfs.tar.gz").read_bytes())
    image_id = ketch(root, "import", "-m", "hello", "-", input=plain).stdout.decode().strip()
    doc = inspect(root, image_id)
    assert doc["Comment"] == "hello" and doc["RepoTags"] == []
    assert os.path.islink(os.path.join(doc["GraphDriver"]["Data"]["UpperDir"], "bin", "sh"))
    bad = ketch(root, "import", "-c", "RUN true", "-", input=plain, check=False)
    assert bad.returncode == 1 and b"RUN is not a valid change command" in bad.stderr


def test_import_from_a_url(source: tuple[Path, str], roots: Callable[[], Path]) -> None:
    """`import URL` from a server on 127.0.0.1 gives the same layer as importing the file."""
    import functools
    import http.server
    import threading

    directory = str(source[0].parent)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    handler.log_message = lambda *_a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        root = roots()
        url = f"http://127.0.0.1:{server.server_address[1]}/rootfs.tar.gz"
        image_id = ketch(root, "import", url, "from/url:1").stdout.decode().strip()
        assert inspect(root, image_id)["RootFS"]["Layers"] == inspect(source[0], NAME)["RootFS"]["Layers"]
        missing = ketch(root, "import", url + ".nope", check=False)
        assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    finally:
        server.shutdown()
        server.server_close()


# --- save ----------------------------------------------------------------------------------------------


def test_docker_archive_layout(source: tuple[Path, str], docker_archive: Path) -> None:
    image_id = source[1]
    members = _members(docker_archive)
    (entry,) = json.loads(members["manifest.json"])
    assert entry["Config"] == image_id.removeprefix("sha256:") + ".json" and entry["RepoTags"] == [NAME]
    config = json.loads(members[entry["Config"]])
    assert "sha256:" + hashlib.sha256(members[entry["Config"]]).hexdigest() == image_id
    (layer,) = entry["Layers"]
    assert "sha256:" + hashlib.sha256(members[layer]).hexdigest() == config["rootfs"]["diff_ids"][0]
    layer_dir = layer.removesuffix("/layer.tar")
    assert members[f"{layer_dir}/VERSION"] == b"1.0"
    assert json.loads(members[f"{layer_dir}/json"])["id"] == layer_dir
    assert json.loads(members["repositories"]) == {"ketch-test/busybox": {"1": layer_dir}}
    with tarfile.open(docker_archive) as tar:
        names = tar.getnames()
        assert names == sorted(names, key=lambda n: n.split("/")) and {m.mtime for m in tar} == {0}


def test_save_is_deterministic_and_streams_to_stdout(source: tuple[Path, str], docker_archive: Path) -> None:
    streamed = ketch(source[0], "save", NAME).stdout
    assert streamed == docker_archive.read_bytes()


# --- load ----------------------------------------------------------------------------------------------


def test_save_load_round_trip(
    source: tuple[Path, str], docker_archive: Path, roots: Callable[[], Path]
) -> None:
    root = roots()
    assert ketch(root, "load", "-i", str(docker_archive)).stdout == f"Loaded image: {NAME}\n".encode()
    _assert_loaded(root, source[1])
    again = ketch(root, "load", "-q", "-i", str(docker_archive))  # loading twice changes nothing
    assert again.stdout == f"Loaded image: {NAME}\n".encode()
    _assert_loaded(root, source[1])


def test_load_from_a_pipe_gzipped(
    source: tuple[Path, str], docker_archive: Path, roots: Callable[[], Path]
) -> None:
    root = roots()
    ketch(root, "load", input=gzip.compress(docker_archive.read_bytes(), compresslevel=1))
    _assert_loaded(root, source[1])
    assert not [p for p in (root / "storage").iterdir() if p.is_file() and p.name.startswith("tmp")]


def test_load_zstd_archive_and_corrupt_streams(
    source: tuple[Path, str], docker_archive: Path, roots: Callable[[], Path]
) -> None:
    zstandard = pytest.importorskip("zstandard")
    root = roots()
    ketch(root, "load", input=zstandard.ZstdCompressor().compress(docker_archive.read_bytes()))
    _assert_loaded(root, source[1])
    cut = gzip.compress(docker_archive.read_bytes(), compresslevel=1)
    for bad in (cut[: len(cut) // 2], cut[:100] + b"garbage" * 100, b"not an archive at all" * 100):
        proc = ketch(roots(), "load", input=bad, check=False)
        assert proc.returncode == 1 and proc.stderr.startswith(b"Error: ") and b"Traceback" not in proc.stderr


def test_load_compressed_layer_and_untagged(
    source: tuple[Path, str], docker_archive: Path, roots: Callable[[], Path]
) -> None:
    """containerd-backed docker saves layers compressed; RepoTags may be null."""
    root, path = roots(), docker_archive.parent / "gzlayer.tar"
    members = _members(docker_archive)
    (entry,) = json.loads(members["manifest.json"])
    members[entry["Layers"][0]] = gzip.compress(members[entry["Layers"][0]], compresslevel=1)
    members["manifest.json"] = json.dumps([{**entry, "RepoTags": None}]).encode()
    _write_tar(path, members)
    assert ketch(root, "load", "-i", str(path)).stdout == f"Loaded image ID: {source[1]}\n".encode()
    _assert_loaded(root, source[1], None)
    # and saving it again decompresses the stored layer back into a layer.tar with the right diff_id
    resaved = docker_archive.parent / "resaved.tar"
    ketch(root, "save", "-o", str(resaved), source[1])
    assert _members(resaved)[entry["Layers"][0]] == _members(docker_archive)[entry["Layers"][0]]


def test_load_docker25_shaped_archive(
    source: tuple[Path, str], docker_archive: Path, roots: Callable[[], Path]
) -> None:
    """docker 25+ writes blobs/sha256/ with both manifest.json and index.json; either one is enough."""
    members = _members(docker_archive)
    (entry,) = json.loads(members["manifest.json"])
    config, layer = members[entry["Config"]], members[entry["Layers"][0]]
    digest = {name: hashlib.sha256(data).hexdigest() for name, data in (("config", config), ("layer", layer))}
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{digest['config']}", "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{digest['layer']}", "size": len(layer)}],
    }).encode()  # fmt: skip
    mdigest = hashlib.sha256(manifest).hexdigest()
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{mdigest}", "size": len(manifest),
        "annotations": {"io.containerd.image.name": "docker.io/ketch-test/busybox:1", "org.opencontainers.image.ref.name": "1"},
    }]}  # fmt: skip
    layout = {
        f"blobs/sha256/{digest['config']}": config, f"blobs/sha256/{digest['layer']}": layer, f"blobs/sha256/{mdigest}": manifest,
        "index.json": json.dumps(index).encode(), "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
    }  # fmt: skip
    docker25 = {**layout, "manifest.json": json.dumps([{
        "Config": f"blobs/sha256/{digest['config']}", "RepoTags": ["ketch-test/busybox:25"], "Layers": [f"blobs/sha256/{digest['layer']}"],
    }]).encode()}  # fmt: skip
    for members_, name in ((docker25, "ketch-test/busybox:25"), (layout, NAME)):
        root, path = roots(), docker_archive.parent / "docker25.tar"
        _write_tar(path, members_)
        assert ketch(root, "load", "-i", str(path)).stdout == f"Loaded image: {name}\n".encode()
        _assert_loaded(root, source[1], name)


def test_oci_archive_round_trip(source: tuple[Path, str], roots: Callable[[], Path]) -> None:
    path = source[0].parent / "oci.tar"
    ketch(source[0], "save", "--format", "oci-archive", "-o", str(path), NAME)
    members = _members(path)
    assert members["oci-layout"] == b'{"imageLayoutVersion":"1.0.0"}'
    (desc,) = json.loads(members["index.json"])["manifests"]
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "1"
    root = roots()
    ketch(root, "load", "-i", str(path))
    _assert_loaded(root, source[1])
    assert inspect(root, NAME)["RootFS"] == inspect(source[0], NAME)["RootFS"]


# --- hostile archives ------------------------------------------------------------------------------------


def test_layer_not_matching_diff_id_is_refused(docker_archive: Path, roots: Callable[[], Path]) -> None:
    root, path = roots(), docker_archive.parent / "tampered.tar"
    members = _members(docker_archive)
    (entry,) = json.loads(members["manifest.json"])
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        _add(tar, "bin/evil", b"#!/bin/sh\n")
    members[entry["Layers"][0]] = evil.getvalue()
    _write_tar(path, members)
    proc = ketch(root, "load", "-i", str(path), check=False)
    assert proc.returncode == 1 and b"diff_id" in proc.stderr and b"Traceback" not in proc.stderr
    assert image_ids(root) == []


@pytest.mark.parametrize("hostile", ["../x", "/etc/x", "a/../../x"])
def test_member_escaping_the_archive_is_refused(
    docker_archive: Path, roots: Callable[[], Path], hostile: str
) -> None:
    root, path = roots(), docker_archive.parent / "escape.tar"
    _write_tar(path, {**_members(docker_archive), hostile: b"x"})
    proc = ketch(root, "load", "-i", str(path), check=False)
    assert (
        proc.returncode == 1 and proc.stderr.startswith(b"Error: ") and b"unsafe member name" in proc.stderr
    )
    assert image_ids(root) == []


# --- third parties: podman and skopeo ----------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.skip(f"needs {name} (apt-get install {name})")
    return path


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    exe = _tool("podman")
    top = tmp_path / "podman"
    for d in ("root", "runroot", "tmp"):
        (top / d).mkdir(parents=True)
    # podman refuses a runroot path over 50 characters: it is given relative to `top`
    base = [exe, "--root", str(top / "root"), "--runroot", "runroot", "--tmpdir", str(top / "tmp"),
            "--storage-driver", "vfs", "--events-backend", "file"]  # fmt: skip
    env = dict(os.environ, TMPDIR=str(top / "tmp"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=120, check=False, env=env, cwd=top
        )

    yield run
    run("rmi", "--all", "--force")
    for mount in reversed(Path("/proc/self/mounts").read_text().splitlines()):
        if mount.split()[1].startswith(str(top)):
            subprocess.run(["umount", mount.split()[1]], check=False, capture_output=True)
    shutil.rmtree(top)


def test_podman_loads_ketch_archive(
    docker_archive: Path, podman: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    loaded = podman("load", "-i", str(docker_archive))
    assert loaded.returncode == 0, loaded.stderr
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    assert "ketch-test/busybox:1" in listed.stdout, listed.stdout + listed.stderr


def test_skopeo_reads_ketch_archives(source: tuple[Path, str], docker_archive: Path) -> None:
    skopeo = _tool("skopeo")
    oci_archive = source[0].parent / "skopeo-oci.tar"
    ketch(source[0], "save", "--format", "oci-archive", "-o", str(oci_archive), NAME)
    env = dict(os.environ, TMPDIR=str(source[0].parent))
    for ref in (f"docker-archive:{docker_archive}", f"oci-archive:{oci_archive}"):
        proc = subprocess.run(
            [skopeo, "inspect", "--config", ref],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["config"]["Env"] == ["A=b"]


def test_load_archive_written_by_skopeo(
    source: tuple[Path, str], roots: Callable[[], Path], tmp_path: Path
) -> None:
    skopeo = _tool("skopeo")
    layout, written = tmp_path / "layout", tmp_path / "skopeo.tar"
    ketch(source[0], "save", "--format", "oci-dir", "-o", str(layout), NAME)
    assert (layout / "index.json").is_file() and (layout / "oci-layout").is_file()
    copy = subprocess.run([skopeo, "--insecure-policy", "copy", "-q", f"oci:{layout}", f"docker-archive:{written}:skopeo/made:v1"],
                          capture_output=True, text=True, timeout=60, check=False, env=dict(os.environ, TMPDIR=str(tmp_path)))  # fmt: skip
    assert copy.returncode == 0, copy.stderr
    root = roots()
    assert ketch(root, "load", "-i", str(written)).stdout == b"Loaded image: skopeo/made:v1\n"
    _assert_loaded(root, source[1], "skopeo/made:v1")


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A private registry (Debian's docker-registry, distribution 2.x) on a free loopback port."""
    import socket
    import time

    exe = _tool("docker-registry")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {tmp_path / 'registry'}}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n"
    )
    proc = subprocess.Popen([exe, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            assert time.monotonic() < deadline and proc.poll() is None, "the registry did not start"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_loaded_image_pushes_and_pulls_back(
    source: tuple[Path, str], docker_archive: Path, roots: Callable[[], Path], registry: str
) -> None:
    """A docker-archive's layers are stored uncompressed (schema 2, rootfs.diff.tar): a registry takes them."""
    loaded, pulled = roots(), roots()
    for root in (loaded, pulled):
        root.mkdir()
        (root / "engine.json").write_text(json.dumps({"insecure-registries": [registry]}))
    ketch(loaded, "load", "-i", str(docker_archive))
    ketch(loaded, "tag", NAME, f"{registry}/loaded/busybox:1")
    ketch(loaded, "push", f"{registry}/loaded/busybox:1")
    ketch(pulled, "pull", "-q", f"{registry}/loaded/busybox:1")
    _assert_loaded(pulled, source[1], f"{registry}/loaded/busybox:1")


def test_save_two_images_sharing_a_layer(
    source: tuple[Path, str], roots: Callable[[], Path], tmp_path: Path
) -> None:
    """The second copy of a layer.tar is a symlink to the first, as docker writes it; loaders follow it."""
    root, rootfs = roots(), source[0].parent / "rootfs.tar.gz"
    first = ketch(root, "import", str(rootfs), "ketch-test/a:1").stdout.decode().strip()
    second = ketch(root, "import", "-c", "USER 1000", str(rootfs), "ketch-test/b:2").stdout.decode().strip()
    path = tmp_path / "two.tar"
    ketch(root, "save", "-o", str(path), "ketch-test/a:1", "ketch-test/b")
    with tarfile.open(path) as tar:
        links = [m for m in tar if m.issym()]
    assert len(links) == 1 and links[0].name.endswith("/layer.tar") and links[0].linkname.startswith("../")
    again = roots()
    out = ketch(again, "load", "-i", str(path)).stdout.decode()
    assert out == "Loaded image: ketch-test/a:1\nLoaded image: ketch-test/b:2\n"
    assert sorted(image_ids(again)) == sorted([first, second])
    assert inspect(again, "ketch-test/b:2")["Config"]["User"] == "1000"


def test_load_layout_with_a_multi_platform_index(
    source: tuple[Path, str], roots: Callable[[], Path], tmp_path: Path
) -> None:
    """An index inside the layout: the host's manifest is picked; a missing or broken other platform is not read."""
    from ketch.oci.image import Platform

    layout = tmp_path / "layout"
    ketch(source[0], "save", "--format", "oci-dir", "-o", str(layout), NAME)
    (desc,) = json.loads((layout / "index.json").read_text())["manifests"]
    broken = json.dumps({"schemaVersion": 2, "mediaType": desc["mediaType"], "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "0" * 64, "size": 2}, "layers": []}).encode()  # fmt: skip
    (layout / "blobs/sha256" / hashlib.sha256(broken).hexdigest()).write_bytes(broken)
    host = Platform.host()
    other = {
        "mediaType": desc["mediaType"],
        "size": len(broken),
        "digest": "sha256:" + hashlib.sha256(broken).hexdigest(),
    }
    missing = {
        **other,
        "digest": "sha256:" + "1" * 64,
        "platform": {"os": "linux", "architecture": "riscv64"},
    }
    nested = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        missing, {**other, "platform": {"os": "linux", "architecture": "s390x"}},
        {**other, "platform": {"os": "unknown", "architecture": "unknown"}},
        {"mediaType": desc["mediaType"], "digest": desc["digest"], "size": desc["size"],
         "platform": {"os": host.os, "architecture": host.architecture}},
    ]}).encode()  # fmt: skip
    (layout / "blobs/sha256" / hashlib.sha256(nested).hexdigest()).write_bytes(nested)
    top = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "size": len(nested),
           "digest": "sha256:" + hashlib.sha256(nested).hexdigest(), "annotations": desc["annotations"]}]}  # fmt: skip
    (layout / "index.json").write_text(json.dumps(top))
    path = tmp_path / "multi.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(layout, arcname=".")
    root = roots()
    assert ketch(root, "load", "-i", str(path)).stdout == f"Loaded image: {NAME}\n".encode()
    _assert_loaded(root, source[1])
    refused = ketch(roots(), "load", "--platform", "linux/riscv64", "-i", str(path), check=False)
    assert refused.returncode == 1 and b"Traceback" not in refused.stderr
