"""ketch.registry against docker-registry (plain, TLS + htpasswd, token auth) and against fake servers
that drop connections, fail with 503 or redirect blobs elsewhere."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from registryd import (
    PASSWORD,
    USER,
    RegistryServer,
    busybox_oci,
    free_port,
    manifest_of,
    mtls_registry,
    need,
    registry,
    skopeo_copy,
    skopeo_inspect_raw,
    tls_registry,
    token_registry,
)

from ketch.errors import CorruptContent, NotFound, Unauthorized, Unavailable
from ketch.oci import digest as _digest
from ketch.oci import image as oci
from ketch.registry import client
from ketch.registry.auth import store_credentials
from ketch.registry.client import Registry, RegistryConfig

__all__ = [
    "busybox_oci",
    "mtls_registry",
    "registry",
    "tls_registry",
    "token_registry",
]  # fixtures, used by name


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", "/nonexistent/ketch-test-docker-config")
    need("skopeo")


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ketch-registry-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _blobs(layout: Path) -> tuple[oci.Manifest, dict[str, bytes]]:
    _, body = manifest_of(layout)
    manifest = oci.Manifest.from_json(json.loads(body))
    descs = [manifest.config, *manifest.layers]
    return manifest, {d.digest: (layout / "blobs" / "sha256" / d.digest[7:]).read_bytes() for d in descs}


def _fetch(r: Registry, repo: str, desc: oci.Descriptor, offset: int = 0) -> bytes:
    out = io.BytesIO()
    r.fetch_blob(repo, desc, out, offset=offset)
    return out.getvalue()


def _push_image(
    r: Registry, repo: str, layout: Path, tag: str, mount_from: str = ""
) -> tuple[list[str], str]:
    """Push a layout's blobs and manifest with ketch; (each blob's status, manifest digest)."""
    manifest, blobs = _blobs(layout)
    statuses = [
        r.push_blob(repo, d, lambda d=d: io.BytesIO(blobs[d.digest]), mount_from)  # type: ignore[misc]
        for d in (*manifest.layers, manifest.config)
    ]
    _, body = manifest_of(layout)
    return statuses, r.put_manifest(repo, tag, oci.OCI_MANIFEST, body)


@pytest.fixture(scope="module")
def pushed(registry: RegistryServer, busybox_oci: Path) -> str:
    """busybox pushed by skopeo to <registry>/test/busybox:latest; the repository."""
    skopeo_copy(f"oci:{busybox_oci}:latest", f"docker://{registry.host}/test/busybox:latest")
    return "test/busybox"


# --- pulls ------------------------------------------------------------------------------------------


def test_get_manifest_pushed_by_skopeo(registry: RegistryServer, busybox_oci: Path, pushed: str) -> None:
    want_digest, want_body = manifest_of(busybox_oci)
    with Registry(registry.host, RegistryConfig()) as r:
        assert r.get_manifest(pushed, "latest") == (oci.OCI_MANIFEST, want_digest, want_body)
        assert r.get_manifest(pushed, want_digest) == (oci.OCI_MANIFEST, want_digest, want_body)


def test_fetch_blobs_verify(registry: RegistryServer, busybox_oci: Path, pushed: str) -> None:
    manifest, _ = _blobs(busybox_oci)
    seen: list[int] = []
    with Registry(registry.host, RegistryConfig()) as r:
        for desc in (manifest.config, *manifest.layers):
            check = _digest.Verifier(desc.digest, desc.size)
            sink = io.BytesIO()
            r.fetch_blob(pushed, desc, sink, progress=seen.append)
            check.update(sink.getvalue())
            check.verify()
            assert seen[-1] == desc.size
            assert r.blob_exists(pushed, desc.digest)
        assert not r.blob_exists(pushed, _digest.of(b"never pushed"))


def test_fetch_blob_from_offset_gets_the_tail(
    registry: RegistryServer, busybox_oci: Path, pushed: str
) -> None:
    manifest, blobs = _blobs(busybox_oci)
    layer = manifest.layers[0]
    with Registry(registry.host, RegistryConfig()) as r:
        half = layer.size // 2
        assert _fetch(r, pushed, layer, offset=half) == blobs[layer.digest][half:]
        assert _fetch(r, pushed, layer, offset=layer.size) == b""


def test_missing_tag_and_repository(registry: RegistryServer, pushed: str) -> None:
    with Registry(registry.host, RegistryConfig()) as r:
        with pytest.raises(NotFound, match=f"^{registry.host}/test/busybox:nope not found"):
            r.get_manifest(pushed, "nope")
        with pytest.raises(NotFound, match="no/such:latest"):
            r.get_manifest("no/such", "latest")
        with pytest.raises(NotFound):
            r.list_tags("no/such")


def test_blob_larger_than_its_descriptor_is_cut_off(
    registry: RegistryServer, busybox_oci: Path, pushed: str
) -> None:
    manifest, _ = _blobs(busybox_oci)
    lying = oci.Descriptor(manifest.config.media_type, manifest.config.digest, manifest.config.size - 1)
    with Registry(registry.host, RegistryConfig()) as r, pytest.raises(CorruptContent, match="more than"):
        _fetch(r, pushed, lying)


def test_mirror_first_then_upstream(
    registry: RegistryServer, busybox_oci: Path, monkeypatch: pytest.MonkeyPatch, fakes: list[Fake]
) -> None:
    # docker.io's upstream is pointed at 127.0.0.1: no traffic leaves the machine
    skopeo_copy(f"oci:{busybox_oci}:latest", f"docker://{registry.host}/library/busybox:latest")
    want = manifest_of(busybox_oci)[0]
    manifest, blobs = _blobs(busybox_oci)
    dead_upstream, dead_mirror = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    monkeypatch.setattr(client, "HUB_ENDPOINT", dead_upstream)
    config = RegistryConfig(mirrors=(f"http://{dead_mirror}", registry.host), attempts=1, backoff=0.01)
    with Registry("docker.io", config) as hub:
        assert hub.endpoint == dead_upstream
        assert hub.get_manifest("busybox", "latest")[1] == want  # from the second mirror
        assert _fetch(hub, "busybox", manifest.layers[0]) == blobs[manifest.layers[0].digest]

    empty = Fake(lambda h: reply(h, 404 if h.path != "/v2/" else 200, b"{}"))
    fakes.append(empty)
    monkeypatch.setattr(client, "HUB_ENDPOINT", registry.host)
    with Registry("docker.io", RegistryConfig(mirrors=(f"http://{empty.host}",))) as hub:
        assert hub.get_manifest("busybox", "latest")[1] == want  # upstream, after the mirror had nothing
    assert empty.gets("/v2/library/busybox/manifests/latest")


# --- pushes -------------------------------------------------------------------------------------------


def test_push_then_skopeo_reads_the_same_digest(
    registry: RegistryServer, busybox_oci: Path, pushed: str, scratch: Path
) -> None:
    want_digest, want_body = manifest_of(busybox_oci)
    with Registry(registry.host, RegistryConfig()) as r:
        statuses, digest = _push_image(r, "copy/busybox", busybox_oci, "v1")
        assert statuses == ["pushed", "pushed"]
        assert digest == want_digest
        assert skopeo_inspect_raw(f"{registry.host}/copy/busybox:v1") == want_body

        statuses, _ = _push_image(r, "copy/busybox", busybox_oci, "v2")
        assert statuses == ["exists", "exists"]
        assert sorted(r.list_tags("copy/busybox")) == ["v1", "v2"]

        statuses, digest = _push_image(r, "third/busybox", busybox_oci, "v1", mount_from="copy/busybox")
        assert statuses == ["mounted", "mounted"]
        assert digest == want_digest

        statuses, _ = _push_image(r, "fourth/busybox", busybox_oci, "v1", mount_from="no/such")
        assert statuses == ["pushed", "pushed"]  # the mount's 202 opened an upload, which was used

    skopeo_copy(f"docker://{registry.host}/third/busybox:v1", f"oci:{scratch / 'out'}:v1")
    assert manifest_of(scratch / "out")[0] == want_digest


def test_push_rejects_a_short_local_blob(registry: RegistryServer) -> None:
    data = b"short blob"
    desc = oci.Descriptor(oci.OCI_LAYER, _digest.of(data + b"!"), len(data) + 1)
    with (
        Registry(registry.host, RegistryConfig(attempts=1)) as r,
        pytest.raises(CorruptContent, match="local blob"),
    ):
        r.push_blob("short/blob", desc, lambda: io.BytesIO(data))


# --- TLS + htpasswd ----------------------------------------------------------------------------------


def _tls_config(server: RegistryServer, auth_file: str = "", **kw: Any) -> RegistryConfig:
    assert server.certs_dir is not None
    kw.setdefault("certs_dir", str(server.certs_dir))
    kw.setdefault("default_insecure_loopback", False)
    return RegistryConfig(auth_file=auth_file, **kw)


@pytest.fixture(scope="module")
def tls_pushed(tls_registry: RegistryServer, busybox_oci: Path) -> str:
    assert tls_registry.certs_dir is not None
    skopeo_copy(
        f"oci:{busybox_oci}:latest", f"docker://{tls_registry.host}/secure/busybox:latest",
        "--dest-tls-verify=true", "--dest-cert-dir", str(tls_registry.certs_dir / tls_registry.host),
        "--dest-creds", f"{USER}:{PASSWORD}",
    )  # fmt: skip
    return "secure/busybox"


def test_tls_htpasswd_needs_credentials(tls_registry: RegistryServer, tls_pushed: str) -> None:
    with Registry(tls_registry.host, _tls_config(tls_registry)) as r:
        with pytest.raises(Unauthorized, match=f"^{tls_registry.host}: authentication required$"):
            r.get_manifest(tls_pushed, "latest")
        with pytest.raises(Unauthorized, match="authentication required"):
            r.ping()


def test_tls_htpasswd_with_credentials(
    tls_registry: RegistryServer, tls_pushed: str, busybox_oci: Path, scratch: Path
) -> None:
    auth_file = str(scratch / "auth.json")
    store_credentials(auth_file, tls_registry.host, USER, PASSWORD)
    with Registry(tls_registry.host, _tls_config(tls_registry, auth_file)) as r:
        r.ping()
        assert r.get_manifest(tls_pushed, "latest")[1] == manifest_of(busybox_oci)[0]
        statuses, _ = _push_image(r, "secure/other", busybox_oci, "v1", mount_from=tls_pushed)
        assert statuses == ["mounted", "mounted"]
    with Registry(tls_registry.host, _tls_config(tls_registry), credentials=(USER, PASSWORD)) as r:
        r.ping()  # login's check, with credentials not yet stored


def test_tls_wrong_password(tls_registry: RegistryServer, tls_pushed: str) -> None:
    with Registry(tls_registry.host, _tls_config(tls_registry), credentials=(USER, "wrong")) as r:
        with pytest.raises(Unauthorized, match=f"^{tls_registry.host}: credentials refused$"):
            r.ping()
        with pytest.raises(Unauthorized, match="credentials refused"):
            r.get_manifest(tls_pushed, "latest")


def test_tls_unknown_ca_is_a_clear_error(tls_registry: RegistryServer, scratch: Path) -> None:
    config = _tls_config(tls_registry, certs_dir=str(scratch / "empty"))
    r = Registry(tls_registry.host, config, credentials=(USER, PASSWORD))
    with r, pytest.raises(Unavailable, match="certificate verification failed") as caught:
        r.ping()
    assert tls_registry.host in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("policy", ["loopback-default", "tls-verify-false", "insecure-listed"])
def test_tls_without_verification(tls_registry: RegistryServer, scratch: Path, policy: str) -> None:
    policies: dict[str, dict[str, Any]] = {
        "loopback-default": {"default_insecure_loopback": True},
        "tls-verify-false": {"tls_verify": False},
        "insecure-listed": {"insecure": (tls_registry.host,)},
    }
    config = _tls_config(tls_registry, certs_dir=str(scratch / "empty"), **policies[policy])
    with Registry(tls_registry.host, config, credentials=(USER, PASSWORD)) as r:
        r.ping()


def test_client_certificates_from_certs_dir(mtls_registry: RegistryServer, scratch: Path) -> None:
    assert mtls_registry.certs_dir is not None
    config = RegistryConfig(certs_dir=str(mtls_registry.certs_dir), default_insecure_loopback=False)
    with Registry(mtls_registry.host, config) as r:
        r.ping()
    only_ca = scratch / mtls_registry.host
    only_ca.mkdir()
    shutil.copy(mtls_registry.certs_dir / mtls_registry.host / "ca.crt", only_ca / "ca.crt")
    r = Registry(mtls_registry.host, RegistryConfig(certs_dir=str(scratch), default_insecure_loopback=False))
    with r, pytest.raises(Unavailable, match=f"^{mtls_registry.host}: TLS error: .* client certificate"):
        r.ping()
    insecure = RegistryConfig(certs_dir=str(scratch))  # loopback: no verification, but still no http fallback
    with Registry(mtls_registry.host, insecure) as r, pytest.raises(Unavailable, match="client certificate"):
        r.ping()


# --- token auth ------------------------------------------------------------------------------------------


def test_token_auth(token_registry: RegistryServer, busybox_oci: Path, scratch: Path) -> None:
    tokens = token_registry.token_service
    assert tokens is not None
    with Registry(token_registry.host, RegistryConfig()) as anonymous, pytest.raises(Unauthorized) as caught:
        _push_image(anonymous, "tok/busybox", busybox_oci, "v1")
    assert str(caught.value) == f"{token_registry.host}: authentication required"

    auth_file = str(scratch / "auth.json")
    store_credentials(auth_file, token_registry.host, USER, PASSWORD)
    tokens.requests.clear()
    with Registry(token_registry.host, RegistryConfig(auth_file=auth_file)) as r:
        statuses, digest = _push_image(r, "tok/busybox", busybox_oci, "v1")
        assert statuses == ["pushed", "pushed"]
        assert tokens.requests == [(USER, ("repository:tok/busybox:pull,push",))]  # one token for the push

        manifest, blobs = _blobs(busybox_oci)
        assert r.get_manifest("tok/busybox", "v1")[1] == digest
        with ThreadPoolExecutor(4) as pool:
            got = list(
                pool.map(lambda d: _fetch(r, "tok/busybox", d), [manifest.config, *manifest.layers] * 3)
            )
        assert got == [blobs[d.digest] for d in [manifest.config, *manifest.layers] * 3]
        assert tokens.requests[1:] == [(USER, ("repository:tok/busybox:pull",))]  # cached across threads

        statuses, _ = _push_image(r, "tok/mounted", busybox_oci, "v1", mount_from="tok/busybox")
        assert statuses == ["mounted", "mounted"]
        assert (USER, ("repository:tok/mounted:pull,push", "repository:tok/busybox:pull")) in tokens.requests


def test_token_auth_refusals_and_access_token_field(token_registry: RegistryServer) -> None:
    tokens = token_registry.token_service
    assert tokens is not None
    r = Registry(token_registry.host, RegistryConfig(), credentials=(USER, "wrong"))
    with r, pytest.raises(Unauthorized, match=f"^{token_registry.host}: credentials refused$"):
        r.ping()
    tokens.token_field = "access_token"
    try:
        with Registry(token_registry.host, RegistryConfig(), credentials=(USER, PASSWORD)) as r:
            r.ping()
            with pytest.raises(NotFound, match="tok/none-here:latest"):
                r.get_manifest("tok/none-here", "latest")
    finally:
        tokens.token_field = "token"


# --- fake servers: dropped connections, 503s, redirects -------------------------------------------------


class Fake:
    """A tiny HTTP/1.1 server on 127.0.0.1 in a thread; `answer(handler)` writes each response.
    TLS probes (a ClientHello) are hung up on, so clients fall back to http at once."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle(self) -> None:
                try:
                    first = self.request.recv(1, socket.MSG_PEEK)
                except OSError:
                    return
                if first in (b"", b"\x16"):
                    return
                super().handle()

            def do_GET(self) -> None:
                fake.requests.append((self.command, self.path, dict(self.headers.items())))
                answer(self)

            do_HEAD = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def gets(self, path_part: str) -> list[dict[str, str]]:
        return [h for m, p, h in self.requests if m == "GET" and path_part in p]


def reply(
    h: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> None:
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def ranged(h: BaseHTTPRequestHandler, data: bytes) -> None:
    """200 with everything, or 206 with the tail a `Range: bytes=N-` asks for."""
    wanted = h.headers.get("Range", "")
    if wanted.startswith("bytes="):
        start = int(wanted[6:].rstrip("-"))
        reply(h, 206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
    else:
        reply(h, 200, data)


@pytest.fixture
def fakes() -> Iterator[list[Fake]]:
    made: list[Fake] = []
    try:
        yield made
    finally:
        for fake in made:
            fake.close()


BLOB = os.urandom(3 * 1024 * 1024 + 12345)
BLOB_DESC = oci.Descriptor(oci.OCI_LAYER, _digest.of(BLOB), len(BLOB))
BLOB_PATH = f"/v2/fake/repo/blobs/{BLOB_DESC.digest}"


def test_dropped_connection_resumes_with_range(fakes: list[Fake]) -> None:
    cut = 1024 * 1024 + 777

    def answer(h: BaseHTTPRequestHandler) -> None:
        if h.path == BLOB_PATH and len(fake.gets(BLOB_PATH)) == 1:
            h.send_response(200)
            h.send_header("Content-Length", str(len(BLOB)))
            h.end_headers()
            h.wfile.write(BLOB[:cut])
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
        elif h.path == BLOB_PATH:
            ranged(h, BLOB)
        else:
            reply(h, 200, b"{}")

    fake = Fake(answer)
    fakes.append(fake)
    seen: list[int] = []
    with Registry(fake.host, RegistryConfig(backoff=0.01)) as r:
        out = io.BytesIO()
        r.fetch_blob("fake/repo", BLOB_DESC, out, progress=seen.append)
    assert out.getvalue() == BLOB
    gets = fake.gets(BLOB_PATH)
    assert len(gets) == 2
    assert "Range" not in gets[0]
    assert gets[1]["Range"] == f"bytes={cut}-"
    assert seen[-1] == len(BLOB) and seen == sorted(seen)


def test_server_ignoring_range_has_the_prefix_skipped(fakes: list[Fake]) -> None:
    fake = Fake(lambda h: reply(h, 200, BLOB if h.path == BLOB_PATH else b"{}"))
    fakes.append(fake)
    with Registry(fake.host, RegistryConfig()) as r:
        assert _fetch(r, "fake/repo", BLOB_DESC, offset=5000) == BLOB[5000:]
    assert fake.gets(BLOB_PATH)[0]["Range"] == "bytes=5000-"


def test_503_twice_then_success(fakes: list[Fake]) -> None:
    def answer(h: BaseHTTPRequestHandler) -> None:
        if h.path == BLOB_PATH and len(fake.gets(BLOB_PATH)) <= 2:
            reply(h, 503, b'{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}')
        else:
            reply(h, 200, BLOB if h.path == BLOB_PATH else b"{}")

    fake = Fake(answer)
    fakes.append(fake)
    with Registry(fake.host, RegistryConfig(backoff=0.01)) as r:
        assert _fetch(r, "fake/repo", BLOB_DESC) == BLOB
    assert len(fake.gets(BLOB_PATH)) == 3


def test_503_forever_is_unavailable(fakes: list[Fake]) -> None:
    fake = Fake(lambda h: reply(h, 503) if h.path != "/v2/" else reply(h, 200, b"{}"))
    fakes.append(fake)
    r = Registry(fake.host, RegistryConfig(backoff=0.01, attempts=3))
    with (
        r,
        pytest.raises(Unavailable, match=f"^{fake.host}: 503 Service Unavailable \\(after 3 attempts\\)$"),
    ):
        r.get_manifest("fake/repo", "latest")
    assert len(fake.gets("/manifests/latest")) == 3


def test_connection_refused_is_unavailable() -> None:
    host = f"127.0.0.1:{free_port()}"
    r = Registry(host, RegistryConfig(backoff=0.01, attempts=2))
    with r, pytest.raises(Unavailable, match=f"^{host}: connection refused \\(after 2 attempts\\)$"):
        r.get_manifest("any/repo", "latest")


def test_blob_redirect_to_another_host_drops_authorization(fakes: list[Fake], scratch: Path) -> None:
    storage = Fake(lambda h: reply(h, 200, BLOB))
    fakes.append(storage)
    basic = "Basic a2V0Y2g6cGFzcw=="  # ketch:pass

    def answer(h: BaseHTTPRequestHandler) -> None:
        if h.headers.get("Authorization") != basic:
            reply(h, 401, b"{}", {"WWW-Authenticate": 'Basic realm="fake"'})
        elif h.path == BLOB_PATH:
            reply(h, 307, b"", {"Location": f"http://{storage.host}/storage/blob?sig=1"})
        else:
            reply(h, 200, b"{}")

    front = Fake(answer)
    fakes.append(front)
    auth_file = str(scratch / "auth.json")
    store_credentials(auth_file, front.host, "ketch", "pass")
    with Registry(front.host, RegistryConfig(auth_file=auth_file)) as r:
        assert _fetch(r, "fake/repo", BLOB_DESC) == BLOB
    assert front.gets(BLOB_PATH)[-1]["Authorization"] == basic
    (got,) = storage.gets("/storage/blob?sig=1")
    assert "Authorization" not in got


def test_tags_are_listed_page_by_page(fakes: list[Fake]) -> None:
    pages = {
        "/v2/fake/repo/tags/list": (
            b'{"name":"fake/repo","tags":["a","b"]}',
            '</v2/fake/repo/tags/list?last=b&n=2>; rel="next"',
        ),
        "/v2/fake/repo/tags/list?last=b&n=2": (b'{"name":"fake/repo","tags":["c"]}', ""),
    }

    def answer(h: BaseHTTPRequestHandler) -> None:
        body, link = pages.get(h.path, (b"{}", ""))
        reply(h, 200, body, {"Link": link} if link else {})

    fake = Fake(answer)
    fakes.append(fake)
    with Registry(fake.host, RegistryConfig()) as r:
        assert r.list_tags("fake/repo") == ["a", "b", "c"]
