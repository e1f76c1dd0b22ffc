"""A client for the OCI distribution API (Docker registry v2): manifests, blobs, uploads, tags."""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from urllib.parse import quote, urljoin, urlsplit

from ketch import jsonio
from ketch.errors import CorruptContent, InvalidArgument, KetchError, NotFound, Unauthorized, Unavailable
from ketch.oci import digest as _digest
from ketch.oci import image as oci
from ketch.record import Record
from ketch.registry.auth import HUB_NAMES, Authenticator, Credentials, lookup_credentials
from ketch.registry.transport import BLOCK, Response, Transport, describe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO, Protocol, TypeVar

    _T = TypeVar("_T")

    class Sink(Protocol):
        def write(self, data: bytes, /) -> object: ...


HUB_ENDPOINT = "registry-1.docker.io"
MAX_MANIFEST = 4 << 20
MAX_TAGS_PAGE = 16 << 20
ACCEPT = ", ".join((oci.OCI_INDEX, oci.OCI_MANIFEST, oci.DOCKER_LIST, oci.DOCKER_MANIFEST))
_GENERIC_TYPES = frozenset(
    {"", "application/json", "text/plain", "application/octet-stream", "binary/octet-stream"}
)
_REPO_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-/")
_TAG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class RegistryConfig(Record):
    """Per-host policy, built by the caller (Docker's daemon.json keys and the --tls-verify flag)."""

    certs_dir: str = "/etc/docker/certs.d"
    insecure: tuple[str, ...] = ()  # host[:port] or CIDR: no TLS verification, plain http allowed
    mirrors: tuple[str, ...] = ()  # docker.io mirrors ("https://mirror.example" or host[:port]), pulls only
    auth_file: str = ""  # ketch's credentials file (read before Docker's config.json)
    tls_verify: bool = True  # False: every host is insecure
    default_insecure_loopback: bool = True  # localhost, 127.0.0.0/8 and ::1 are insecure, as in Docker
    timeout: float = 30.0  # seconds, per connect and per read
    attempts: int = 5  # tries of an idempotent request (connection errors, timeouts, 5xx, 429)
    backoff: float = 0.2  # seconds before the second try, doubling after


# --- names -------------------------------------------------------------------------------------------


def endpoint_host(host: str) -> str:
    """Where the API of a reference's domain lives: docker.io is served by registry-1.docker.io."""
    return HUB_ENDPOINT if host.lower() in HUB_NAMES else host


def _hostname(netloc: str) -> str:
    return urlsplit("//" + netloc).hostname or netloc


def is_loopback(netloc: str) -> bool:
    import ipaddress

    name = _hostname(netloc)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_insecure(netloc: str, config: RegistryConfig) -> bool:
    """Whether `netloc` may be used without TLS verification (and over plain http)."""
    if not config.tls_verify or (config.default_insecure_loopback and is_loopback(netloc)):
        return True
    name = _hostname(netloc)
    for entry in config.insecure:
        entry = entry.split("://", 1)[-1].rstrip("/")
        if entry in (netloc, name) or ("/" in entry and _in_network(name, entry)):
            return True
    return False


def _in_network(name: str, cidr: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(name) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def check_repository(repo: str) -> None:
    parts = repo.split("/")
    if (
        not repo
        or not _REPO_CHARS.issuperset(repo)
        or not all(p and p[0].isalnum() and p[-1].isalnum() for p in parts)
    ):
        raise InvalidArgument(f"invalid repository name {repo!r}")


def check_reference(reference: str) -> None:
    """A tag or a digest, safe to put in a URL path."""
    if ":" in reference:
        _digest.parse(reference)
    elif not (0 < len(reference) <= 128 and _TAG_CHARS.issuperset(reference) and reference[0] not in ".-"):
        raise InvalidArgument(f"invalid tag {reference!r}")


def _scope(repo: str, actions: str = "pull") -> str:
    return f"repository:{repo}:{actions}"


def _error_detail(body: bytes) -> str:
    """ ": message; message" from a registry's {"errors": [{"code", "message"}]} document."""
    try:
        doc = jsonio.loads(body)
        errors = doc.get("errors") if isinstance(doc, dict) else None
    except (ValueError, UnicodeDecodeError):
        return ""
    messages = [
        str(e.get("message") or e.get("code") or "").splitlines()[0]
        for e in errors or ()
        if isinstance(e, dict) and (e.get("message") or e.get("code"))
    ]
    return ": " + "; ".join(messages) if messages else ""


def _next_link(header: str) -> str:
    """The target of a Link header's rel="next", or ""."""
    for part in header.split(","):
        target, _, params = part.partition(";")
        if "next" in params.replace('"', " ").split() or 'rel="next"' in params.replace(" ", ""):
            return target.strip().strip("<>")
    return ""


# --- the client ------------------------------------------------------------------------------------


class Registry:
    """One registry host. Thread-safe: pulls fetch several blobs at once through one object."""

    def __init__(
        self, host: str, config: RegistryConfig | None = None,
        credentials: Credentials | tuple[str, str] | None = None, *, scheme: str = "",
    ) -> None:  # fmt: skip
        self.host = host
        self.config = config = config or RegistryConfig()
        self.endpoint = endpoint_host(host)
        self._scheme, self._settled = scheme, bool(scheme)  # a mirror URL's scheme is final
        self._lock = threading.Lock()
        self._mirrors: list[Registry] | None = None
        self._transport = Transport(
            config.certs_dir, lambda netloc: is_insecure(netloc, config), config.timeout, config.attempts,
            config.backoff,
        )  # fmt: skip
        if isinstance(credentials, tuple):
            credentials = Credentials(*credentials)
        if credentials is not None:
            explicit = credentials
            self._auth = Authenticator(host, self._transport, lambda: explicit)
        else:
            self._auth = Authenticator(
                host, self._transport, lambda: lookup_credentials(host, config.auth_file)
            )

    def close(self) -> None:
        self._transport.close()
        for mirror in self._mirrors or ():
            mirror.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- the API ---------------------------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/, answering an authentication challenge (login checks credentials this way)."""
        with self._request("GET", "/v2/", ()) as resp:
            self._check(resp, "v2/")

    def get_manifest(self, repository: str, reference: str) -> tuple[str, str, bytes]:
        """(media type, digest, body) of a manifest or index, verified when `reference` is a digest."""
        repo = self.repository(repository)
        check_reference(reference)
        return self._pull(lambda r: r._get_manifest(repo, reference))

    def fetch_blob(
        self, repository: str, desc: oci.Descriptor, out: Sink, offset: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> None:  # fmt: skip
        """Stream a blob into `out` from byte `offset` on, resuming after dropped connections.
        `progress` gets the number of bytes of the blob written so far (offset included)."""
        repo = self.repository(repository)
        _digest.parse(desc.digest)
        if not 0 <= offset <= desc.size:
            raise InvalidArgument(f"{desc.digest}: offset {offset} outside the blob's {desc.size} bytes")
        done = [offset]
        self._pull(lambda r: r._fetch_blob(repo, desc, out, done, progress))

    def blob_exists(self, repository: str, digest: str) -> bool:
        repo = self.repository(repository)
        _digest.parse(digest)
        return self._exists(repo, digest, (_scope(repo),))

    def push_blob(
        self, repository: str, desc: oci.Descriptor, open_blob: Callable[[], BinaryIO], mount_from: str = ""
    ) -> str:
        """Upload a blob unless the registry has it: "exists", "mounted" (from `mount_from`) or "pushed"."""
        repo = self.repository(repository)
        _digest.parse(desc.digest)
        scopes: tuple[str, ...] = (_scope(repo, "pull,push"),)
        if mount_from:
            mount_from = self.repository(mount_from)
            if mount_from != repo:
                scopes += (_scope(mount_from),)
            else:
                mount_from = ""
        if self._exists(repo, desc.digest, scopes):
            return "exists"
        delay = self.config.backoff
        for attempt in range(1, self.config.attempts + 1):
            try:
                return self._upload(repo, desc, open_blob, mount_from, scopes)
            except Unavailable:
                if attempt == self.config.attempts:
                    raise
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def put_manifest(self, repository: str, reference: str, media_type: str, body: bytes) -> str:
        """Upload a manifest under a tag (or its digest); its digest."""
        repo = self.repository(repository)
        check_reference(reference)
        computed = self._verify_manifest(f"{repo}@{reference}", reference, body, "")
        path = f"/v2/{repo}/manifests/{reference}"
        with self._request(
            "PUT", path, (_scope(repo, "pull,push"),), {"Content-Type": media_type}, body
        ) as resp:
            self._check(resp, f"{repo}:{reference}")
            reported = resp.header("Docker-Content-Digest")
        if (
            reported
            and _digest.is_valid(reported)
            and _digest.of(body, reported.partition(":")[0]) != reported
        ):
            raise CorruptContent(
                f"{self.host}/{repo}: the registry stored {reported}, the manifest is {computed}"
            )
        return computed

    def list_tags(self, repository: str) -> list[str]:
        repo = self.repository(repository)
        tags: list[str] = []
        url = f"/v2/{repo}/tags/list"
        for _ in range(10_000):
            with self._request("GET", url, (_scope(repo),)) as resp:
                self._check(resp, repo)
                body, url = resp.body(MAX_TAGS_PAGE), _next_link(resp.header("Link"))
            tags += self._tags_page(repo, body)
            if not url:
                break
        return tags

    def repository(self, repository: str) -> str:
        """The repository as the API names it (Docker Hub's official images live under library/)."""
        if self.endpoint == HUB_ENDPOINT and "/" not in repository:
            repository = "library/" + repository
        check_repository(repository)
        return repository

    # --- pulls, with mirrors ------------------------------------------------------------------------

    def _pull(self, op: Callable[[Registry], _T]) -> _T:
        for mirror in self._mirror_list():
            try:
                return op(mirror)
            except KetchError:
                continue  # any failure of a mirror: go on to the next one, then upstream
        return op(self)

    def _mirror_list(self) -> list[Registry]:
        if self.endpoint != HUB_ENDPOINT or not self.config.mirrors:
            return []
        with self._lock:
            if self._mirrors is None:
                self._mirrors = [self._mirror(m) for m in self.config.mirrors]
                self._mirrors = [m for m in self._mirrors if m.endpoint != self.endpoint]
            return self._mirrors

    def _mirror(self, url: str) -> Registry:
        scheme, sep, rest = url.partition("://")
        if not sep:
            scheme, rest = "", url
        elif scheme not in ("http", "https"):
            raise InvalidArgument(f"registry mirror {url!r}: expected an http(s) URL or host[:port]")
        return Registry(rest.split("/", 1)[0], self.config, scheme=scheme)

    def _get_manifest(self, repo: str, reference: str) -> tuple[str, str, bytes]:
        what = f"{repo}@{reference}" if ":" in reference else f"{repo}:{reference}"
        path = f"/v2/{repo}/manifests/{reference}"
        with self._request("GET", path, (_scope(repo),), {"Accept": ACCEPT}) as resp:
            self._check(resp, what)
            body = resp.body(MAX_MANIFEST)
            content_type = resp.header("Content-Type").split(";", 1)[0].strip()
            reported = resp.header("Docker-Content-Digest")
        media_type = content_type if content_type not in _GENERIC_TYPES else _guess_media_type(body)
        return media_type, self._verify_manifest(what, reference, body, reported), body

    def _verify_manifest(self, what: str, reference: str, body: bytes, reported: str) -> str:
        if ":" in reference:
            check = _digest.Verifier(reference)
            check.update(body)
            try:
                check.verify()
            except CorruptContent as exc:
                raise CorruptContent(f"{self.host}/{what}: {exc}") from None
            return reference
        if reported and _digest.is_valid(reported):
            actual = _digest.of(body, reported.partition(":")[0])
            if actual != reported:
                raise CorruptContent(
                    f"{self.host}/{what}: the registry says {reported}, the body is {actual}"
                )
        return _digest.of(body)

    def _fetch_blob(
        self, repo: str, desc: oci.Descriptor, out: Sink, done: list[int],
        progress: Callable[[int], None] | None,
    ) -> None:  # fmt: skip
        what = f"{repo}@{desc.digest}"
        path = f"/v2/{repo}/blobs/{desc.digest}"
        failures = 0
        while done[0] < desc.size:
            before = done[0]
            headers = {"Range": f"bytes={before}-"} if before else {}
            try:
                with self._request("GET", path, (_scope(repo),), headers) as resp:
                    self._check(resp, what)
                    skip = self._skip(resp, before, what)
                    self._copy(resp, out, desc, done, skip, progress, what)
                return
            except _WriteFailed as exc:
                raise exc.error from None  # the caller's disk, not the network
            except (OSError, http.client.HTTPException) as exc:
                failures = 1 if done[0] > before else failures + 1  # progress resets the count
                if failures >= self.config.attempts:
                    raise Unavailable(
                        f"{self.host}/{what}: {describe(exc)} (after {failures} attempts)"
                    ) from exc
            time.sleep(self.config.backoff * 2 ** (failures - 1))

    def _skip(self, resp: Response, offset: int, what: str) -> int:
        """How many leading bytes of this response we already have."""
        if resp.status != 206:
            return offset  # the server ignored Range: drop the prefix we have
        unit, _, spec = resp.header("Content-Range").partition(" ")
        start = spec.partition("-")[0]
        if unit != "bytes" or not start.isdigit() or int(start) > offset:
            raise CorruptContent(
                f"{self.host}/{what}: asked for bytes {offset}-, got {resp.header('Content-Range')!r}"
            )
        return offset - int(start)

    def _copy(
        self, resp: Response, out: Sink, desc: oci.Descriptor, done: list[int], skip: int,
        progress: Callable[[int], None] | None, what: str,
    ) -> None:  # fmt: skip
        while chunk := resp.read(BLOCK):
            if skip:
                cut = min(skip, len(chunk))
                chunk, skip = chunk[cut:], skip - cut
                if not chunk:
                    continue
            if done[0] + len(chunk) > desc.size:
                raise CorruptContent(f"{self.host}/{what}: more than the expected {desc.size} bytes")
            try:
                out.write(chunk)
            except OSError as exc:
                raise _WriteFailed(exc) from exc
            done[0] += len(chunk)
            if progress is not None:
                progress(done[0])
        if resp.truncated:
            raise ConnectionResetError(0, "Connection closed mid-blob")
        if done[0] < desc.size:
            raise CorruptContent(
                f"{self.host}/{what}: the registry sent {done[0]} bytes, the descriptor says {desc.size}"
            )

    # --- pushes ------------------------------------------------------------------------------------

    def _exists(self, repo: str, digest: str, scopes: tuple[str, ...]) -> bool:
        with self._request("HEAD", f"/v2/{repo}/blobs/{digest}", scopes) as resp:
            if resp.status == 404:
                return False
            self._check(resp, f"{repo}@{digest}")
            return True

    def _upload(
        self, repo: str, desc: oci.Descriptor, open_blob: Callable[[], BinaryIO], mount_from: str,
        scopes: tuple[str, ...],
    ) -> str:  # fmt: skip
        what = f"{repo}@{desc.digest}"
        query = f"?mount={quote(desc.digest)}&from={quote(mount_from)}" if mount_from else ""
        headers = {"Content-Length": "0"}
        with self._request("POST", f"/v2/{repo}/blobs/uploads/{query}", scopes, headers, b"", False) as resp:
            if mount_from and resp.status == 201:
                return "mounted"
            self._check(resp, what)
            location = resp.header("Location")
        if resp.status != 202 or not location:
            raise Unavailable(f"{self.host}/{what}: the upload did not start ({resp.status}, no Location)")
        url = urljoin(self._base() + "/v2/", location)
        url += ("&" if "?" in url else "?") + f"digest={quote(desc.digest)}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)}

        def body() -> _Exact:
            return _Exact(open_blob(), desc, f"{self.host}/{what}")

        with self._request("PUT", url, scopes, headers, body, False) as resp:
            self._check(resp, what)
        return "pushed"

    # --- requests ----------------------------------------------------------------------------------

    def _base(self) -> str:
        with self._lock:
            if not self._settled:
                self._scheme, self._settled = self._probe_scheme()
            return f"{self._scheme}://{self.endpoint}"

    def _probe_scheme(self) -> tuple[str, bool]:
        """(scheme, settled): https, unless the host is insecure and does not speak TLS: then plain
        http, as Docker does. Not settled when the host did not answer at all: probe again next time."""
        if not is_insecure(self.endpoint, self.config):
            return "https", True
        try:
            resp = self._transport.request("GET", f"https://{self.endpoint}/v2/", attempts=1)
        except Unavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, ssl.SSLError) and "ALERT" in str(cause.reason):
                return "https", True  # it speaks TLS but refused us (a client certificate, say)
            return "http", isinstance(cause, ssl.SSLError | http.client.HTTPException)
        resp.discard()
        return "https", True

    def _request(
        self, method: str, path: str, scopes: tuple[str, ...], headers: dict[str, str] | None = None,
        body: bytes | Callable[[], _Exact] | None = None, idempotent: bool | None = None,
    ) -> Response:  # fmt: skip
        """Send, answering one 401 challenge (a token for `scopes`, or Basic credentials)."""
        url = urljoin(self._base() + "/", path)
        ours = urlsplit(url).netloc == self.endpoint
        headers = dict(headers or {})
        sent = self._auth.header(scopes) if ours else None
        if sent:
            headers["Authorization"] = sent
        resp = self._transport.request(method, url, headers, body, idempotent)
        if resp.status != 401 or not ours:
            return resp
        challenge = resp.header("WWW-Authenticate")
        resp.discard()
        answer = self._auth.respond(challenge, scopes, sent)
        if answer is None:
            raise self._refused(scopes)
        headers["Authorization"] = answer
        resp = self._transport.request(method, url, headers, body, idempotent)
        if resp.status == 401:
            resp.discard()
            raise self._refused(scopes)
        return resp

    def _refused(self, scopes: tuple[str, ...]) -> Unauthorized:
        creds = self._auth.credentials
        if creds is None:
            return Unauthorized(f"{self.host}: authentication required")
        if scopes and self._auth.scheme == "bearer":  # a token was granted, without these rights
            repo = scopes[0].split(":")[1]
            return Unauthorized(
                f"{self.host}: access to {repo} denied for user {creds.username or '(token)'}"
            )
        return Unauthorized(f"{self.host}: credentials refused")

    def _check(self, resp: Response, what: str) -> None:
        """Nothing for a 2xx; otherwise the error the status and the registry's error document name."""
        if 200 <= resp.status < 300:
            return
        detail = _error_detail(resp.discard())
        status = f"{resp.status} {resp.reason}".strip()
        if resp.status == 404:
            raise NotFound(f"{self.host}/{what} not found{detail}")
        if resp.status in (401, 403):
            raise Unauthorized(f"{self.host}/{what}: access denied{detail}")
        if resp.status == 429 or resp.status >= 500 or resp.status < 200 or 300 <= resp.status < 400:
            raise Unavailable(f"{self.host}/{what}: {status}{detail}")
        raise InvalidArgument(f"{self.host}/{what}: the registry refused the request: {status}{detail}")

    def _tags_page(self, repo: str, body: bytes) -> list[str]:
        try:
            doc = jsonio.loads(body)
        except (ValueError, UnicodeDecodeError):
            doc = None
        tags = doc.get("tags") if isinstance(doc, dict) else ()
        if (tags is not None and not isinstance(tags, list)) or not all(
            isinstance(t, str) for t in tags or ()
        ):
            raise CorruptContent(f"{self.host}/{repo}: invalid tag list")
        return list(tags or ())


def _guess_media_type(body: bytes) -> str:
    """The media type a manifest names for itself, or infers from its shape."""
    try:
        doc = jsonio.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(doc, dict):
        return ""
    if isinstance(doc.get("mediaType"), str) and doc["mediaType"]:
        return str(doc["mediaType"])
    if doc.get("schemaVersion") == 2:
        return oci.OCI_INDEX if "manifests" in doc else oci.OCI_MANIFEST
    return ""


class _WriteFailed(Exception):
    """Carries an OSError of the sink past the handlers that retry network errors."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Exact:
    """A blob file for an upload, cut at the descriptor's size; CorruptContent if it is shorter."""

    def __init__(self, f: BinaryIO, desc: oci.Descriptor, what: str) -> None:
        self._f, self._size, self._left, self._what = f, desc.size, desc.size, what

    def read(self, n: int = -1) -> bytes:
        if self._left == 0:
            return b""
        data = self._f.read(self._left if n < 0 else min(n, self._left))
        if not data:
            sent = self._size - self._left
            raise CorruptContent(
                f"{self._what}: the local blob has {sent} bytes, the descriptor says {self._size}"
            )
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._f.close()
