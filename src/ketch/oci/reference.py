"""Docker image references ("alpine", "ghcr.io/org/app:1@sha256:..."): parsing and normalisation.

Follows the grammar of docker/distribution's `reference` package (ParseNormalizedNamed followed
by TagNameOnly):

    reference   := name [":" tag] ["@" digest]
    name        := [domain "/"] path
    domain      := host [":" port]         host: DNS-ish name, IPv4, or [IPv6]
    path        := component ("/" component)*
    component   := [a-z0-9]+ (([._]|__|-+) [a-z0-9]+)*
    tag         := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}

A name without a domain belongs to Docker Hub ("docker.io"), and a one-component Hub path is an
official image under "library/". Pure functions only: no I/O.
"""

from __future__ import annotations

from ketch.errors import InvalidArgument
from ketch.oci import digest as _digest
from ketch.record import Record, replace

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
NAME_TOTAL_LENGTH_MAX = 255
_TAG_LENGTH_MAX = 128

# The grammar is checked by hand-written scanners rather than `re` (with `enum`, ~9 ms to
# import, on the path of every `ketch run`). Every class below is ASCII only, as in Go.
_DIGITS = frozenset("0123456789")
_LOWER_HEX = frozenset("0123456789abcdef")
_HEX = _LOWER_HEX | frozenset("ABCDEF")
_LOWER_ALNUM = _DIGITS | frozenset("abcdefghijklmnopqrstuvwxyz")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ALNUM = _LETTERS | _DIGITS
_TAG_FIRST = _ALNUM | {"_"}
_TAG_REST = _TAG_FIRST | {".", "-"}
_LABEL_CHARS = _ALNUM | {"-"}
_PATH_SEPARATORS = frozenset("._-")
_ALGORITHM_SEPARATORS = frozenset("-_+.")
_IPV6_CHARS = _HEX | {":"}
_DIGEST_HEX_MIN = 32

_INVALID = "invalid reference format"
_UPPERCASE = f"{_INVALID}: repository name must be lowercase"
_TOO_LONG = f"{_INVALID}: repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"


class Reference(Record):
    """A normalised image reference: registry domain, repository path, optional tag and digest."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, text: str, default_tag: str = "latest") -> Reference:
        """Normalise `text` the way `docker pull` does; add `default_tag` when there is no tag
        and no digest ("" adds none). InvalidArgument for anything docker would refuse."""
        if len(text) == 64 and _LOWER_HEX.issuperset(text):
            raise InvalidArgument(
                f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
            )
        domain, remainder = _split_docker_domain(text)
        remote = remainder.partition(":")[0]
        if remote.lower() != remote:
            raise InvalidArgument(_UPPERCASE)
        ref = _match(f"{domain}/{remainder}")
        if ref.digest:
            _digest.parse(ref.digest)
        if not ref.tag and not ref.digest and default_tag:
            _check_tag(default_tag)
            return replace(ref, tag=default_tag)
        return ref

    @property
    def name(self) -> str:
        """The full repository name, e.g. "docker.io/library/alpine"."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The name as docker displays it: "alpine", "user/app", "localhost:5000/x"."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        short = self.path.removeprefix(OFFICIAL_PREFIX)
        return short if "/" not in short else self.path

    @property
    def familiar(self) -> str:
        """The short display form with tag and digest, e.g. "alpine:latest"."""
        return self.familiar_name + self._suffix()

    def __str__(self) -> str:
        return self.name + self._suffix()

    def _suffix(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return tag + digest

    def with_tag(self, tag: str) -> Reference:
        """This repository at `tag` (any digest is dropped)."""
        _check_tag(tag)
        return replace(self, tag=tag, digest="")

    def with_digest(self, digest: str) -> Reference:
        """This repository at `digest` (any tag is dropped)."""
        _digest.parse(digest)
        return replace(self, tag="", digest=digest)


def looks_like_id(text: str) -> bool:
    """True for an image ID (prefix) as docker accepts one: "sha256:<hex>" or 12-64 bare hex digits."""
    prefixed = text.startswith("sha256:")
    hexdigits = text[len("sha256:") :] if prefixed else text
    shortest = 1 if prefixed else 12
    return shortest <= len(hexdigits) <= 64 and _LOWER_HEX.issuperset(hexdigits)


def _split_docker_domain(text: str) -> tuple[str, str]:
    """(domain, rest) as normalize.go's splitDockerDomain: the first component is a domain
    when it is "localhost", contains "." or ":", or has uppercase letters."""
    first, slash, rest = text.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, OFFICIAL_PREFIX + text
    if first == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    elif first == "localhost" or "." in first or ":" in first or first.lower() != first:
        domain = first
    else:
        domain, rest = DEFAULT_DOMAIN, text
    if domain == DEFAULT_DOMAIN and "/" not in rest:
        rest = OFFICIAL_PREFIX + rest
    return domain, rest


def _match(full: str) -> Reference:
    """Check `full` ("domain/path[:tag][@digest]") against the grammar and split it."""
    found = _scan(full)
    if found is None:
        lowered = full.lower()
        if lowered != full and _scan(lowered) is not None:
            raise InvalidArgument(_UPPERCASE)
        raise InvalidArgument(_INVALID)
    if len(found.domain) + 1 + len(found.path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgument(_TOO_LONG)
    return found


def _scan(full: str) -> Reference | None:
    """The parts of `full` if it is `domain "/" path [":" tag] ["@" digest]`, else None.

    No part of the grammar before the digest may contain "@", and neither the domain may
    contain "/" nor the path ":", so the first "/", "@" and ":" split it unambiguously."""
    domain, slash, rest = full.partition("/")
    rest, at, digest = rest.partition("@")
    path, colon, tag = rest.partition(":")
    if not slash or not _is_domain(domain) or not _is_path(path):
        return None
    if (colon and not _is_tag(tag)) or (at and not _is_digest(digest)):
        return None
    return Reference(domain, path, tag, digest)


def _is_domain(text: str) -> bool:
    """host [":" port]; host: DNS labels joined by ".", or an IPv6 address in brackets."""
    if text.startswith("["):
        inside, bracket, port = text[1:].partition("]")
        if not bracket or not inside or not _IPV6_CHARS.issuperset(inside):
            return False
        if not port:
            return True
        colon, port = port[:1], port[1:]
        return colon == ":" and _is_port(port)
    host, colon, port = text.partition(":")
    return all(_is_label(label) for label in host.split(".")) and (not colon or _is_port(port))


def _is_port(text: str) -> bool:
    return bool(text) and _DIGITS.issuperset(text)


def _is_label(text: str) -> bool:
    """A DNS label: letters, digits and "-", starting and ending with a letter or digit."""
    return bool(text) and text[0] in _ALNUM and text[-1] in _ALNUM and _LABEL_CHARS.issuperset(text)


def _is_path(text: str) -> bool:
    return all(_is_component(component) for component in text.split("/"))


def _is_component(text: str) -> bool:
    """[a-z0-9]+ runs joined by one separator each: ".", "_", "__" or any number of "-"."""
    if not text or text[0] not in _LOWER_ALNUM or text[-1] not in _LOWER_ALNUM:
        return False
    separator = ""
    for char in text:
        if char in _PATH_SEPARATORS:
            separator += char
        elif char not in _LOWER_ALNUM:
            return False
        elif separator:
            if separator not in (".", "_", "__") and separator.strip("-"):
                return False
            separator = ""
    return True


def _is_tag(text: str) -> bool:
    return 0 < len(text) <= _TAG_LENGTH_MAX and text[0] in _TAG_FIRST and _TAG_REST.issuperset(text)


def _is_digest(text: str) -> bool:
    """algorithm ":" hex, hex being at least 32 digits of either case (checked further by
    ketch.oci.digest.parse, whose errors say "invalid digest")."""
    algorithm, colon, encoded = text.partition(":")
    return (
        bool(colon)
        and _is_algorithm(algorithm)
        and len(encoded) >= _DIGEST_HEX_MIN
        and _HEX.issuperset(encoded)
    )


def _is_algorithm(text: str) -> bool:
    """[A-Za-z][A-Za-z0-9]* components joined by one of "-", "_", "+", "."."""
    expect_letter = True
    for char in text:
        if expect_letter:
            if char not in _LETTERS:
                return False
            expect_letter = False
        elif char in _ALGORITHM_SEPARATORS:
            expect_letter = True
        elif char not in _ALNUM:
            return False
    return not expect_letter


def _check_tag(tag: str) -> None:
    if not _is_tag(tag):
        raise InvalidArgument(f"invalid tag format: {tag!r}")
