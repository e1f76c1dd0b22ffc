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

import re

from ketch.errors import InvalidArgument
from ketch.oci import digest as _digest
from ketch.record import Record, replace

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN = rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|{_IPV6})(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

# Matched with fullmatch(): `$` would also accept a trailing newline.
_REFERENCE_RE = re.compile(rf"({_DOMAIN})/({_PATH})(?::({_TAG}))?(?:@({_DIGEST}))?")
_TAG_RE = re.compile(_TAG)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
_SHORT_ID_RE = re.compile(r"[a-f0-9]{12,64}")
_DIGEST_ID_RE = re.compile(r"sha256:[a-f0-9]{1,64}")

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
        if _IDENTIFIER_RE.fullmatch(text):
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
    return bool(_DIGEST_ID_RE.fullmatch(text) or _SHORT_ID_RE.fullmatch(text))


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
    found = _REFERENCE_RE.fullmatch(full)
    if found is None:
        lowered = full.lower()
        if lowered != full and _REFERENCE_RE.fullmatch(lowered):
            raise InvalidArgument(_UPPERCASE)
        raise InvalidArgument(_INVALID)
    domain, path, tag, digest = found.groups(default="")
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgument(_TOO_LONG)
    return Reference(domain, path, tag, digest)


def _check_tag(tag: str) -> None:
    if not _TAG_RE.fullmatch(tag):
        raise InvalidArgument(f"invalid tag format: {tag!r}")
