"""Image archive formats: the documents of docker-archive and OCI layouts, as pure functions (no I/O).

docker-archive   what `docker save` writes (docker 24's legacy layout): manifest.json, repositories,
                 <config hex>.json, and one <v1 id>/ directory per layer with VERSION, json and
                 an uncompressed layer.tar whose sha256 is the config's diff_id
oci-archive      a tar of an OCI image layout: oci-layout, index.json, blobs/<alg>/<hex>
oci-dir          the same layout as a directory
"""

from __future__ import annotations

import posixpath

from ketch import jsonio
from ketch.errors import CorruptContent, InvalidArgument
from ketch.image.store import chain_ids
from ketch.oci import digest as _digest
from ketch.oci import image as oci
from ketch.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from ketch.oci.reference import Reference

FORMATS = ("docker-archive", "oci-archive", "oci-dir")
MAX_CONFIG = 16 << 20  # image configs, as pull allows
CONTAINERD_NAME = "io.containerd.image.name"  # the full reference, as docker 25+ writes it
REF_NAME = "org.opencontainers.image.ref.name"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
CHUNK = 1 << 20
_EPOCH = "1970-01-01T00:00:00Z"
_MAGIC = (
    (b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"),
)  # fmt: skip


def quiet(_id: str, _status: str, _current: int = 0, _total: int = 0) -> None:
    return None


# --- Go's encoding/json, for the documents docker hashes ------------------------------------------


def go_json(value: Any) -> str:
    """Compact JSON as Go's json.Marshal writes it: UTF-8 kept, <, > and & escaped."""
    import json

    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                         ("\u2029", "\\u2029")):  # fmt: skip
        text = text.replace(raw, escaped)
    return text


def go_time(text: str) -> str:
    """An RFC 3339 time as Go's time.Time marshals it: no trailing zeros in the fraction, UTC as Z."""
    if not text:
        return "0001-01-01T00:00:00Z"
    zone = "Z"
    if text[-1] in "Zz":
        text = text[:-1]
    elif len(text) > 6 and text[-6] in "+-" and text[-3] == ":":
        text, zone = text[:-6], text[-6:]
        zone = "Z" if zone[1:] == "00:00" else zone
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0")
    return whole + (f".{fraction}" if fraction else "") + zone


# container.Config's fields in declaration order (Go marshals structs in that order) and their kinds;
# a trailing "?" is omitempty.
_CONFIG_FIELDS = (
    ("Hostname", "str"), ("Domainname", "str"), ("User", "str"), ("AttachStdin", "bool"),
    ("AttachStdout", "bool"), ("AttachStderr", "bool"), ("ExposedPorts", "map?"), ("Tty", "bool"),
    ("OpenStdin", "bool"), ("StdinOnce", "bool"), ("Env", "list"), ("Cmd", "list"),
    ("Healthcheck", "health"), ("ArgsEscaped", "bool?"), ("Image", "str"), ("Volumes", "map"),
    ("WorkingDir", "str"), ("Entrypoint", "list"), ("NetworkDisabled", "bool?"), ("MacAddress", "str?"),
    ("OnBuild", "list"), ("Labels", "map"), ("StopSignal", "str?"), ("StopTimeout", "int"), ("Shell", "list?"),
)  # fmt: skip
_HEALTH_FIELDS = ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries")


def go_container_config(doc: dict[str, Any] | None) -> dict[str, Any]:
    """`doc` read into docker's container.Config and marshalled again (keys matched case-insensitively)."""
    doc = doc or {}
    folded = {k.lower(): v for k, v in doc.items()}
    out: dict[str, Any] = {}
    for name, kind in _CONFIG_FIELDS:
        value = _go_value(kind.rstrip("?"), doc.get(name, folded.get(name.lower())))
        if kind.endswith("?") and not value:
            continue
        if kind in ("health", "int") and value is None:
            continue  # pointers: omitted when nil
        out[name] = value
    return out


def _go_value(kind: str, value: Any) -> Any:
    if kind == "str":
        return value if isinstance(value, str) else ""
    if kind == "bool":
        return value if isinstance(value, bool) else False
    if kind == "int":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind == "list":  # []string or strslice.StrSlice (which also takes a lone string)
        if isinstance(value, str):
            return [value]
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else None
    if kind == "map":
        return {k: value[k] for k in sorted(value)} if isinstance(value, dict) else None
    if not isinstance(value, dict):  # health
        return None
    return {k: value[k] for k in _HEALTH_FIELDS if value.get(k)}


# --- the legacy (v1) layer directories of a docker-archive -------------------------------------------


class LegacyLayer(Record):
    id: str  # 64 hex digits: the directory name
    parent: str  # the parent's id, "" for the base layer
    json: bytes  # <id>/json


def v1_image(config: dict[str, Any] | None) -> dict[str, Any]:
    """docker's image.V1Image of an image config (None: the blank one of a layer below the top)."""
    if config is None:
        return {"created": _EPOCH, "container_config": go_container_config(None)}
    out: dict[str, Any] = {}
    _put_str(out, config, "comment")
    created = config.get("created")
    out["created"] = go_time(created if isinstance(created, str) else "")
    _put_str(out, config, "container")
    container_config = config.get("container_config")
    out["container_config"] = go_container_config(
        container_config if isinstance(container_config, dict) else None
    )
    _put_str(out, config, "docker_version")
    _put_str(out, config, "author")
    if isinstance(config.get("config"), dict):
        out["config"] = go_container_config(config["config"])
    for key in ("architecture", "variant", "os"):
        _put_str(out, config, key)
    size = config.get("Size")
    if isinstance(size, int) and not isinstance(size, bool) and size:
        out["Size"] = size
    return out


def _put_str(out: dict[str, Any], doc: dict[str, Any], key: str) -> None:
    value = doc.get(key)
    if isinstance(value, str) and value:
        out[key] = value


def v1_id(v1: dict[str, Any], chain_id: str, parent: str) -> str:
    """docker's image/v1.CreateID: the digest of the V1Image with layer_id and parent added, keys sorted."""
    doc = {**v1, "layer_id": chain_id, **({"parent": parent} if parent else {})}
    return _digest.of(go_json(dict(sorted(doc.items()))).encode())


def legacy_layers(config: dict[str, Any], diff_ids: tuple[str, ...]) -> list[LegacyLayer]:
    """One legacy layer per diff_id, computed as docker save does: only the top one carries the config."""
    chain = chain_ids(diff_ids)
    os_name = config.get("os") if isinstance(config.get("os"), str) else ""
    out: list[LegacyLayer] = []
    parent = ""
    for i, key in enumerate(chain):
        v1 = v1_image(config if i == len(chain) - 1 else None)
        ident = v1_id(v1, key, parent)
        body = {"id": digest_hex(ident), **({"parent": digest_hex(parent)} if parent else {}), **v1}
        if os_name:
            body["os"] = os_name
        out.append(
            LegacyLayer(digest_hex(ident), digest_hex(parent) if parent else "", go_json(body).encode())
        )
        parent = ident
    return out


def digest_hex(digest: str) -> str:
    return digest.partition(":")[2]


def docker_manifest_json(entries: list[dict[str, Any]]) -> bytes:
    """manifest.json as docker's json.Encoder writes it (compact, one trailing newline)."""
    return (go_json(entries) + "\n").encode()


def repositories_json(tags: Iterable[tuple[Reference, str]]) -> bytes:
    """The legacy `repositories` file: {familiar name: {tag: top layer's v1 id}}."""
    repos: dict[str, dict[str, str]] = {}
    for ref, top in tags:
        repos.setdefault(ref.familiar_name, {})[ref.tag] = top
    return (go_json({k: dict(sorted(v.items())) for k, v in sorted(repos.items())}) + "\n").encode()


# --- manifests and configs ketch writes ---------------------------------------------------------------

_LAYER_TYPES = {
    "docker": {"": oci.DOCKER_LAYER, "gzip": oci.DOCKER_LAYER_GZIP},
    "oci": {"": oci.OCI_LAYER, "gzip": oci.OCI_LAYER_GZIP, "zstd": oci.OCI_LAYER_ZSTD},
}


def image_manifest(
    config_digest: str, config_size: int, layers: list[tuple[str, str, int]], form: str = "docker"
) -> tuple[str, bytes]:
    """(media type, body) of a manifest for layers given as (compression, digest, size).

    "docker" is schema 2 (what a docker-archive's docker config belongs with); zstd layers have no
    docker media type, so they make it an OCI manifest."""
    if form == "docker" and any(kind == "zstd" for kind, _, _ in layers):
        form = "oci"
    media_type, config_type = (
        (oci.DOCKER_MANIFEST, oci.DOCKER_CONFIG) if form == "docker" else (oci.OCI_MANIFEST, oci.OCI_CONFIG)
    )
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "size": config_size, "digest": config_digest},
        "layers": [{"mediaType": _LAYER_TYPES[form][k], "size": n, "digest": d} for k, d, n in layers],
    }
    return media_type, jsonio.dumps(doc, indent=3).encode()


def import_config(
    diff_id: str, platform: oci.Platform, config: dict[str, Any], comment: str, created: str
) -> bytes:
    """The config docker import writes: one layer, the comment in the history, keys sorted."""
    doc: dict[str, Any] = {
        "architecture": platform.architecture,
        "comment": comment,
        "config": config,
        "created": created,
        "history": [{"created": created, "comment": comment}],
        "os": platform.os,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    if platform.variant:
        doc["variant"] = platform.variant
    return go_json(dict(sorted(doc.items()))).encode()


# --- `import --change`: the Dockerfile instructions docker import accepts --------------------------------


def apply_changes(changes: Iterable[str], config: dict[str, Any] | None = None) -> dict[str, Any]:
    """A container config (Env, Cmd, ...) with each change ("ENV A=b", "CMD [\"sh\"]") applied in turn."""
    out = dict(config or {})
    for change in changes:
        parts = change.strip().split(None, 1)
        if not parts:
            raise InvalidArgument("an empty --change")
        handler = _CHANGES.get(parts[0].upper())
        if handler is None:
            raise InvalidArgument(f"{parts[0]} is not a valid change command")
        rest = parts[1].strip() if len(parts) > 1 else ""
        if not rest:
            raise InvalidArgument(f"{parts[0].upper()} requires at least one argument")
        handler(out, rest)
    return out


def _pairs(rest: str, what: str) -> list[tuple[str, str]]:
    """KEY=VALUE words (quotes and backslashes as a shell reads them), or the legacy `KEY VALUE` form."""
    import shlex

    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise InvalidArgument(f"{what} {rest!r}: {exc}") from None
    if not words or "=" not in words[0]:
        first = rest.split(None, 1)
        if len(first) < 2:
            raise InvalidArgument(f"{what} needs a value: {rest!r}")
        return [(first[0], first[1].strip())]
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise InvalidArgument(f"{what}: {word!r} is not KEY=VALUE")
        pairs.append((key, value))
    return pairs


def _env(config: dict[str, Any], rest: str) -> None:
    env = [e for e in config.get("Env") or [] if isinstance(e, str)]
    for key, value in _pairs(rest, "ENV"):
        keys = [e.partition("=")[0] for e in env]
        if key in keys:  # replaced where it stands, as docker does
            env[keys.index(key)] = f"{key}={value}"
        else:
            env.append(f"{key}={value}")
    config["Env"] = env


def _words(rest: str) -> list[str] | None:
    """The JSON (exec) form's array, or None for the shell form."""
    if not rest.startswith("["):
        return None
    try:
        value = jsonio.loads(rest)
    except ValueError:
        return None  # docker falls back to the shell form too
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _command(rest: str) -> list[str]:
    words = _words(rest)
    return words if words is not None else ["/bin/sh", "-c", rest]


def _cmd(config: dict[str, Any], rest: str) -> None:
    config["Cmd"] = _command(rest)


def _entrypoint(config: dict[str, Any], rest: str) -> None:
    config["Entrypoint"] = _command(rest)


def _workdir(config: dict[str, Any], rest: str) -> None:
    current = config.get("WorkingDir") or "/"
    config["WorkingDir"] = posixpath.normpath(posixpath.join(current, rest))


def _user(config: dict[str, Any], rest: str) -> None:
    config["User"] = rest


def _label(config: dict[str, Any], rest: str) -> None:
    config["Labels"] = {**(config.get("Labels") or {}), **dict(_pairs(rest, "LABEL"))}


def _expose(config: dict[str, Any], rest: str) -> None:
    ports = dict(config.get("ExposedPorts") or {})
    for spec in rest.split():
        port, _, proto = spec.partition("/")
        proto = (proto or "tcp").lower()
        low, _, high = port.partition("-")
        if not low.isdigit() or not (high or low).isdigit() or proto not in ("tcp", "udp", "sctp"):
            raise InvalidArgument(f"EXPOSE: invalid port {spec!r}")
        for n in range(int(low), int(high or low) + 1):
            if not 0 < n < 65536:
                raise InvalidArgument(f"EXPOSE: invalid port {spec!r}")
            ports[f"{n}/{proto}"] = {}
    config["ExposedPorts"] = dict(sorted(ports.items()))


def _volume(config: dict[str, Any], rest: str) -> None:
    paths = _words(rest) or rest.split()
    config["Volumes"] = {**(config.get("Volumes") or {}), **{p: {} for p in paths}}


def _stop_signal(config: dict[str, Any], rest: str) -> None:
    config["StopSignal"] = rest


def _on_build(config: dict[str, Any], rest: str) -> None:
    config["OnBuild"] = [*(config.get("OnBuild") or []), rest]


_CHANGES = {
    "ENV": _env, "CMD": _cmd, "ENTRYPOINT": _entrypoint, "WORKDIR": _workdir, "USER": _user, "LABEL": _label,
    "EXPOSE": _expose, "VOLUME": _volume, "STOPSIGNAL": _stop_signal, "ONBUILD": _on_build,
}  # fmt: skip


# --- names and documents read from archives ------------------------------------------------------------


def member_name(raw: str) -> str:
    """A tar member's name without "./" and empty components; CorruptContent if absolute or with "..\"."""
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if raw.startswith("/") or ".." in parts:
        raise CorruptContent(f"the archive has an unsafe member name {raw!r}")
    return "/".join(parts) or "."


def blob_path(digest: str) -> str:
    algorithm, hexdigest = _digest.parse(digest)
    return f"blobs/{algorithm}/{hexdigest}"


def json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = jsonio.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptContent(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CorruptContent(f"{what} is not a JSON object")
    return doc


def image_config(body: bytes, what: str) -> oci.ImageConfig:
    try:
        return oci.ImageConfig.from_json(json_object(body, what))
    except InvalidArgument as exc:
        raise CorruptContent(f"{what}: {exc}") from None


def compression_of(head: bytes) -> str:
    """ "gzip", "zstd", "bzip2", "xz" or "" (none) from a stream's first bytes."""
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), "")
