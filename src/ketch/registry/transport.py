"""HTTP(S) for registries: keep-alive connection pools, per-host TLS (certs.d), redirects and retries."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
import time
from urllib.parse import urljoin, urlsplit

from ketch import __version__
from ketch.errors import CorruptContent, InvalidArgument, Unavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    class Readable(Protocol):
        def read(self, n: int = ..., /) -> bytes: ...
        def close(self) -> None: ...

    Body = bytes | Callable[[], Readable] | None  # a callable opens the body afresh for each attempt

USER_AGENT = f"ketch/{__version__}"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
BLOCK = 1 << 20  # socket read/send block and streaming chunk
IDLE_PER_HOST = 8
_ERROR_BODY = 64 << 10
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
_TRANSIENT_TLS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def describe(exc: BaseException) -> str:
    """A short, one-line cause for a network exception."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Response:
    """One HTTP response whose body is read on demand; close() hands the connection back to the pool."""

    def __init__(self, url: str, raw: http.client.HTTPResponse, release: Callable[[bool], None]) -> None:
        self.url, self._raw, self._release = url, raw, release
        self.status, self.reason, self.headers = raw.status, raw.reason, raw.headers
        self._closed = False

    def header(self, name: str, default: str = "") -> str:
        value = self.headers.get(name)
        return default if value is None else str(value)

    def read(self, n: int = BLOCK) -> bytes:
        return self._raw.read(n)

    @property
    def truncated(self) -> bool:
        """The server closed the connection before the Content-Length it announced."""
        return self._raw.length is not None and self._raw.length > 0

    def body(self, limit: int) -> bytes:
        """The whole body: CorruptContent if larger than `limit` bytes, Unavailable if the connection fails."""
        try:
            data = self._raw.read(limit + 1)
            while len(data) <= limit and (more := self._raw.read(limit + 1 - len(data))):
                data += more
        except (OSError, http.client.HTTPException) as exc:
            raise Unavailable(f"{urlsplit(self.url).netloc}: reading a response: {describe(exc)}") from exc
        if len(data) > limit:
            raise CorruptContent(f"{self.url}: response larger than {limit} bytes")
        if self.truncated:
            raise Unavailable(f"{urlsplit(self.url).netloc}: the connection closed mid-response")
        return data

    def discard(self) -> bytes:
        """Read a little of the body (an error document, say) and close."""
        try:
            return self._raw.read(_ERROR_BODY)
        except (OSError, http.client.HTTPException):
            return b""
        finally:
            self.close()

    def close(self) -> None:
        """Release the connection: kept for reuse when the body was read (a short rest is read here)."""
        if self._closed:
            return
        self._closed = True
        raw = self._raw
        if not raw.isclosed() and raw.length is not None and raw.length <= _ERROR_BODY:
            try:
                raw.read()
            except (OSError, http.client.HTTPException):
                pass
        self._release(raw.isclosed() and not self.truncated)

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class Transport:
    """Keep-alive connections per (scheme, host:port) shared by threads, one request per connection at a time.

    TLS trust for host H: the system CAs plus every `*.crt` in <certs_dir>/H/, client certificates
    from the `*.cert`/`*.key` pairs there (Docker's certs.d layout); `insecure(H)` turns verification off.
    """

    def __init__(
        self, certs_dir: str = "/etc/docker/certs.d", insecure: Callable[[str], bool] | None = None,
        timeout: float = 30.0, attempts: int = 5, backoff: float = 0.2,
    ) -> None:  # fmt: skip
        self.certs_dir, self.timeout = certs_dir, timeout
        self.attempts, self.backoff = max(1, attempts), backoff
        self._insecure = insecure or (lambda _netloc: False)
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._contexts: dict[str, ssl.SSLContext] = {}

    # --- public -----------------------------------------------------------------------------------

    def request(
        self, method: str, url: str, headers: dict[str, str] | None = None, body: Body = None,
        idempotent: bool | None = None, attempts: int | None = None,
    ) -> Response:  # fmt: skip
        """Send with retries (idempotent requests only) and follow redirects, dropping Authorization
        when one leads to another host. Unavailable after the last attempt fails."""
        headers = dict(headers or {})
        headers.setdefault("User-Agent", USER_AGENT)
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
        origin = urlsplit(url)
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._attempts(method, url, headers, body, idempotent, attempts or self.attempts)
            if resp.status not in REDIRECT_STATUS:
                return resp
            location = resp.header("Location")
            resp.discard()
            if not location:
                raise Unavailable(f"{origin.netloc}: {resp.status} redirect without a Location")
            url = urljoin(url, location)
            target = urlsplit(url)
            if (target.scheme, target.netloc) != (origin.scheme, origin.netloc):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, body = "GET", None
                headers = {
                    k: v for k, v in headers.items() if k.lower() not in ("content-length", "content-type")
                }
        raise Unavailable(f"{origin.netloc}: more than {MAX_REDIRECTS} redirects")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def __del__(self) -> None:  # an unclosed client's idle sockets go quietly (no ResourceWarning)
        for conns in list(getattr(self, "_idle", {}).values()):
            for conn in list(conns):
                conn.close()

    # --- retries ----------------------------------------------------------------------------------

    def _attempts(
        self, method: str, url: str, headers: dict[str, str], body: Body, idempotent: bool, attempts: int
    ) -> Response:
        netloc = urlsplit(url).netloc
        delay, cause = self.backoff, ""
        for attempt in range(1, attempts + 1):
            try:
                resp = self._once(method, url, headers, body)
            except ssl.SSLError as exc:
                if not isinstance(exc, _TRANSIENT_TLS) or not idempotent:
                    raise Unavailable(f"{netloc}: {describe(exc)}{self._ca_hint(exc, netloc)}") from exc
                cause = describe(exc)
            except (OSError, http.client.HTTPException) as exc:
                if not idempotent or isinstance(exc, socket.gaierror):  # an unknown name stays unknown
                    raise Unavailable(f"{netloc}: {describe(exc)}") from exc
                cause = describe(exc)
            else:
                if resp.status not in RETRY_STATUS or not idempotent:
                    return resp
                cause = f"{resp.status} {resp.reason}".strip()
                wait = _retry_after(resp.header("Retry-After"))
                resp.discard()
                delay = max(delay, min(wait, 10.0))
            if attempt < attempts:
                time.sleep(delay)
                delay *= 2
        suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
        raise Unavailable(f"{netloc}: {cause}{suffix}")

    def _ca_hint(self, exc: ssl.SSLError, netloc: str) -> str:
        directory = os.path.join(self.certs_dir, netloc)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f" (is the registry's CA in {os.path.join(directory, 'ca.crt')}?)"
        if any(alert in str(exc.reason) for alert in ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE")):
            return (
                f" (does the registry want a client certificate? client.cert and client.key in {directory})"
            )
        return ""

    def _once(self, method: str, url: str, headers: dict[str, str], body: Body) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgument(f"unsupported URL {url!r}")
        key = (parts.scheme, parts.netloc)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn, reused = self._acquire(key)
        try:
            raw = self._exchange(conn, method, target, headers, body)
        except _STALE:
            conn.close()
            if not reused:
                raise
            conn = self._connect(key)  # the server had closed this idle connection: once more, on a new one
            try:
                raw = self._exchange(conn, method, target, headers, body)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            conn.close()
            raise
        return Response(url, raw, lambda ok: self._release(key, conn, ok))

    @staticmethod
    def _exchange(
        conn: http.client.HTTPConnection, method: str, target: str, headers: dict[str, str], body: Body
    ) -> http.client.HTTPResponse:
        payload = body() if callable(body) else body
        try:
            conn.request(method, target, body=payload, headers=headers)
        finally:
            if payload is not None and not isinstance(payload, bytes):
                payload.close()
        return conn.getresponse()

    # --- the pool ---------------------------------------------------------------------------------

    def _acquire(self, key: tuple[str, str]) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        return self._connect(key), False

    def _release(self, key: tuple[str, str], conn: http.client.HTTPConnection, reusable: bool) -> None:
        if reusable:
            with self._lock:
                idle = self._idle.setdefault(key, [])
                if len(idle) < IDLE_PER_HOST:
                    idle.append(conn)
                    return
        conn.close()

    def _connect(self, key: tuple[str, str]) -> http.client.HTTPConnection:
        scheme, netloc = key
        if scheme == "http":
            return http.client.HTTPConnection(netloc, timeout=self.timeout, blocksize=BLOCK)
        return http.client.HTTPSConnection(
            netloc, timeout=self.timeout, blocksize=BLOCK, context=self.context(netloc)
        )

    def context(self, netloc: str) -> ssl.SSLContext:
        """The TLS context for one host:port, built once."""
        with self._lock:
            ctx = self._contexts.get(netloc)
            if ctx is None:
                ctx = self._contexts[netloc] = tls_context(netloc, self.certs_dir, not self._insecure(netloc))
            return ctx


def tls_context(netloc: str, certs_dir: str, verify: bool = True) -> ssl.SSLContext:
    """System CAs plus <certs_dir>/<netloc>/*.crt; client certificates from its *.cert + *.key pairs."""
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    directory = os.path.join(certs_dir, netloc) if certs_dir else ""
    try:
        names = sorted(os.listdir(directory)) if directory else []
    except (FileNotFoundError, NotADirectoryError):
        names = []
    except OSError as exc:
        raise InvalidArgument(f"{directory}: {exc.strerror}") from exc
    for name in names:
        path = os.path.join(directory, name)
        try:
            if name.endswith(".crt") and verify:
                ctx.load_verify_locations(cafile=path)
            elif name.endswith(".cert"):
                key = path[: -len(".cert")] + ".key"
                if not os.path.exists(key):
                    raise InvalidArgument(
                        f"{path}: client certificate without its key {os.path.basename(key)}"
                    )
                ctx.load_cert_chain(path, key)
        except (ssl.SSLError, OSError) as exc:
            raise InvalidArgument(f"{path}: cannot load: {describe(exc)}") from exc
    for name in names:
        if name.endswith(".key") and not os.path.exists(
            os.path.join(directory, name[: -len(".key")] + ".cert")
        ):
            raise InvalidArgument(f"{os.path.join(directory, name)}: key without its client certificate")
    return ctx


def _retry_after(value: str) -> float:
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0
