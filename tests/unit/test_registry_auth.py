"""ketch.registry without a network: challenges, credential files, Docker Hub's names, host policy, tokens."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ketch.errors import InvalidArgument, Unauthorized
from ketch.registry import auth
from ketch.registry.auth import Authenticator, Challenge, Credentials, parse_challenges
from ketch.registry.client import Registry, RegistryConfig, check_reference, endpoint_host, is_insecure
from ketch.registry.transport import tls_context


@pytest.fixture
def scratch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private directory (removed afterwards); Docker's config is looked for inside it."""
    path = Path(tempfile.mkdtemp(prefix="ketch-auth-"))
    monkeypatch.setenv("DOCKER_CONFIG", str(path / "docker"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


# --- WWW-Authenticate ----------------------------------------------------------------------------


def test_bearer_challenge() -> None:
    header = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"'
    (c,) = parse_challenges(header)
    assert c.scheme == "bearer"
    assert c.realm == "https://auth.docker.io/token"
    assert c.service == "registry.docker.io"
    assert c.scopes == ("repository:library/busybox:pull",)


def test_challenge_with_commas_quotes_and_spaces_in_values() -> None:
    header = r'Bearer realm="http://h/token?a=1,b=2" , scope="repository:a/b:pull,push repository:c:pull", error="insufficient_scope", x="say \"hi\""'
    (c,) = parse_challenges(header)
    assert c.realm == "http://h/token?a=1,b=2"
    assert c.scopes == ("repository:a/b:pull,push", "repository:c:pull")
    assert c.params["error"] == "insufficient_scope"
    assert c.params["x"] == 'say "hi"'


def test_several_challenges_and_basic() -> None:
    got = parse_challenges('Basic realm="Registry Realm", BEARER realm=https://t/token,service=reg')
    assert got == [
        Challenge("basic", {"realm": "Registry Realm"}),
        Challenge("bearer", {"realm": "https://t/token", "service": "reg"}),
    ]
    assert parse_challenges("") == []


# --- credential files ----------------------------------------------------------------------------


def test_store_lookup_remove_round_trip(scratch: Path) -> None:
    path = str(scratch / "sub" / "auth.json")
    auth.store_credentials(path, "registry.example:5000", "alice", "pa:ss")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = json.loads(Path(path).read_text())
    assert doc == {"auths": {"registry.example:5000": {"auth": base64.b64encode(b"alice:pa:ss").decode()}}}
    assert auth.lookup_credentials("registry.example:5000", path) == Credentials("alice", "pa:ss")
    assert auth.lookup_credentials("other.example", path) is None

    auth.store_credentials(path, "other.example", "bob", "x")  # keeps what is there
    assert auth.lookup_credentials("registry.example:5000", path) == Credentials("alice", "pa:ss")
    assert auth.remove_credentials(path, "registry.example:5000") is True
    assert auth.remove_credentials(path, "registry.example:5000") is False
    assert auth.lookup_credentials("registry.example:5000", path) is None
    assert auth.lookup_credentials("other.example", path) == Credentials("bob", "x")
    assert sorted(os.listdir(scratch / "sub")) == ["auth.json"]  # no temp files left


def test_store_keeps_other_keys_of_a_docker_config(scratch: Path) -> None:
    path = scratch / "config.json"
    path.write_text(json.dumps({"auths": {}, "credsStore": "", "HttpHeaders": {"X-Meta": "1"}}))
    auth.store_credentials(str(path), "h:1", "u", "p")
    assert json.loads(path.read_text())["HttpHeaders"] == {"X-Meta": "1"}


def test_docker_hub_key(scratch: Path) -> None:
    path = str(scratch / "auth.json")
    auth.store_credentials(path, "docker.io", "hubuser", "hubpass")
    assert list(json.loads(Path(path).read_text())["auths"]) == ["https://index.docker.io/v1/"]
    for name in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert auth.lookup_credentials(name, path) == Credentials("hubuser", "hubpass")
    assert auth.config_key("index.docker.io") == auth.DOCKER_HUB_KEY
    assert auth.canonical_host("https://index.docker.io/v1/") == "docker.io"
    assert auth.canonical_host("http://Registry.Example:5000/v2/") == "registry.example:5000"
    assert auth.remove_credentials(path, "docker.io") is True
    assert json.loads(Path(path).read_text()) == {"auths": {}}


def test_docker_io_key_written_by_others_is_read_and_replaced(scratch: Path) -> None:
    path = scratch / "auth.json"
    path.write_text(json.dumps({"auths": {"docker.io": {"auth": base64.b64encode(b"old:pw").decode()}}}))
    assert auth.lookup_credentials("docker.io", str(path)) == Credentials("old", "pw")
    auth.store_credentials(str(path), "docker.io", "new", "pw2")
    assert list(json.loads(path.read_text())["auths"]) == ["https://index.docker.io/v1/"]


def test_ketch_file_first_then_docker_config(scratch: Path) -> None:
    docker = scratch / "docker" / "config.json"
    auth.store_credentials(str(docker), "h:5000", "docker-user", "1")
    auth.store_credentials(str(docker), "only-docker:5000", "d", "2")
    ketch = str(scratch / "auth.json")
    auth.store_credentials(ketch, "h:5000", "ketch-user", "3")
    assert auth.lookup_credentials("h:5000", ketch) == Credentials("ketch-user", "3")
    assert auth.lookup_credentials("only-docker:5000", ketch) == Credentials("d", "2")
    assert auth.lookup_credentials("h:5000") == Credentials("docker-user", "1")


def test_scheme_prefixed_keys_and_identity_tokens(scratch: Path) -> None:
    path = scratch / "config.json"
    entries = {
        "https://h.example:5000/v1/": {"auth": base64.b64encode(b"u:p").decode()},
        "t.example": {"auth": "", "identitytoken": "refresh-me"},
    }
    path.write_text(json.dumps({"auths": entries}))
    assert auth.lookup_credentials("h.example:5000", str(path)) == Credentials("u", "p")
    assert auth.lookup_credentials("t.example", str(path)) == Credentials("", "", "refresh-me")


def test_credential_helper(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper = scratch / "bin" / "docker-credential-fake"
    helper.parent.mkdir()
    helper.write_text(
        '#!/bin/sh\nread server\necho "{\\"Username\\":\\"via-helper\\",\\"Secret\\":\\"$server\\"}"\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    path = scratch / "config.json"
    path.write_text(json.dumps({"auths": {"h:1": {}}, "credHelpers": {"h:1": "fake"}}))
    assert auth.lookup_credentials("h:1", str(path)) == Credentials("via-helper", "h:1")


def test_malformed_files_are_invalid_arguments(scratch: Path) -> None:
    path = scratch / "auth.json"
    path.write_text("{not json")
    with pytest.raises(InvalidArgument, match="invalid JSON"):
        auth.lookup_credentials("h", str(path))
    path.write_text(json.dumps({"auths": {"h": {"auth": "bm8tY29sb24="}}}))  # "no-colon"
    with pytest.raises(InvalidArgument, match="user:password"):
        auth.lookup_credentials("h", str(path))
    path.write_text(json.dumps({"auths": []}))
    with pytest.raises(InvalidArgument, match="auths"):
        auth.store_credentials(str(path), "h", "u", "p")


# --- hosts -------------------------------------------------------------------------------------


def test_docker_io_maps_to_registry_1_and_library(scratch: Path) -> None:
    assert endpoint_host("docker.io") == "registry-1.docker.io"
    assert endpoint_host("index.docker.io") == "registry-1.docker.io"
    assert endpoint_host("localhost:5000") == "localhost:5000"
    with Registry("docker.io", RegistryConfig()) as hub:  # no traffic until a request is made
        assert hub.endpoint == "registry-1.docker.io"
        assert hub.repository("busybox") == "library/busybox"
        assert hub.repository("someone/tool") == "someone/tool"
    with Registry("localhost:5000") as local:
        assert local.repository("busybox") == "busybox"
        with pytest.raises(InvalidArgument):
            local.repository("Upper/Case")
        with pytest.raises(InvalidArgument):
            local.repository("../escape")


def test_references_are_checked() -> None:
    check_reference("latest")
    check_reference("sha256:" + "a" * 64)
    for bad in ("", "-x", "a/b", "a?b", "sha256:zz", "x" * 129):
        with pytest.raises(InvalidArgument):
            check_reference(bad)


def test_insecure_hosts() -> None:
    default = RegistryConfig()
    assert is_insecure("localhost:5000", default)
    assert is_insecure("127.0.0.5:1", default)
    assert is_insecure("[::1]:5000", default)
    assert not is_insecure("registry.example", default)
    assert not is_insecure("127.0.0.1:5000", RegistryConfig(default_insecure_loopback=False))
    listed = RegistryConfig(insecure=("registry.example:5000", "10.1.0.0/16", "http://plain.example"))
    assert is_insecure("registry.example:5000", listed)
    assert not is_insecure("registry.example:443", listed)
    assert is_insecure("10.1.2.3:5000", listed)
    assert is_insecure("plain.example", listed)
    assert is_insecure("anything.example", RegistryConfig(tls_verify=False))


def test_certs_dir_client_pairs_must_be_complete(scratch: Path) -> None:
    host_dir = scratch / "certs.d" / "reg.example:5000"
    host_dir.mkdir(parents=True)
    assert tls_context("reg.example:5000", str(scratch / "certs.d")).verify_mode.name == "CERT_REQUIRED"
    assert tls_context("other:1", str(scratch / "certs.d"), verify=False).check_hostname is False
    (host_dir / "client.cert").write_text("not used")
    with pytest.raises(
        InvalidArgument, match=r"client\.cert: client certificate without its key client\.key"
    ):
        tls_context("reg.example:5000", str(scratch / "certs.d"))
    (host_dir / "client.cert").unlink()
    (host_dir / "client.key").write_text("not used")
    with pytest.raises(InvalidArgument, match="key without its client certificate"):
        tls_context("reg.example:5000", str(scratch / "certs.d"))
    (host_dir / "client.key").unlink()
    (host_dir / "ca.crt").write_text("garbage")
    with pytest.raises(InvalidArgument, match=r"ca\.crt: cannot load"):
        tls_context("reg.example:5000", str(scratch / "certs.d"))


# --- tokens ---------------------------------------------------------------------------------------


class _FakeResponse:
    def __init__(self, status: int, doc: dict[str, Any]) -> None:
        self.status, self._body = status, json.dumps(doc).encode()

    def body(self, limit: int) -> bytes:
        return self._body

    def __enter__(self) -> _FakeResponse:
        return self

    def __exit__(self, *_exc: object) -> None:
        pass


class _FakeTransport:
    def __init__(self, status: int = 200, doc: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.status, self.doc = status, doc if doc is not None else {"access_token": "T1", "expires_in": 300}

    def request(self, method: str, url: str, headers: dict[str, str], *_a: Any, **_kw: Any) -> _FakeResponse:
        self.calls.append((method, url, headers))
        return _FakeResponse(self.status, self.doc)


def _authenticator(transport: _FakeTransport, creds: Credentials | None) -> Authenticator:
    return Authenticator("reg.example", transport, lambda: creds)  # type: ignore[arg-type]


def test_bearer_tokens_are_fetched_once_per_scope() -> None:
    transport = _FakeTransport()
    a = _authenticator(transport, Credentials("u", "p"))
    challenge = 'Bearer realm="https://auth.example/token",service="reg"'
    scope = ("repository:a/b:pull",)
    assert a.respond(challenge, scope, None) == "Bearer T1"
    assert a.header(scope) == "Bearer T1"
    assert len(transport.calls) == 1
    method, url, headers = transport.calls[0]
    assert method == "GET"
    assert url == "https://auth.example/token?service=reg&scope=repository%3Aa%2Fb%3Apull&account=u"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    a.header(("repository:a/b:pull,push",))  # another scope: another token
    assert len(transport.calls) == 2
    a.respond(challenge, scope, "Bearer T1")  # the registry refused the cached token: fetch anew
    assert len(transport.calls) == 3


def test_token_service_refusal() -> None:
    refusing = _FakeTransport(401, {})
    with pytest.raises(Unauthorized, match=r"reg\.example: credentials refused"):
        _authenticator(refusing, Credentials("u", "bad")).respond('Bearer realm="http://t/"', (), None)
    with pytest.raises(Unauthorized, match=r"reg\.example: authentication required"):
        _authenticator(refusing, None).respond('Bearer realm="http://t/"', (), None)


def test_basic_challenge_uses_credentials_once() -> None:
    a = _authenticator(_FakeTransport(), Credentials("u", "p"))
    basic = "Basic " + base64.b64encode(b"u:p").decode()
    assert a.respond('Basic realm="r"', (), None) == basic
    assert a.respond('Basic realm="r"', (), basic) is None  # refused: nothing else to try
    assert _authenticator(_FakeTransport(), None).respond('Basic realm="r"', (), None) is None


def test_identity_token_is_exchanged_by_post() -> None:
    transport = _FakeTransport(doc={"token": "T2"})
    a = _authenticator(transport, Credentials("", "", "refresh"))
    assert a.respond('Bearer realm="https://auth.example/token",service="reg"', (), None) == "Bearer T2"
    method, url, headers = transport.calls[0]
    assert (method, url) == ("POST", "https://auth.example/token")
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(Unauthorized, match="unsupported authentication scheme"):
        _authenticator(_FakeTransport(), None).respond('Negotiate realm="x"', (), None)
