"""Typed views of the OCI image spec (and Docker schema 2): descriptors, manifests, indexes, configs.

Parsing is strict and names the JSON path of a bad field. Documents are content-addressed, so
ketch never re-serialises one it received: callers keep the original bytes and use these
records only to read them.
"""

from __future__ import annotations

from ketch.errors import InvalidArgument
from ketch.oci import digest as _digest
from ketch.record import Record, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Json = dict[str, Any]

# --- media types -------------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"  # docker save/load uses plain tars

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)

# layer media type -> compression ("", "gzip", "zstd")
LAYER_COMPRESSION = {
    OCI_LAYER: "",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDIST: "",
    OCI_LAYER_NONDIST_GZIP: "gzip",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_FOREIGN: "gzip",
    DOCKER_LAYER: "",
}


def _fail(path: str, what: str) -> InvalidArgument:
    return InvalidArgument(f"{path}: {what}")


def _obj(value: Any, path: str) -> Json:
    if not isinstance(value, dict):
        raise _fail(path, "expected an object")
    return value


def _str(d: Json, key: str, path: str, default: str | None = None) -> str:
    value = d.get(key, default)
    if value is None:
        raise _fail(f"{path}.{key}", "required string is missing")
    if not isinstance(value, str):
        raise _fail(f"{path}.{key}", "expected a string")
    return value


def _strs(d: Json, key: str, path: str) -> tuple[str, ...]:
    value = d.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(f"{path}.{key}", "expected an array of strings")
    return tuple(value)


def _str_map(d: Json, key: str, path: str) -> dict[str, str]:
    value = _obj(d.get(key) or {}, f"{path}.{key}")
    if not all(isinstance(v, str) for v in value.values()):
        raise _fail(f"{path}.{key}", "expected an object of strings")
    return dict(value)


def _objs(d: Json, key: str, path: str) -> list[tuple[Json, str]]:
    value = d.get(key) or []
    if not isinstance(value, list):
        raise _fail(f"{path}.{key}", "expected an array")
    return [(_obj(v, f"{path}.{key}[{i}]"), f"{path}.{key}[{i}]") for i, v in enumerate(value)]


# --- platforms -----------------------------------------------------------------------------------

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm"}


class Platform(Record):
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """ "linux/arm64/v8" or "linux/amd64" (as --platform takes it), normalised."""
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidArgument(f"invalid platform {text!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "").normalized()

    @classmethod
    def host(cls) -> Platform:
        import os

        machine = os.uname().machine
        if machine.startswith("armv"):  # armv7l, armv6l: arm with a variant
            return cls("linux", "arm", "v" + machine[4:5]).normalized()
        return cls("linux", machine).normalized()

    @classmethod
    def from_json(cls, d: Json, path: str = "platform") -> Platform:
        return cls(
            _str(d, "os", path), _str(d, "architecture", path), _str(d, "variant", path, ""),
            _str(d, "os.version", path, ""),
        )  # fmt: skip

    def normalized(self) -> Platform:
        arch = _ARCH_ALIASES.get(self.architecture, self.architecture)
        variant = self.variant
        if arch == "arm64" and variant == "v8":
            variant = ""  # arm64 means v8 unless said otherwise
        if arch == "arm" and not variant:
            variant = "v7"  # as containerd: plain arm is arm/v7
        return Platform(self.os, arch, variant, self.os_version)

    def matches(self, other: Platform) -> bool:
        a, b = self.normalized(), other.normalized()
        if (a.os, a.architecture) != (b.os, b.architecture):
            return False
        return not a.variant or not b.variant or a.variant == b.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


# --- descriptors, manifests, indexes ---------------------------------------------------------------


class Descriptor(Record):
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()
    platform: Platform | None = None

    @classmethod
    def from_json(cls, d: Json, path: str = "descriptor") -> Descriptor:
        digest = _str(d, "digest", path)
        try:
            _digest.parse(digest)
        except InvalidArgument as exc:
            raise _fail(f"{path}.digest", str(exc)) from None
        size = d.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _fail(f"{path}.size", "expected a non-negative integer")
        platform = d.get("platform")
        return cls(
            _str(d, "mediaType", path, ""), digest, size, _str_map(d, "annotations", path),
            _strs(d, "urls", path),
            Platform.from_json(_obj(platform, f"{path}.platform"), f"{path}.platform") if platform else None,
        )  # fmt: skip

    def to_json(self) -> Json:
        out: Json = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.urls:
            out["urls"] = list(self.urls)
        if self.platform:
            p = self.platform
            out["platform"] = {"architecture": p.architecture, "os": p.os}
            if p.variant:
                out["platform"]["variant"] = p.variant
            if p.os_version:
                out["platform"]["os.version"] = p.os_version
        return out


def _kind(d: Json, media_type: str, path: str, kinds: tuple[str, ...], what: str) -> str:
    """A schema-2 document's media type (its own, else the one it was served with, else OCI's)."""
    if d.get("schemaVersion") != 2:
        raise _fail(f"{path}.schemaVersion", "only schema version 2 is supported")
    kind = _str(d, "mediaType", path, "") or media_type or kinds[0]
    if kind not in kinds:
        raise _fail(f"{path}.mediaType", f"{kind!r} is not {what}")
    return kind


class Manifest(Record):
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Json, media_type: str = "", path: str = "manifest") -> Manifest:
        kind = _kind(d, media_type, path, MANIFEST_TYPES, "an image manifest")
        config = Descriptor.from_json(_obj(d.get("config"), f"{path}.config"), f"{path}.config")
        layers = []
        for v, where in _objs(d, "layers", path):
            layer = Descriptor.from_json(v, where)
            if layer.media_type not in LAYER_COMPRESSION:
                raise _fail(f"{where}.mediaType", f"unsupported layer media type {layer.media_type!r}")
            layers.append(layer)
        return cls(kind, config, tuple(layers), _str_map(d, "annotations", path))

    def to_json(self) -> Json:
        out: Json = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


class Index(Record):
    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Json, media_type: str = "", path: str = "index") -> Index:
        kind = _kind(d, media_type, path, INDEX_TYPES, "an image index")
        manifests = tuple(Descriptor.from_json(v, p) for v, p in _objs(d, "manifests", path))
        return cls(kind, manifests, _str_map(d, "annotations", path))

    def select(self, platform: Platform) -> Descriptor:
        """The manifest for `platform` (an exact variant beats a blank one); NotFound-style error if none."""
        candidates = [
            m for m in self.manifests
            if m.media_type in MANIFEST_TYPES and m.platform is not None and m.platform.matches(platform)
        ]  # fmt: skip
        if not candidates:
            offered = ", ".join(str(m.platform) for m in self.manifests if m.platform) or "none"
            raise InvalidArgument(f"no image for platform {platform} (the index offers: {offered})")
        want = platform.normalized().variant
        exact = [m for m in candidates if m.platform and m.platform.normalized().variant == want]
        return (exact or candidates)[0]


class History(Record):
    created: str = ""
    created_by: str = ""
    comment: str = ""
    author: str = ""
    empty_layer: bool = False

    @classmethod
    def from_json(cls, d: Json, path: str) -> History:
        return cls(
            _str(d, "created", path, ""), _str(d, "created_by", path, ""), _str(d, "comment", path, ""),
            _str(d, "author", path, ""), bool(d.get("empty_layer", False)),
        )  # fmt: skip


class ImageConfig(Record):
    """The parts of an image config ketch reads; `config` keeps the runtime defaults as JSON
    (Env, Entrypoint, Cmd, WorkingDir, User, ExposedPorts, Volumes, Labels, StopSignal, Healthcheck)."""

    architecture: str
    os: str
    diff_ids: tuple[str, ...]
    variant: str = ""
    created: str = ""
    author: str = ""
    config: Json = field(default_factory=dict)
    history: tuple[History, ...] = ()

    @classmethod
    def from_json(cls, d: Json, path: str = "config") -> ImageConfig:
        rootfs = _obj(d.get("rootfs"), f"{path}.rootfs")
        if rootfs.get("type") != "layers":
            raise _fail(f"{path}.rootfs.type", "must be 'layers'")
        diff_ids = _strs(rootfs, "diff_ids", f"{path}.rootfs")
        for i, diff_id in enumerate(diff_ids):
            if not _digest.is_valid(diff_id):
                raise _fail(f"{path}.rootfs.diff_ids[{i}]", f"invalid digest {diff_id!r}")
        return cls(
            _str(d, "architecture", path, ""), _str(d, "os", path, ""), diff_ids,
            _str(d, "variant", path, ""), _str(d, "created", path, ""), _str(d, "author", path, ""),
            _obj(d.get("config") or {}, f"{path}.config"),
            tuple(History.from_json(v, p) for v, p in _objs(d, "history", path)),
        )  # fmt: skip

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)
