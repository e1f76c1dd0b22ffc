"""Unit tests for ketch.oci.reference: docker image reference parsing and normalisation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument
from ketch.oci.reference import Reference, looks_like_id

HEX = "e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582"
DIGEST = f"sha256:{HEX}"
INVALID = "invalid reference format"
LOWERCASE = "invalid reference format: repository name must be lowercase"


# --- valid references: (input, normalised str, familiar) -----------------------------------------

VALID = [
    ("alpine", "docker.io/library/alpine:latest", "alpine:latest"),
    ("alpine:3.19", "docker.io/library/alpine:3.19", "alpine:3.19"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("user/app:1", "docker.io/user/app:1", "user/app:1"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/library/busybox:1", "docker.io/library/busybox:1", "busybox:1"),
    ("index.docker.io/x", "docker.io/library/x:latest", "x:latest"),
    ("index.docker.io/docker/docker", "docker.io/docker/docker:latest", "docker/docker:latest"),
    ("docker.io/library/foo/bar", "docker.io/library/foo/bar:latest", "library/foo/bar:latest"),
    ("store/foo/bar", "docker.io/store/foo/bar:latest", "store/foo/bar:latest"),
    ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
    ("localhost:5000/x:1", "localhost:5000/x:1", "localhost:5000/x:1"),
    ("ghcr.io/org/app", "ghcr.io/org/app:latest", "ghcr.io/org/app:latest"),
    ("gcr.io/library/busybox", "gcr.io/library/busybox:latest", "gcr.io/library/busybox:latest"),
    ("example.com:8000/private/moonbase", "example.com:8000/private/moonbase:latest", None),
    ("127.0.0.1:5000/debian", "127.0.0.1:5000/debian:latest", "127.0.0.1:5000/debian:latest"),
    ("test-com:8080/foo", "test-com:8080/foo:latest", "test-com:8080/foo:latest"),
    ("xn--n3h.com:18080/foo", "xn--n3h.com:18080/foo:latest", None),
    ("[::1]:5000/a/b:t", "[::1]:5000/a/b:t", "[::1]:5000/a/b:t"),
    ("[fc00:1:2:3:4:5:6:7]:5000/library/debian", "[fc00:1:2:3:4:5:6:7]:5000/library/debian:latest", None),
    ("Foo/bar", "Foo/bar:latest", "Foo/bar:latest"),
    ("test_com/foo", "docker.io/test_com/foo:latest", "test_com/foo:latest"),
    (
        "dock__er/docker-rules---x",
        "docker.io/dock__er/docker-rules---x:latest",
        "dock__er/docker-rules---x:latest",
    ),
    ("my.registry-1.example/e", "my.registry-1.example/e:latest", None),
    ("192.168.0.1", "docker.io/library/192.168.0.1:latest", "192.168.0.1:latest"),
    ("192.168.0.1:80", "docker.io/library/192.168.0.1:80", "192.168.0.1:80"),
    ("localhost", "docker.io/library/localhost:latest", "localhost:latest"),
    ("alpine:Latest_1.2-rc", "docker.io/library/alpine:Latest_1.2-rc", "alpine:Latest_1.2-rc"),
    ("alpine:_x", "docker.io/library/alpine:_x", "alpine:_x"),
    ("alpine:" + "t" * 128, "docker.io/library/alpine:" + "t" * 128, "alpine:" + "t" * 128),
    (f"host.com/a/b@{DIGEST}", f"host.com/a/b@{DIGEST}", f"host.com/a/b@{DIGEST}"),
    (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}", f"busybox@{DIGEST}"),
    (f"busybox:1@{DIGEST}", f"docker.io/library/busybox:1@{DIGEST}", f"busybox:1@{DIGEST}"),
    (HEX[:63], f"docker.io/library/{HEX[:63]}:latest", f"{HEX[:63]}:latest"),
    (f"{HEX}:1", f"docker.io/library/{HEX}:1", f"{HEX}:1"),
    (f"docker.io/{HEX}", f"docker.io/library/{HEX}:latest", f"{HEX}:latest"),
    ("[::1]/a", "[::1]/a:latest", None),
    ("[0]:1/a", "[0]:1/a:latest", None),
    ("Example.COM/x", "Example.COM/x:latest", None),
    ("a-b--c.x9/y", "a-b--c.x9/y:latest", None),
    ("0/0", "docker.io/0/0:latest", "0/0:latest"),
    ("x/a---b.c_d__e9/f", "docker.io/x/a---b.c_d__e9/f:latest", "x/a---b.c_d__e9/f:latest"),
    ("a:_", "docker.io/library/a:_", "a:_"),
    ("a:9.-_", "docker.io/library/a:9.-_", "a:9.-_"),
]


@pytest.mark.parametrize(("text", "full", "familiar"), VALID)
def test_parse_valid(text: str, full: str, familiar: str | None) -> None:
    """`familiar` None: the same as the full form (a registry other than Docker Hub)."""
    ref = Reference.parse(text)
    assert str(ref) == full
    assert ref.familiar == (familiar if familiar is not None else full)
    assert Reference.parse(str(ref)) == ref  # the normal form is a fixed point


@pytest.mark.parametrize(
    ("text", "domain", "path"),
    [
        ("alpine", "docker.io", "library/alpine"),
        ("docker.io/library/foo/bar", "docker.io", "library/foo/bar"),
        ("localhost:5000/x", "localhost:5000", "x"),
        ("[::1]:5000/a/b", "[::1]:5000", "a/b"),
        ("FOO/bar", "FOO", "bar"),
    ],
)
def test_parse_splits_domain_and_path(text: str, domain: str, path: str) -> None:
    ref = Reference.parse(text)
    assert (ref.domain, ref.path, ref.name) == (domain, path, f"{domain}/{path}")


# --- invalid references: (input, message fragment) -----------------------------------------------

INVALID_CASES = [
    ("", INVALID),
    ("Alpine", LOWERCASE),
    ("docker/Docker", LOWERCASE),
    ("docker.io/docker/Docker", LOWERCASE),
    ("localhost:5000/Foo:1", LOWERCASE),
    ("a//b", INVALID),
    ("docker///docker", INVALID),
    ("docker/", INVALID),
    ("/alpine", INVALID),
    ("alpine:", INVALID),
    ("alpine:-x", INVALID),
    ("alpine:.x", INVALID),
    ("alpine:a/b", INVALID),
    ("alpine:" + "t" * 129, INVALID),
    ("alpine:x y", INVALID),
    (" alpine", INVALID),
    ("alpine\n", INVALID),
    ("alpiné", INVALID),
    ("-docker", INVALID),
    ("-docker/docker", INVALID),
    ("docker-/docker", INVALID),
    ("____/____", INVALID),
    ("_docker/_docker", INVALID),
    ("dock..er/docker", INVALID),
    ("dock_.er/docker", INVALID),
    ("dock___er/docker", INVALID),
    ("-docker.io/docker/docker", INVALID),
    ("https://github.com/docker/docker", INVALID),
    ("localhost:port/x", INVALID),
    ("a_b.com/x", INVALID),  # a domain by its ".", but "_" is not allowed in one
    ("[fc00::1]", INVALID),
    ("[fc00::1]:5000", INVALID),
    ("fc00::1:5000/debian", INVALID),
    ("[fe80::1%eth0]:5000/debian", INVALID),
    ("[2001:db8:3:4::192.0.2.33]:5000/debian", INVALID),
    ("alpine@", INVALID),
    ("alpine@sha256:abc", INVALID),
    ("alpine@@sha256:" + HEX, INVALID),
    ("alpine@sha256:" + HEX.upper(), "invalid digest"),
    ("alpine@md5:" + HEX, "invalid digest"),
    ("alpine@sha256:" + HEX + "00", "invalid digest"),
    (HEX, "cannot specify 64-byte hexadecimal strings"),
    ("a" * 240 + "/" + "b" * 10, "must not be more than 255 characters"),
    ("example.com/" + "b" * 250, "must not be more than 255 characters"),
    # domains: DNS labels or [IPv6], then an optional port of ASCII digits
    ("[::1]:/a", INVALID),
    ("[]/a", INVALID),
    ("[::1]x/a", INVALID),
    ("[::1]:5000:1/a", INVALID),
    ("[::g]/a", INVALID),
    ("[::1/a", INVALID),
    ("localhost:/x", INVALID),
    ("localhost:5000:1/x", INVALID),
    ("localhost:\u0665\u0660/x", INVALID),  # non-ASCII digits are not a port
    ("a-.com/x", INVALID),
    ("a..com/x", INVALID),
    (".com/x", INVALID),
    ("a.com./x", INVALID),
    # path components
    ("a_/b", INVALID),
    ("a/b.", INVALID),
    ("a/.b", INVALID),
    ("a/b-_c", INVALID),
    ("a/b._c", INVALID),
    ("a/b/", INVALID),
    # tags
    ("alpine:1:2", INVALID),
    ("alpine:1@", INVALID),
    ("alpine:1\n", INVALID),
    ("alpine:\u0661", INVALID),
    # digests: the grammar first ("invalid reference format"), then the algorithm and length
    ("alpine@sha256:" + HEX[:31], INVALID),
    ("alpine@sha256:" + HEX[:32], "invalid digest"),
    ("alpine@1sha:" + HEX, INVALID),
    ("alpine@sha256+:" + HEX, INVALID),
    ("alpine@sha..256:" + HEX, INVALID),
    ("alpine@:" + HEX, INVALID),
    ("alpine@sha256+b64:" + HEX, "invalid digest"),
    ("alpine@sha256:" + HEX + "@x", INVALID),
    ("alpine@sha256:" + HEX[:40] + "g" + HEX[41:], INVALID),
    ("alpine@sha256" + HEX, INVALID),
    # upper case anywhere but the domain and the tag
    ("ALPINE:1", LOWERCASE),
    ("Example.com/Foo", LOWERCASE),
    ("alpine@SHA256:" + HEX, LOWERCASE),  # as docker: the check covers everything before ":"
    ("a:1@SHA256:" + HEX, "invalid digest"),
]


@pytest.mark.parametrize(("text", "fragment"), INVALID_CASES)
def test_parse_invalid(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        Reference.parse(text)
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message


def test_name_length_limit_is_inclusive() -> None:
    path = "b" * (255 - len("example.com/"))
    assert Reference.parse(f"example.com/{path}").path == path


# --- default tag ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "default_tag", "full"),
    [
        ("alpine", "", "docker.io/library/alpine"),
        ("alpine", "edge", "docker.io/library/alpine:edge"),
        ("alpine:3", "edge", "docker.io/library/alpine:3"),
        (f"alpine@{DIGEST}", "edge", f"docker.io/library/alpine@{DIGEST}"),
    ],
)
def test_default_tag(text: str, default_tag: str, full: str) -> None:
    assert str(Reference.parse(text, default_tag=default_tag)) == full


def test_invalid_default_tag_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="invalid tag format"):
        Reference.parse("alpine", default_tag="-bad")


# --- properties and derived references -----------------------------------------------------------


def test_familiar_name_and_name() -> None:
    assert Reference.parse("alpine").familiar_name == "alpine"
    assert Reference.parse("user/app:1").familiar_name == "user/app"
    assert Reference.parse("localhost:5000/x:1").familiar_name == "localhost:5000/x"
    assert Reference.parse("alpine:3").name == "docker.io/library/alpine"


def test_str_without_tag_or_digest() -> None:
    assert str(Reference("ghcr.io", "org/app")) == "ghcr.io/org/app"


def test_with_tag_drops_digest() -> None:
    ref = Reference.parse(f"alpine:3@{DIGEST}").with_tag("edge")
    assert (ref.tag, ref.digest, str(ref)) == ("edge", "", "docker.io/library/alpine:edge")


def test_with_digest_drops_tag() -> None:
    ref = Reference.parse("alpine:3").with_digest(DIGEST)
    assert (ref.tag, ref.digest, ref.familiar) == ("", DIGEST, f"alpine@{DIGEST}")


@pytest.mark.parametrize("tag", ["", "-x", ".x", "a/b", "a:b", "t" * 129])
def test_with_tag_rejects_bad_tags(tag: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid tag format"):
        Reference.parse("alpine").with_tag(tag)


@pytest.mark.parametrize("digest", ["", "sha256:abc", HEX, f"sha256:{HEX.upper()}"])
def test_with_digest_rejects_bad_digests(digest: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid digest"):
        Reference.parse("alpine").with_digest(digest)


def test_reference_is_immutable_and_hashable() -> None:
    ref = Reference.parse("alpine")
    with pytest.raises(AttributeError):
        ref.tag = "x"  # type: ignore[misc]
    assert {ref, Reference.parse("docker.io/library/alpine:latest")} == {ref}


# --- image IDs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (DIGEST, True),
        ("sha256:e6693c", True),
        (HEX, True),
        (HEX[:12], True),
        (HEX[:11], False),
        (HEX + "0", False),
        ("sha256:", False),
        ("sha256:" + HEX + "0", False),
        (HEX.upper(), False),
        ("sha512:" + HEX, False),
        ("alpine", False),
        ("e6693c20186g", False),
        ("", False),
        ("sha256:e", True),
        (HEX[:12] + "\n", False),
        ("sha256:" + HEX[:12] + "\n", False),
        (" " + HEX[:12], False),
        ("SHA256:" + HEX, False),
        ("sha256:sha256:" + HEX[:12], False),
    ],
)
def test_looks_like_id(text: str, expected: bool) -> None:
    assert looks_like_id(text) is expected


def test_import_loads_no_regex_or_openssl() -> None:
    """Every `ketch run` parses a reference: the module must not pay for re/enum or hashlib."""
    code = (
        "import sys\n"
        "from ketch.oci.reference import Reference\n"
        f"Reference.parse('ghcr.io/a/b:1@{DIGEST}')\n"
        "heavy = {'re', 'enum', 'hashlib', '_hashlib'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    src = str(Path(__file__).parents[2] / "src")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=src))
