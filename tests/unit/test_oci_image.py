"""Unit tests for ketch.oci.image (platforms, descriptors, manifests, indexes, configs) and ketch.oci.digest."""

from __future__ import annotations

import hashlib
import os
import types
from typing import Any

import pytest

from ketch.errors import CorruptContent, InvalidArgument
from ketch.oci import digest
from ketch.oci.image import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    LAYER_COMPRESSION,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
)


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# --- digest ------------------------------------------------------------------------------------------------


def test_digest_of_known_values() -> None:
    assert digest.of(b"") == EMPTY_SHA256
    assert digest.of(b"abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    assert digest.of(b"abc", "sha512") == "sha512:" + hashlib.sha512(b"abc").hexdigest()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (EMPTY_SHA256, ("sha256", EMPTY_SHA256[7:])),
        ("sha512:" + "0" * 128, ("sha512", "0" * 128)),
    ],
)
def test_digest_parse_valid(text: str, expected: tuple[str, str]) -> None:
    assert digest.parse(text) == expected
    assert digest.is_valid(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":",
        "sha256",
        "sha256:",
        EMPTY_SHA256[7:],
        "sha256:" + "0" * 63,
        "sha256:" + "0" * 65,
        "sha256:" + "0" * 128,
        "sha512:" + "0" * 64,
        "sha256:" + "E" * 64,
        "sha256:" + "z" * 64,
        "SHA256:" + "0" * 64,
        "md5:" + "0" * 32,
        "sha256:" + "0" * 63 + "\n",
        " sha256:" + "0" * 64,
    ],
)
def test_digest_parse_invalid(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid digest"):
        digest.parse(text)
    assert not digest.is_valid(text)


def test_verifier_accepts_exact_content() -> None:
    data = b"some layer bytes" * 1000
    v = digest.Verifier(digest.of(data), len(data))
    for i in range(0, len(data), 333):
        v.update(data[i : i + 333])
    v.verify()
    assert v.size == len(data)
    assert v.digest() == digest.of(data)


def test_verifier_unknown_size_checks_digest_only() -> None:
    v = digest.Verifier(digest.of(b"abc"))
    v.update(memoryview(b"abc"))
    v.verify()


def test_verifier_too_many_bytes_fails_at_update() -> None:
    v = digest.Verifier(digest.of(b"abc"), 3)
    v.update(b"ab")
    with pytest.raises(CorruptContent, match="more than the expected 3 bytes"):
        v.update(b"cd")


def test_verifier_too_few_bytes_fails_at_verify() -> None:
    v = digest.Verifier(digest.of(b"abc"), 3)
    v.update(b"ab")
    with pytest.raises(CorruptContent, match="got 2 bytes"):
        v.verify()


def test_verifier_mismatch_names_both_digests() -> None:
    expected, actual = digest.of(b"abc"), digest.of(b"abd")
    v = digest.Verifier(expected, 3)
    v.update(b"abd")
    with pytest.raises(CorruptContent) as info:
        v.verify()
    assert expected in str(info.value)
    assert actual in str(info.value)


def test_verifier_sha512() -> None:
    v = digest.Verifier(digest.of(b"abc", "sha512"), 3)
    v.update(b"abc")
    v.verify()


def test_verifier_rejects_invalid_expected() -> None:
    with pytest.raises(InvalidArgument):
        digest.Verifier("sha256:nope")


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
@pytest.mark.parametrize("data", [b"", b"abc", os.urandom(200_000)])
def test_check_agrees_with_hashlib(algorithm: str, data: bytes) -> None:
    digest.check(data, f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}")


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_check_mismatch_reads_as_the_verifiers(algorithm: str) -> None:
    expected = digest.of(b"abc", algorithm)
    v = digest.Verifier(expected)
    v.update(b"abd")
    with pytest.raises(CorruptContent) as by_verifier:
        v.verify()
    with pytest.raises(CorruptContent) as by_check:
        digest.check(b"abd", expected)
    assert str(by_check.value) == str(by_verifier.value)
    assert digest.of(b"abd", algorithm) in str(by_check.value)


@pytest.mark.parametrize("bad", ["", "sha256:nope", "md5:" + "0" * 32, "sha256:" + "A" * 64])
def test_check_rejects_invalid_expected(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid digest"):
        digest.check(b"abc", bad)


# --- Platform ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/x86_64", Platform("linux", "amd64")),
        ("linux/x86-64", Platform("linux", "amd64")),
        ("linux/aarch64", Platform("linux", "arm64")),
        ("linux/arm64/v8", Platform("linux", "arm64")),
        ("linux/aarch64/v8", Platform("linux", "arm64")),
        ("linux/arm/v7", Platform("linux", "arm", "v7")),
        ("linux/arm/v6", Platform("linux", "arm", "v6")),
        ("Linux/AMD64", Platform("linux", "amd64")),
        (" linux/s390x ", Platform("linux", "s390x")),
        ("windows/amd64", Platform("windows", "amd64")),
    ],
)
def test_platform_parse(text: str, expected: Platform) -> None:
    assert Platform.parse(text) == expected


@pytest.mark.parametrize("text", ["", "linux", "linux/", "/amd64", "linux//v7", "linux/arm/v7/x", "a/b/c/d"])
def test_platform_parse_invalid(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid platform"):
        Platform.parse(text)


def test_platform_str() -> None:
    assert str(Platform("linux", "arm", "v7")) == "linux/arm/v7"
    assert str(Platform("linux", "amd64")) == "linux/amd64"


def test_platform_normalized_is_idempotent() -> None:
    p = Platform("linux", "aarch64", "v8", "10.0")
    n = p.normalized()
    assert n == Platform("linux", "arm64", "", "10.0")
    assert n.normalized() == n


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (Platform("linux", "arm64", "v8"), Platform("linux", "arm64"), True),
        (Platform("linux", "aarch64"), Platform("linux", "arm64", "v8"), True),
        (Platform("linux", "x86_64"), Platform("linux", "amd64"), True),
        (Platform("linux", "arm", "v7"), Platform("linux", "arm"), True),
        (Platform("linux", "arm"), Platform("linux", "arm", "v6"), False),  # plain arm is arm/v7
        (Platform("linux", "arm", "v7"), Platform("linux", "arm", "v6"), False),
        (Platform("linux", "amd64"), Platform("linux", "arm64"), False),
        (Platform("linux", "amd64"), Platform("windows", "amd64"), False),
    ],
)
def test_platform_matches(a: Platform, b: Platform, expected: bool) -> None:
    assert a.matches(b) is expected
    assert b.matches(a) is expected


def _fake_uname(monkeypatch: pytest.MonkeyPatch, machine: str) -> None:
    fake = types.SimpleNamespace(sysname="Linux", nodename="h", release="6", version="1", machine=machine)
    monkeypatch.setattr(os, "uname", lambda: fake)


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", Platform("linux", "amd64")),
        ("aarch64", Platform("linux", "arm64")),
        ("s390x", Platform("linux", "s390x")),
        ("ppc64le", Platform("linux", "ppc64le")),
    ],
)
def test_platform_host(monkeypatch: pytest.MonkeyPatch, machine: str, expected: Platform) -> None:
    _fake_uname(monkeypatch, machine)
    assert Platform.host() == expected


def test_platform_host_armv7(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_uname(monkeypatch, "armv7l")
    assert Platform.host() == Platform("linux", "arm", "v7")


def test_platform_from_json() -> None:
    d = {"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1879"}
    assert Platform.from_json(d) == Platform("windows", "amd64", "", "10.0.17763.1879")
    with pytest.raises(InvalidArgument, match=r"platform\.architecture"):
        Platform.from_json({"os": "linux"})
    with pytest.raises(InvalidArgument, match=r"platform\.os"):
        Platform.from_json({"os": 1, "architecture": "amd64"})


# --- Descriptor -----------------------------------------------------------------------------------------------


def desc(media_type: str = OCI_LAYER_GZIP, seed: str = "x", size: int = 10, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha(seed), "size": size, **extra}


def test_descriptor_from_json() -> None:
    d = Descriptor.from_json(
        desc(annotations={"a": "b"}, urls=["https://x/y"], platform={"os": "linux", "architecture": "arm64"})
    )
    assert d.media_type == OCI_LAYER_GZIP
    assert d.digest == sha("x")
    assert d.size == 10
    assert d.annotations == {"a": "b"}
    assert d.urls == ("https://x/y",)
    assert d.platform == Platform("linux", "arm64")


def test_descriptor_defaults() -> None:
    d = Descriptor.from_json({"digest": sha("x"), "size": 0})
    assert d.media_type == "" and d.annotations == {} and d.urls == () and d.platform is None


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"digest": "sha256:nothex", "size": 1}, "layer.digest"),
        ({"digest": "", "size": 1}, "layer.digest"),
        ({"size": 1}, "layer.digest"),
        ({"digest": 5, "size": 1}, "layer.digest"),
        ({"digest": sha("x"), "size": -1}, "layer.size"),
        ({"digest": sha("x"), "size": True}, "layer.size"),
        ({"digest": sha("x"), "size": False}, "layer.size"),
        ({"digest": sha("x"), "size": "10"}, "layer.size"),
        ({"digest": sha("x"), "size": 1.0}, "layer.size"),
        ({"digest": sha("x")}, "layer.size"),
        ({"digest": sha("x"), "size": 1, "mediaType": 7}, "layer.mediaType"),
        ({"digest": sha("x"), "size": 1, "annotations": {"a": 1}}, "layer.annotations"),
        ({"digest": sha("x"), "size": 1, "annotations": ["a"]}, "layer.annotations"),
        ({"digest": sha("x"), "size": 1, "urls": "http://x"}, "layer.urls"),
        ({"digest": sha("x"), "size": 1, "platform": "linux/amd64"}, "layer.platform"),
        ({"digest": sha("x"), "size": 1, "platform": {"os": "linux"}}, "layer.platform.architecture"),
    ],
)
def test_descriptor_errors_name_the_path(doc: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        Descriptor.from_json(doc, "layer")
    assert str(info.value).startswith(where + ":")


def test_descriptor_round_trip() -> None:
    doc = desc(
        annotations={"org.opencontainers.image.title": "x"},
        urls=["https://a", "https://b"],
        platform={"architecture": "arm", "os": "linux", "variant": "v7", "os.version": "1"},
    )
    d = Descriptor.from_json(doc)
    assert d.to_json() == doc
    assert Descriptor.from_json(d.to_json()) == d


def test_descriptor_to_json_minimal() -> None:
    d = Descriptor(OCI_CONFIG, sha("c"), 5)
    assert d.to_json() == {"mediaType": OCI_CONFIG, "digest": sha("c"), "size": 5}


# --- Manifest -------------------------------------------------------------------------------------------------


def manifest_doc(media_type: str | None = OCI_MANIFEST, layers: int = 2, **extra: Any) -> dict[str, Any]:
    config_type = DOCKER_CONFIG if media_type == DOCKER_MANIFEST else OCI_CONFIG
    layer_type = DOCKER_LAYER_GZIP if media_type == DOCKER_MANIFEST else OCI_LAYER_GZIP
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "config": desc(config_type, "config", 100),
        "layers": [desc(layer_type, f"layer{i}", 1000 + i) for i in range(layers)],
        **extra,
    }
    if media_type is not None:
        doc["mediaType"] = media_type
    return doc


def test_manifest_oci() -> None:
    m = Manifest.from_json(manifest_doc(annotations={"k": "v"}))
    assert m.media_type == OCI_MANIFEST
    assert m.config.digest == sha("config")
    assert [layer.digest for layer in m.layers] == [sha("layer0"), sha("layer1")]
    assert [layer.size for layer in m.layers] == [1000, 1001]
    assert m.annotations == {"k": "v"}


def test_manifest_docker() -> None:
    m = Manifest.from_json(manifest_doc(DOCKER_MANIFEST))
    assert m.media_type == DOCKER_MANIFEST
    assert m.config.media_type == DOCKER_CONFIG
    assert m.layers[0].media_type == DOCKER_LAYER_GZIP


def test_manifest_media_type_from_header() -> None:
    assert Manifest.from_json(manifest_doc(None), DOCKER_MANIFEST).media_type == DOCKER_MANIFEST
    assert Manifest.from_json(manifest_doc(None)).media_type == OCI_MANIFEST


def test_manifest_without_layers() -> None:
    assert Manifest.from_json(manifest_doc(layers=0)).layers == ()


@pytest.mark.parametrize("layer_type", sorted(LAYER_COMPRESSION))
def test_manifest_accepts_every_known_layer_type(layer_type: str) -> None:
    doc = manifest_doc()
    doc["layers"][0]["mediaType"] = layer_type
    assert Manifest.from_json(doc).layers[0].media_type == layer_type


@pytest.mark.parametrize("version", [1, 3, "2", None, 2.5])
def test_manifest_schema_version_must_be_2(version: object) -> None:
    doc = manifest_doc()
    doc["schemaVersion"] = version
    with pytest.raises(InvalidArgument, match=r"^manifest\.schemaVersion:"):
        Manifest.from_json(doc)


def test_manifest_schema_version_missing() -> None:
    doc = manifest_doc()
    del doc["schemaVersion"]
    with pytest.raises(InvalidArgument, match=r"manifest\.schemaVersion"):
        Manifest.from_json(doc)


@pytest.mark.parametrize("kind", [OCI_INDEX, DOCKER_LIST, "application/json"])
def test_manifest_refuses_non_manifest_type(kind: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^manifest\.mediaType: .*not an image manifest"):
        Manifest.from_json(manifest_doc(kind))


@pytest.mark.parametrize(
    "layer_type",
    [
        "application/vnd.oci.image.layer.v1.tar+bzip2",
        "application/vnd.in-toto+json",
        "",
        "application/vnd.docker.container.image.v1+json",
    ],
)
def test_manifest_refuses_unknown_layer_type(layer_type: str) -> None:
    doc = manifest_doc()
    doc["layers"][1]["mediaType"] = layer_type
    with pytest.raises(InvalidArgument, match=r"^manifest\.layers\[1\]\.mediaType: unsupported layer"):
        Manifest.from_json(doc)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d.pop("config"), "manifest.config"),
        (lambda d: d.update(config="x"), "manifest.config"),
        (lambda d: d["config"].update(digest="sha256:1"), "manifest.config.digest"),
        (lambda d: d["layers"][0].update(size=-5), "manifest.layers[0].size"),
        (lambda d: d["layers"][1].update(digest="nope"), "manifest.layers[1].digest"),
        (lambda d: d.update(layers={"a": 1}), "manifest.layers"),
        (lambda d: d.update(layers=["x"]), "manifest.layers[0]"),
        (lambda d: d.update(annotations={"a": None}), "manifest.annotations"),
    ],
)
def test_manifest_errors_name_the_path(change: Any, where: str) -> None:
    doc = manifest_doc()
    change(doc)
    with pytest.raises(InvalidArgument) as info:
        Manifest.from_json(doc)
    assert str(info.value).startswith(where + ":")


@pytest.mark.parametrize("kind", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_manifest_round_trip(kind: str) -> None:
    doc = manifest_doc(kind, annotations={"a": "b"})
    m = Manifest.from_json(doc)
    assert m.to_json() == doc
    assert Manifest.from_json(m.to_json()) == m


# --- Index -----------------------------------------------------------------------------------------------------


def entry(platform: str | None, seed: str = "", media_type: str = OCI_MANIFEST) -> dict[str, Any]:
    d = desc(media_type, seed or f"manifest {platform}", 500)
    if platform is not None:
        os_, arch, *rest = platform.split("/")
        d["platform"] = {"os": os_, "architecture": arch}
        if rest:
            d["platform"]["variant"] = rest[0]
    return d


def index_of(*entries: dict[str, Any], media_type: str = OCI_INDEX) -> Index:
    return Index.from_json({"schemaVersion": 2, "mediaType": media_type, "manifests": list(entries)})


def test_index_from_json() -> None:
    idx = index_of(entry("linux/amd64"), entry("linux/arm64/v8"))
    assert idx.media_type == OCI_INDEX
    assert [m.platform for m in idx.manifests] == [
        Platform("linux", "amd64"),
        Platform("linux", "arm64", "v8"),
    ]


def test_index_docker_list() -> None:
    idx = index_of(entry("linux/amd64", media_type=DOCKER_MANIFEST), media_type=DOCKER_LIST)
    assert idx.media_type == DOCKER_LIST
    assert idx.select(Platform.parse("linux/amd64")).media_type == DOCKER_MANIFEST


def test_index_media_type_from_header() -> None:
    idx = Index.from_json({"schemaVersion": 2, "manifests": []}, DOCKER_LIST)
    assert idx.media_type == DOCKER_LIST


def test_index_errors() -> None:
    with pytest.raises(InvalidArgument, match=r"^index\.schemaVersion"):
        Index.from_json({"schemaVersion": 1, "manifests": []})
    with pytest.raises(InvalidArgument, match="not an image index"):
        Index.from_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "manifests": []})
    with pytest.raises(InvalidArgument, match=r"^index\.manifests\[1\]\.size"):
        Index.from_json({"schemaVersion": 2, "manifests": [entry("linux/amd64"), desc(size=-1)]})


def test_select_by_os_and_arch() -> None:
    idx = index_of(entry("linux/arm64/v8"), entry("linux/amd64"), entry("linux/s390x"))
    assert idx.select(Platform.parse("linux/amd64")).digest == sha("manifest linux/amd64")
    assert idx.select(Platform.parse("linux/s390x")).digest == sha("manifest linux/s390x")


def test_select_arm64_v8_equals_arm64() -> None:
    idx = index_of(entry("linux/amd64"), entry("linux/arm64/v8"))
    assert idx.select(Platform.parse("linux/arm64")).digest == sha("manifest linux/arm64/v8")
    assert idx.select(Platform.parse("linux/aarch64")).digest == sha("manifest linux/arm64/v8")
    idx = index_of(entry("linux/arm64"))
    assert idx.select(Platform.parse("linux/arm64/v8")).digest == sha("manifest linux/arm64")


def test_select_exact_variant_beats_blank() -> None:
    idx = index_of(entry("linux/ppc64le"), entry("linux/ppc64le/v9"))
    assert idx.select(Platform.parse("linux/ppc64le/v9")).digest == sha("manifest linux/ppc64le/v9")


def test_select_exact_variant_among_variants() -> None:
    idx = index_of(entry("linux/arm/v5"), entry("linux/arm/v6"), entry("linux/arm/v7"))
    assert idx.select(Platform.parse("linux/arm/v6")).digest == sha("manifest linux/arm/v6")
    assert idx.select(Platform.parse("linux/arm/v7")).digest == sha("manifest linux/arm/v7")


def test_select_blank_arm_prefers_v7() -> None:
    idx = index_of(entry("linux/arm/v6"), entry("linux/arm/v7"))
    assert idx.select(Platform.parse("linux/arm")).digest == sha("manifest linux/arm/v7")


def test_select_nothing_matches_lists_offers() -> None:
    idx = index_of(entry("linux/arm64/v8"), entry("linux/s390x"))
    with pytest.raises(InvalidArgument) as info:
        idx.select(Platform.parse("linux/amd64"))
    message = str(info.value)
    assert "linux/amd64" in message
    assert "linux/arm64/v8" in message
    assert "linux/s390x" in message


def test_select_empty_index() -> None:
    with pytest.raises(InvalidArgument, match="none"):
        index_of().select(Platform.parse("linux/amd64"))


def test_select_skips_non_manifests() -> None:
    idx = index_of(
        entry("linux/amd64", "nested", media_type=OCI_INDEX),
        entry("linux/amd64", "layer", media_type=OCI_LAYER_GZIP),
        entry(None, "no platform"),
        entry("unknown/unknown", "attestation"),
        entry("linux/amd64", "real"),
    )
    assert idx.select(Platform.parse("linux/amd64")).digest == sha("real")


def test_select_only_non_manifests_fails() -> None:
    idx = index_of(entry("linux/amd64", "nested", media_type=OCI_INDEX))
    with pytest.raises(InvalidArgument):
        idx.select(Platform.parse("linux/amd64"))


def test_select_os_must_match() -> None:
    idx = index_of(entry("windows/amd64"))
    with pytest.raises(InvalidArgument, match="windows/amd64"):
        idx.select(Platform.parse("linux/amd64"))


# --- ImageConfig ------------------------------------------------------------------------------------------------


def config_doc(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "architecture": "arm",
        "os": "linux",
        "variant": "v7",
        "created": "2024-01-02T03:04:05Z",
        "author": "me",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Labels": {"a": "b"}},
        "rootfs": {"type": "layers", "diff_ids": [sha("d0"), sha("d1")]},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": "ADD x /"},
            {"created_by": "ENV A=b", "empty_layer": True, "comment": "c", "author": "a"},
        ],
    }
    doc.update(extra)
    return doc


def test_image_config_from_json() -> None:
    c = ImageConfig.from_json(config_doc())
    assert c.diff_ids == (sha("d0"), sha("d1"))
    assert c.platform == Platform("linux", "arm", "v7")
    assert c.created == "2024-01-02T03:04:05Z"
    assert c.author == "me"
    assert c.config["Cmd"] == ["sh"]
    assert [h.created_by for h in c.history] == ["ADD x /", "ENV A=b"]
    assert [h.empty_layer for h in c.history] == [False, True]
    assert c.history[1].comment == "c" and c.history[1].author == "a"


def test_image_config_minimal() -> None:
    c = ImageConfig.from_json({"rootfs": {"type": "layers"}})
    assert c.diff_ids == () and c.config == {} and c.history == ()
    assert c.architecture == "" and c.os == ""


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({}, "config.rootfs"),
        ({"rootfs": []}, "config.rootfs"),
        ({"rootfs": {"diff_ids": []}}, "config.rootfs.type"),
        ({"rootfs": {"type": "Layers", "diff_ids": []}}, "config.rootfs.type"),
        ({"rootfs": {"type": "layers", "diff_ids": "x"}}, "config.rootfs.diff_ids"),
        ({"rootfs": {"type": "layers", "diff_ids": [1]}}, "config.rootfs.diff_ids"),
        ({"rootfs": {"type": "layers", "diff_ids": [sha("a"), "sha256:zz"]}}, "config.rootfs.diff_ids[1]"),
        ({"rootfs": {"type": "layers", "diff_ids": ["a" * 64]}}, "config.rootfs.diff_ids[0]"),
        ({"rootfs": {"type": "layers"}, "config": "x"}, "config.config"),
        ({"rootfs": {"type": "layers"}, "history": [5]}, "config.history[0]"),
        ({"rootfs": {"type": "layers"}, "architecture": 1}, "config.architecture"),
    ],
)
def test_image_config_errors_name_the_path(doc: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        ImageConfig.from_json(doc)
    assert str(info.value).startswith(where + ":")
