"""Test registries: Debian's docker-registry (plain, TLS + htpasswd, token auth) on 127.0.0.1, and images.

Import from tests in this directory (`from registryd import registry, make_busybox_image, ...`).
Needs the Debian packages docker-registry, skopeo and openssl; bcrypt for htpasswd comes from libcrypt
(libxcrypt, always on Debian) through ctypes, JWTs are signed with `openssl dgst`.
"""

from __future__ import annotations

import base64
import ctypes
import gzip
import hashlib
import http.client
import io
import json
import os
import platform
import shutil
import socket
import ssl
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

REGISTRY_BIN = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
USER, PASSWORD = "ketch", "s3cret-pass"


def need(*programs: str) -> None:
    """Skip the test unless every program is installed."""
    for program in programs:
        if not shutil.which(program) and not os.path.exists(program):
            pytest.skip(f"needs {program} (apt-get install docker-registry skopeo openssl)")


# --- certificates, passwords, tokens --------------------------------------------------------------


def openssl(*args: str, cwd: Path | None = None, data: bytes | None = None) -> bytes:
    proc = subprocess.run(
        ["openssl", *args], cwd=cwd, input=data, capture_output=True, check=False, timeout=60
    )
    if proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def make_ca(directory: Path) -> tuple[Path, Path]:
    """A throwaway CA: (ca.crt, ca.key)."""
    crt, key = directory / "ca.crt", directory / "ca.key"
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=ketch test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return crt, key


def make_cert(
    directory: Path, name: str, ca: tuple[Path, Path], rsa: bool = False, san: str = "", eku: str = ""
) -> tuple[Path, Path]:
    """A certificate signed by `ca`: (name.crt, name.key); an EC P-256 key unless `rsa`."""
    crt, key, csr, ext = (directory / f"{name}.{s}" for s in ("crt", "key", "csr", "ext"))
    keyopts = ["rsa:2048"] if rsa else ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    openssl(
        "req",
        "-new",
        "-newkey",
        *keyopts,
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={name}",
    )
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"]
    lines += [f"subjectAltName={san}"] if san else []
    lines += [f"extendedKeyUsage={eku}"] if eku else []
    ext.write_text("\n".join(lines) + "\n")
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-set_serial",
        str(int.from_bytes(os.urandom(8), "big")), "-days", "2", "-out", str(crt), "-extfile", str(ext),
    )  # fmt: skip
    return crt, key


def bcrypt_hash(password: str) -> str:
    """A bcrypt ($2y$) hash from glibc's libcrypt (libxcrypt), which docker-registry's htpasswd accepts."""
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(b"$2y$", 5, None, 0)
    hashed = lib.crypt(password.encode(), salt) if salt else None
    if not hashed or not hashed.startswith(b"$2"):
        raise AssertionError("libcrypt cannot make bcrypt hashes")
    return str(hashed.decode())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(claims: dict[str, Any], key: Path, cert_der: bytes) -> str:
    """An RS256 JWT with the signing certificate in `x5c` (what distribution's token auth verifies)."""
    header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(cert_der).decode()]}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    signature = openssl("dgst", "-sha256", "-sign", str(key), data=signing_input.encode())
    return f"{signing_input}.{_b64url(signature)}"


# --- docker-registry --------------------------------------------------------------------------------


class RegistryServer:
    """A docker-registry process; `host` is 127.0.0.1:PORT."""

    def __init__(self, root: Path, scheme: str = "http") -> None:
        self.root, self.scheme = root, scheme
        self.host, self.url = "", ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.user, self.password = USER, PASSWORD
        self.ca: Path | None = None  # the CA of a TLS registry
        self.certs_dir: Path | None = None  # Docker's layout: certs_dir/<host>/ca.crt
        self.token_service: TokenService | None = None

    def start(self, config: dict[str, Any]) -> None:
        for _ in range(5):  # a port chosen free can be taken before the registry binds it
            port = free_port()
            config["http"]["addr"] = f"127.0.0.1:{port}"
            (self.root / "config.yml").write_text(json.dumps(config, indent=1))  # JSON is YAML
            with open(self.root / "registry.log", "ab") as log:
                self.proc = subprocess.Popen(
                    [REGISTRY_BIN, "serve", str(self.root / "config.yml")], stdout=log, stderr=log,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
            self.host, self.url = f"127.0.0.1:{port}", f"{self.scheme}://127.0.0.1:{port}"
            if self._wait_ready():
                return
            self.stop()
        raise AssertionError(f"docker-registry did not start: {self.log()}")

    def _wait_ready(self, timeout: float = 20.0) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self._answers():
                return True
            time.sleep(0.05)
        return False

    def _answers(self) -> bool:
        host, port = self.host.split(":")
        if self.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, int(port), timeout=2, context=ctx
            )
        else:
            conn = http.client.HTTPConnection(host, int(port), timeout=2)
        try:
            conn.request("GET", "/v2/")
            return conn.getresponse().status in (200, 401)
        except ssl.SSLError:
            return True  # it speaks TLS, and wants a client certificate
        except OSError:
            return False
        finally:
            conn.close()

    def log(self) -> str:
        try:
            return (self.root / "registry.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_config(root: Path) -> dict[str, Any]:
    (root / "data").mkdir(exist_ok=True)
    return {
        "version": "0.1",
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "data")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": "", "secret": uuid.uuid4().hex},
    }


def start_registry(
    root: Path, tls: bool = False, htpasswd: bool = False, token: bool = False, client_certs: bool = False
) -> RegistryServer:
    """Start a registry under `root`: plain http unless `tls`; auth by htpasswd or token if asked;
    `client_certs` (with tls) requires client certificates, put in certs_dir/<host>/client.{cert,key}."""
    need(REGISTRY_BIN)
    server = RegistryServer(root, "https" if tls else "http")
    config = base_config(root)
    try:
        if tls or token:
            ca = make_ca(root)
            server.ca = ca[0]
        if tls:
            crt, key = make_cert(root, "server", ca, san="IP:127.0.0.1", eku="serverAuth")
            config["http"]["tls"] = {"certificate": str(crt), "key": str(key)}
        if client_certs:
            config["http"]["tls"]["clientcas"] = [str(ca[0])]
        if htpasswd:
            (root / "htpasswd").write_text(f"{USER}:{bcrypt_hash(PASSWORD)}\n")
            config["auth"] = {"htpasswd": {"realm": "ketch-test", "path": str(root / "htpasswd")}}
        if token:
            crt, key = make_cert(root, "token-signer", ca, rsa=True)
            der = openssl("x509", "-in", str(crt), "-outform", "DER")
            server.token_service = TokenService(key, der, USER, PASSWORD)
            config["auth"] = {
                "token": {
                    "realm": server.token_service.realm, "service": TokenService.SERVICE,
                    "issuer": TokenService.ISSUER, "rootcertbundle": str(ca[0]),
                },
            }  # fmt: skip
        server.start(config)
        if tls:
            server.certs_dir = root / "certs.d"
            (server.certs_dir / server.host).mkdir(parents=True)
            shutil.copy(ca[0], server.certs_dir / server.host / "ca.crt")
        if client_certs:  # Docker's certs.d names: client.cert + client.key
            crt, key = make_cert(root, "client", ca, eku="clientAuth")
            shutil.copy(crt, server.certs_dir / server.host / "client.cert")
            shutil.copy(key, server.certs_dir / server.host / "client.key")
    except BaseException:
        stop_registry(server)
        raise
    return server


def stop_registry(server: RegistryServer) -> None:
    try:
        server.stop()
        if server.token_service is not None:
            server.token_service.close()
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


def _serve(**kw: bool) -> Iterator[RegistryServer]:
    server = start_registry(Path(tempfile.mkdtemp(prefix="ketch-registry-")), **kw)
    try:
        yield server
    finally:
        stop_registry(server)


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    """docker-registry on 127.0.0.1:PORT over plain http, no auth: .host, .url, .root."""
    yield from _serve()


@pytest.fixture(scope="module")
def tls_registry() -> Iterator[RegistryServer]:
    """TLS (a test CA) + htpasswd: .host, .url, .root, .user, .password, .ca, .certs_dir (certs_dir/<host>/ca.crt)."""
    yield from _serve(tls=True, htpasswd=True)


@pytest.fixture(scope="module")
def mtls_registry() -> Iterator[RegistryServer]:
    """TLS that requires a client certificate (no auth): .host, .url, .root, .ca, .certs_dir with
    <host>/ca.crt, client.cert and client.key."""
    yield from _serve(tls=True, client_certs=True)


@pytest.fixture(scope="module")
def token_registry() -> Iterator[RegistryServer]:
    """Plain http with `auth: token`: .host, .url, .root, .user, .password, .token_service (.realm, .requests)."""
    yield from _serve(token=True)


# --- the token service -------------------------------------------------------------------------------


class TokenService:
    """Docker's token auth: checks Basic credentials and signs JWTs granting the requested scopes
    (anonymous callers get a token granting nothing). `requests` records each call's (user, scopes)."""

    SERVICE, ISSUER = "ketch-test-registry", "ketch-test-issuer"

    def __init__(self, key: Path, cert_der: bytes, user: str, password: str) -> None:
        self.key, self.cert_der, self.user, self.password = key, cert_der, user, password
        self.requests: list[tuple[str, tuple[str, ...]]] = []
        self.token_field = "token"  # or "access_token"
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def issue(self, authorization: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        user = ""
        if authorization:
            scheme, _, value = authorization.partition(" ")
            pair = base64.b64decode(value).decode() if scheme.lower() == "basic" else ""
            if pair != f"{self.user}:{self.password}":
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
            user = self.user
        scopes = tuple(query.get("scope", []))
        with self._lock:
            self.requests.append((user, scopes))
        access = []
        for scope in scopes if user else ():
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": self.ISSUER, "sub": user, "aud": query.get("service", [""])[0], "exp": now + 300,
            "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access,
        }  # fmt: skip
        return 200, {self.token_field: sign_jwt(claims, self.key, self.cert_der), "expires_in": 300}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                status, doc = service.issue(self.headers.get("Authorization", ""), parse_qs(parts.query))
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


# --- images -------------------------------------------------------------------------------------------


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _blob(layout: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    return digest


def _busybox_layer() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("bin", "etc", "tmp"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        data = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in ("sh", "ls", "cat", "echo", "true"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(info)
    return buf.getvalue()


def make_busybox_image(directory: Path | str, tag: str = "latest") -> Path:
    """An OCI image layout holding a one-layer busybox image tagged `tag`; its path."""
    need("busybox")
    layout = Path(directory) / "busybox-oci"
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    tar = _busybox_layer()
    layer = gzip.compress(tar, mtime=0)
    config = {
        "created": "1970-01-01T00:00:00Z", "architecture": _arch(), "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "ketch tests: busybox"}],
    }  # fmt: skip
    config_bytes = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _blob(layout, config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": _blob(layout, layer), "size": len(layer)}],
    }  # fmt: skip
    manifest_bytes = json.dumps(manifest).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": _blob(layout, manifest_bytes), "size": len(manifest_bytes),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }  # fmt: skip
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return layout


def manifest_of(layout: Path) -> tuple[str, bytes]:
    """(digest, bytes) of the first manifest of an OCI layout made by make_busybox_image."""
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    return digest, (layout / "blobs" / "sha256" / digest[7:]).read_bytes()


@pytest.fixture(scope="session")
def busybox_oci() -> Iterator[Path]:
    """One busybox OCI layout (tag "latest") for the session, removed at the end."""
    directory = Path(tempfile.mkdtemp(prefix="ketch-oci-"))
    try:
        yield make_busybox_image(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def skopeo(*args: str) -> bytes:
    need("skopeo")
    proc = subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, check=False, timeout=300,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def skopeo_copy(src: str, dst: str, *args: str) -> None:
    """`skopeo copy` (TLS verification off for docker:// sides unless `args` say otherwise, digests kept)."""
    flags = ["--preserve-digests"]
    if src.startswith("docker://") and not any(a.startswith("--src-tls-verify") for a in args):
        flags.append("--src-tls-verify=false")
    if dst.startswith("docker://") and not any(a.startswith("--dest-tls-verify") for a in args):
        flags.append("--dest-tls-verify=false")
    skopeo("copy", "--quiet", *flags, *args, src, dst)


def skopeo_inspect_raw(ref: str, *args: str) -> bytes:
    """The manifest bytes at docker://ref, as the registry serves them."""
    return skopeo("inspect", "--raw", "--tls-verify=false", *args, f"docker://{ref}")
