"""Unit tests for the pure parts of the image archive modules: docker's legacy documents, changes, names."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from ketch.engine import archive_formats, archive_load
from ketch.errors import CorruptContent, InvalidArgument
from ketch.image.store import chain_ids
from ketch.oci import image as oci
from ketch.oci.reference import Reference

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "created": "2024-01-02T03:04:05.120000000Z",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Labels": {"b": "2", "a": "<&>"}},
    "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
}


def test_go_json_escapes_like_go() -> None:
    assert (
        archive_formats.go_json({"a": "<&>", "b": "é", "c": [1, None]})
        == '{"a":"\\u003c\\u0026\\u003e","b":"é","c":[1,null]}'
    )


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2024-01-02T03:04:05.120000000Z", "2024-01-02T03:04:05.12Z"),
        ("2024-01-02T03:04:05.000Z", "2024-01-02T03:04:05Z"),
        ("2024-01-02T03:04:05+00:00", "2024-01-02T03:04:05Z"),
        ("2024-01-02T03:04:05.5+02:00", "2024-01-02T03:04:05.5+02:00"),
        ("", "0001-01-01T00:00:00Z"),
    ],
)
def test_go_time(text: str, want: str) -> None:
    assert archive_formats.go_time(text) == want


def test_container_config_in_struct_order() -> None:
    out = archive_formats.go_container_config(
        {"cmd": "sh", "Labels": {"b": "1", "a": "2"}, "ExposedPorts": {}, "StopTimeout": 0}
    )
    keys = list(out)
    assert keys[:3] == ["Hostname", "Domainname", "User"]
    assert "ExposedPorts" not in out  # omitempty
    assert out["Cmd"] == ["sh"]  # a StrSlice takes a lone string
    assert list(out["Labels"]) == ["a", "b"]
    assert out["StopTimeout"] == 0  # a pointer: kept unless null
    assert keys.index("Env") < keys.index("Cmd") < keys.index("Image") < keys.index("Labels")


def test_legacy_layers_chain_and_ids() -> None:
    layers = archive_formats.legacy_layers(CONFIG, (D1, D2))
    assert len(layers) == 2
    base, top = (json.loads(layer.json) for layer in layers)
    assert base["id"] == layers[0].id and "parent" not in base
    assert base["created"] == "1970-01-01T00:00:00Z" and base["os"] == "linux" and "config" not in base
    assert top["parent"] == layers[0].id == layers[1].parent
    assert top["config"]["Env"] == ["PATH=/bin"] and top["created"] == "2024-01-02T03:04:05.12Z"
    assert list(top)[:3] == ["id", "parent", "created"]
    # the base id is docker's CreateID: sorted keys, layer_id is the chain id
    blank = {
        "container_config": archive_formats.go_container_config(None),
        "created": "1970-01-01T00:00:00Z",
        "layer_id": D1,
    }
    expected = hashlib.sha256(archive_formats.go_json(blank).encode()).hexdigest()
    assert layers[0].id == expected
    assert archive_formats.legacy_layers(CONFIG, (D1, D2)) == layers  # deterministic


def test_legacy_top_id_depends_on_chain() -> None:
    one = archive_formats.legacy_layers(CONFIG, (D2,))[-1].id
    two = archive_formats.legacy_layers(CONFIG, (D1, D2))[-1].id
    assert one != two
    assert chain_ids((D1, D2))[0] == D1


def test_manifest_and_repositories_json() -> None:
    entries = [{"Config": "x.json", "RepoTags": None, "Layers": ["a/layer.tar"]}]
    assert (
        archive_formats.docker_manifest_json(entries)
        == b'[{"Config":"x.json","RepoTags":null,"Layers":["a/layer.tar"]}]\n'
    )
    refs = [
        (Reference.parse("alpine:3"), "aa"),
        (Reference.parse("alpine:1"), "bb"),
        (Reference.parse("ghcr.io/x/y:z"), "cc"),
    ]
    assert json.loads(archive_formats.repositories_json(refs)) == {
        "alpine": {"1": "bb", "3": "aa"},
        "ghcr.io/x/y": {"z": "cc"},
    }


def test_image_manifest_forms() -> None:
    media, body = archive_formats.image_manifest(D1, 10, [("", D2, 5), ("gzip", D1, 3)])
    doc = json.loads(body)
    assert media == oci.DOCKER_MANIFEST and doc["config"]["mediaType"] == oci.DOCKER_CONFIG
    assert [x["mediaType"] for x in doc["layers"]] == [oci.DOCKER_LAYER, oci.DOCKER_LAYER_GZIP]
    oci.Manifest.from_json(doc, media)
    media, body = archive_formats.image_manifest(D1, 10, [("zstd", D2, 5)])
    assert media == oci.OCI_MANIFEST and json.loads(body)["layers"][0]["mediaType"] == oci.OCI_LAYER_ZSTD


def test_changes() -> None:
    config = archive_formats.apply_changes([
        "ENV A=b", 'ENV C="d e" F=g', "env LEGACY some value", "ENV A=z",
        'CMD ["sh", "-c", "true"]', "ENTRYPOINT echo hi", "WORKDIR /srv", "WORKDIR app", "USER 1000:1000",
        'LABEL "x y"=1 k=v', "EXPOSE 80 53/udp 8000-8001", "VOLUME /data", 'VOLUME ["/a", "/b"]', "STOPSIGNAL SIGINT",
    ])  # fmt: skip
    assert config["Env"] == ["A=z", "C=d e", "F=g", "LEGACY=some value"]
    assert config["Cmd"] == ["sh", "-c", "true"]
    assert config["Entrypoint"] == ["/bin/sh", "-c", "echo hi"]
    assert config["WorkingDir"] == "/srv/app"
    assert config["User"] == "1000:1000"
    assert config["Labels"] == {"x y": "1", "k": "v"}
    assert config["ExposedPorts"] == {"53/udp": {}, "80/tcp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert config["Volumes"] == {"/data": {}, "/a": {}, "/b": {}}
    assert config["StopSignal"] == "SIGINT"


@pytest.mark.parametrize(
    "change", ["FROM x", "RUN true", "ENV", "EXPOSE 70000", "EXPOSE http", "ENV A", "ENV a=b c"]
)
def test_bad_changes(change: str) -> None:
    with pytest.raises(InvalidArgument):
        archive_formats.apply_changes([change])


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "a/.."])
def test_member_name_rejects_escapes(name: str) -> None:
    with pytest.raises(CorruptContent):
        archive_formats.member_name(name)


def test_member_name_normalises() -> None:
    assert archive_formats.member_name("./a//b/./c") == "a/b/c"
    assert archive_formats.member_name("./") == "."


def test_parse_docker_manifest() -> None:
    doc = [{"Config": "./c.json", "RepoTags": ["alpine:latest", "ghcr.io/a/b:1"], "Layers": ["l/layer.tar"]}]
    (entry,) = archive_load.parse_docker_manifest(json.dumps(doc).encode())
    assert entry.config == "c.json" and entry.layers == ("l/layer.tar",)
    assert [str(t) for t in entry.tags] == ["docker.io/library/alpine:latest", "ghcr.io/a/b:1"]
    for bad in (b"{}", b"[]", b"not json", b'[{"Layers": []}]', b'[{"Config": "c", "Layers": ["../x"]}]'):
        with pytest.raises(CorruptContent):
            archive_load.parse_docker_manifest(bad)
    with pytest.raises(InvalidArgument):
        archive_load.parse_docker_manifest(b'[{"Config": "c", "RepoTags": ["alpine"]}]')  # a tag is required


def test_oci_names() -> None:
    assert [
        str(r)
        for r in archive_load.oci_names(
            {archive_formats.CONTAINERD_NAME: "docker.io/library/a:1", archive_formats.REF_NAME: "1"}
        )
    ] == ["docker.io/library/a:1"]
    assert [r.familiar for r in archive_load.oci_names({archive_formats.REF_NAME: "example.com/x:2"})] == [
        "example.com/x:2"
    ]
    assert archive_load.oci_names({archive_formats.REF_NAME: "latest"}) == []
    assert archive_load.oci_names({}) == []


def _tar(members: list[tarfile.TarInfo], data: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info in members:
            body = data.get(info.name)
            if body is not None:
                info.size = len(body)
            tar.addfile(info, io.BytesIO(body) if body is not None else None)
    buf.seek(0)
    return buf


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_tar_archive_follows_links_inside_only() -> None:
    members = [tarfile.TarInfo("a/layer.tar"), _link("b/layer.tar", "../a/layer.tar"), _link("c", "a/layer.tar", tarfile.LNKTYPE),
               _link("d/out", "../../etc/passwd"), _link("e", "/etc/passwd")]  # fmt: skip
    tar = archive_load.TarArchive(_tar(members, {"a/layer.tar": b"data"}))
    assert tar.read("b/layer.tar", 10) == b"data"
    assert tar.read("./c", 10) == b"data"
    for name in ("d/out", "e", "missing"):
        with pytest.raises(CorruptContent):
            tar.read(name, 10)
    with pytest.raises(CorruptContent):
        tar.read("a/layer.tar", 2)  # over the limit


def test_tar_archive_rejects_hostile_names_and_garbage() -> None:
    with pytest.raises(CorruptContent):
        archive_load.TarArchive(_tar([tarfile.TarInfo("../x")], {"../x": b"x"}))
    with pytest.raises(CorruptContent):
        archive_load.TarArchive(
            _tar([tarfile.TarInfo("x"), tarfile.TarInfo("./x")], {"x": b"1", "./x": b"2"})
        )
    with pytest.raises(CorruptContent):
        archive_load.TarArchive(io.BytesIO(b"this is not a tar archive" * 40))


def test_compression_of() -> None:
    assert archive_formats.compression_of(b"\x1f\x8b\x08") == "gzip"
    assert archive_formats.compression_of(b"\x28\xb5\x2f\xfd") == "zstd"
    assert archive_formats.compression_of(b"BZh9") == "bzip2"
    assert archive_formats.compression_of(b"\xfd7zXZ\x00") == "xz"
    assert archive_formats.compression_of(b"ustar") == ""


def test_tar_archive_rejects_truncation() -> None:
    whole = _tar([tarfile.TarInfo("big")], {"big": b"x" * 5000}).getvalue()
    with pytest.raises(CorruptContent, match="truncated"):
        archive_load.TarArchive(io.BytesIO(whole[:2048]))
