"""Registry authentication: WWW-Authenticate challenges, bearer tokens, and Docker-format credential files."""

from __future__ import annotations

import base64
import os
import threading
import time
from urllib.parse import urlencode

from ketch import jsonio
from ketch.errors import InvalidArgument, Unauthorized, Unavailable
from ketch.record import Record, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ketch.registry.transport import Transport

DOCKER_HUB_KEY = "https://index.docker.io/v1/"  # the key Docker files Docker Hub's credentials under
HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
_TOKEN_BODY = 1 << 20
_DEFAULT_EXPIRY = 60  # seconds, the token spec's default for expires_in


# --- challenges ----------------------------------------------------------------------------------


class Challenge(Record):
    """One challenge of a WWW-Authenticate header: scheme (lower-case) and its auth-params."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.params.get("scope", "").split())


def parse_challenges(header: str) -> list[Challenge]:
    """Every challenge in a WWW-Authenticate value (RFC 7235: `Scheme k=v, k="quoted", ...`, comma-joined)."""
    out: list[tuple[str, dict[str, str]]] = []
    i, n = 0, len(header)
    while i < n:
        while i < n and header[i] in " \t,":
            i += 1
        start = i
        while i < n and header[i] not in " \t,=":
            i += 1
        token = header[start:i]
        j = i
        while j < n and header[j] in " \t":
            j += 1
        if j < n and header[j] == "=" and out and token:
            value, i = _param_value(header, j + 1)
            out[-1][1][token.lower()] = value
        elif token:
            out.append((token.lower(), {}))
        else:
            i += 1
    return [Challenge(scheme, params) for scheme, params in out]


def _param_value(header: str, i: int) -> tuple[str, int]:
    n = len(header)
    while i < n and header[i] in " \t":
        i += 1
    if i < n and header[i] == '"':
        chars: list[str] = []
        i += 1
        while i < n and header[i] != '"':
            if header[i] == "\\" and i + 1 < n:
                i += 1
            chars.append(header[i])
            i += 1
        return "".join(chars), i + 1
    start = i
    while i < n and header[i] not in " \t,":
        i += 1
    return header[start:i], i


# --- credentials ---------------------------------------------------------------------------------


class Credentials(Record):
    username: str = ""
    password: str = ""
    identity_token: str = ""  # Docker's "identitytoken": an OAuth2 refresh token

    def basic(self) -> str:
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


def canonical_host(host: str) -> str:
    """The registry named by a config key or host: scheme and path dropped, Docker Hub's names as docker.io."""
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix) :]
    host = host.split("/", 1)[0].lower()
    return "docker.io" if host in HUB_NAMES else host


def config_key(host: str) -> str:
    """The "auths" key Docker uses for a registry."""
    host = canonical_host(host)
    return DOCKER_HUB_KEY if host == "docker.io" else host


def docker_config_path() -> str:
    directory = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(directory, "config.json")


def load_config(path: str) -> dict[str, Any]:
    """A Docker-format config file ({} when it does not exist); InvalidArgument when it is not valid."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        raise InvalidArgument(f"{path}: {exc.strerror}") from exc
    if not data.strip():
        return {}
    try:
        doc = jsonio.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("auths", {}), dict):
        raise InvalidArgument(f'{path}: expected an object with an "auths" object')
    return doc


def credentials_in(path: str, host: str) -> Credentials | None:
    """The credentials a config file holds for `host`: its "auths" entry, else its credential helper."""
    doc = load_config(path)
    want = canonical_host(host)
    auths: dict[str, Any] = doc.get("auths", {})
    keys = [config_key(host), host] + [k for k in auths if canonical_host(k) == want]
    for key in keys:
        entry = auths.get(key)
        if isinstance(entry, dict):
            found = _decode_entry(entry, path, key)
            if found is not None:
                return found
    helpers = doc.get("credHelpers")
    helpers = helpers if isinstance(helpers, dict) else {}
    helper = helpers.get(want) or helpers.get(host) or doc.get("credsStore")
    if isinstance(helper, str) and helper:
        return _from_helper(helper, config_key(host))
    return None


def _decode_entry(entry: dict[str, Any], path: str, key: str) -> Credentials | None:
    token = entry.get("identitytoken") or ""
    if entry.get("auth"):
        try:
            user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
        except (ValueError, TypeError) as exc:
            raise InvalidArgument(f"{path}: auths[{key!r}].auth is not base64 of user:password") from exc
        if not sep:
            raise InvalidArgument(f"{path}: auths[{key!r}].auth is not base64 of user:password")
        return Credentials(user, password, str(token))
    if entry.get("username") or token:
        return Credentials(str(entry.get("username", "")), str(entry.get("password", "")), str(token))
    return None


def _from_helper(helper: str, server: str) -> Credentials | None:
    """Ask `docker-credential-<helper> get` (Docker's credential helper protocol)."""
    import subprocess

    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run(
            [program, "get"], input=server.encode(), capture_output=True, timeout=30, check=False
        )
    except FileNotFoundError:
        return None  # a config copied from elsewhere may name a helper this host lacks: go anonymous
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"credential helper {program}: {exc}") from exc
    if proc.returncode != 0:
        return None  # "credentials not found in native keychain"
    try:
        doc = jsonio.loads(proc.stdout)
        user, secret = str(doc.get("Username", "")), str(doc.get("Secret", ""))
    except (ValueError, AttributeError, UnicodeDecodeError):
        raise InvalidArgument(f"credential helper {program}: invalid answer") from None
    if user == "<token>":  # the helper protocol's marker for an identity token
        return Credentials("", "", secret)
    return Credentials(user, secret)


def lookup_credentials(host: str, auth_file: str = "") -> Credentials | None:
    """Credentials for `host`: ketch's auth file first, then Docker's config.json."""
    for path in (auth_file, docker_config_path()):
        if path:
            found = credentials_in(path, host)
            if found is not None:
                return found
    return None


def store_credentials(path: str, host: str, username: str, password: str) -> None:
    """Save user:password for `host` in a Docker-format file (atomically, mode 0600)."""
    doc = load_config(path)
    auths: dict[str, Any] = doc.setdefault("auths", {})
    key = config_key(host)
    for other in [k for k in auths if k != key and canonical_host(k) == canonical_host(host)]:
        del auths[other]
    auths[key] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    write_config(path, doc)


def remove_credentials(path: str, host: str) -> bool:
    """Forget `host` in a Docker-format file; whether there was anything to forget."""
    doc = load_config(path)
    auths: dict[str, Any] = doc.get("auths", {})
    gone = [k for k in auths if canonical_host(k) == canonical_host(host)]
    for key in gone:
        del auths[key]
    if gone:
        write_config(path, doc)
    return bool(gone)


def write_config(path: str, doc: dict[str, Any]) -> None:
    """Atomic replace: a 0600 temp file in the same directory, fsync, rename, fsync the directory."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(jsonio.dumps(doc, indent="\t") + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --- answering challenges -----------------------------------------------------------------------


class _Token(Record):
    value: str
    expires: float  # time.monotonic()


class Authenticator:
    """Answers one registry's challenges: Basic from credentials, Bearer tokens fetched from the realm
    and cached per (realm, service, scopes) until they expire. Thread-safe."""

    def __init__(
        self, host: str, transport: Transport, credentials: Callable[[], Credentials | None]
    ) -> None:
        self.host, self._transport, self._lookup = host, transport, credentials
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._creds: Credentials | None = None
        self._creds_loaded = False

    @property
    def credentials(self) -> Credentials | None:
        with self._lock:
            if not self._creds_loaded:
                self._creds, self._creds_loaded = self._lookup(), True
            return self._creds

    @property
    def scheme(self) -> str:
        """The scheme the registry challenged with ("bearer", "basic"), or "" before any challenge."""
        with self._lock:
            return self._challenge.scheme if self._challenge is not None else ""

    def header(self, scopes: tuple[str, ...]) -> str | None:
        """The Authorization value to send up front, once the registry has told us its scheme."""
        with self._lock:
            challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self.credentials
            return creds.basic() if creds is not None and creds.username else None
        return "Bearer " + self._token(challenge, scopes)

    def respond(self, header: str, scopes: tuple[str, ...], rejected: str | None) -> str | None:
        """Learn a 401's challenge; the Authorization to retry with (None when there is nothing to try)."""
        challenges = parse_challenges(header)
        challenge = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if challenge is None:
            offered = ", ".join(c.scheme for c in challenges) or "none"
            raise Unauthorized(f"{self.host}: unsupported authentication scheme (offered: {offered})")
        if challenge.scheme == "bearer" and not challenge.realm:
            raise Unauthorized(f"{self.host}: bearer challenge without a realm")
        with self._lock:
            self._challenge = challenge
            if rejected is not None:
                self._tokens = {k: t for k, t in self._tokens.items() if "Bearer " + t.value != rejected}
        if challenge.scheme == "bearer":
            wanted = scopes + tuple(s for s in challenge.scopes if not _covered(s, scopes))
            return "Bearer " + self._token(challenge, wanted)
        answer = self.header(scopes)
        return None if answer == rejected else answer

    def _token(self, challenge: Challenge, scopes: tuple[str, ...]) -> str:
        key = (challenge.realm, challenge.service, *sorted(scopes))
        with self._fetch_lock:  # parallel pulls wait for one fetch instead of each making their own
            with self._lock:
                cached = self._tokens.get(key)
            if cached is not None and cached.expires > time.monotonic():
                return cached.value
            token = self._fetch(challenge, scopes)
            with self._lock:
                self._tokens[key] = token
            return token.value

    def _fetch(self, challenge: Challenge, scopes: tuple[str, ...]) -> _Token:
        creds = self.credentials
        query: list[tuple[str, str]] = [("service", challenge.service)] if challenge.service else []
        query += [("scope", s) for s in scopes]
        headers = {"Accept": "application/json"}
        if creds is not None and creds.identity_token:
            form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", creds.identity_token),
                ("client_id", "ketch"),
            ]
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = urlencode(form + query).encode()
            resp = self._transport.request("POST", challenge.realm, headers, body, idempotent=True)
        else:
            if creds is not None and creds.username:
                headers["Authorization"] = creds.basic()
                query.append(("account", creds.username))
            sep = "&" if "?" in challenge.realm else "?"
            url = challenge.realm + (sep + urlencode(query) if query else "")
            resp = self._transport.request("GET", url, headers)
        with resp:
            if resp.status in (401, 403):
                raise Unauthorized(
                    f"{self.host}: {'credentials refused' if creds else 'authentication required'}"
                )
            if resp.status != 200:
                raise Unavailable(f"{self.host}: the token service {challenge.realm} answered {resp.status}")
            body_bytes = resp.body(_TOKEN_BODY)
        return _parse_token(body_bytes, self.host)


def _covered(scope: str, scopes: tuple[str, ...]) -> bool:
    """Whether `scopes` already ask for everything `scope` does (same resource, a superset of its actions)."""
    resource, _, actions = scope.rpartition(":")
    for other in scopes:
        other_resource, _, other_actions = other.rpartition(":")
        if other_resource == resource and set(actions.split(",")) <= set(other_actions.split(",")):
            return True
    return False


def _parse_token(body: bytes, host: str) -> _Token:
    try:
        doc = jsonio.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        raise Unavailable(f"{host}: the token service sent no JSON object")
    value = doc.get("token") or doc.get("access_token")
    if not isinstance(value, str) or not value:
        raise Unavailable(f"{host}: the token service's answer has no token")
    expires_in = doc.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
        expires_in = _DEFAULT_EXPIRY
    margin = min(30.0, expires_in / 10)
    return _Token(value, time.monotonic() + expires_in - margin)
