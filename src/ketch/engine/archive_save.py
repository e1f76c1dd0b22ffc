"""Image archive saving (docker-archive, oci-archive, oci-dir) and import of a rootfs tarball."""

from __future__ import annotations

import hashlib
import os
import tarfile
from contextlib import contextmanager
from typing import cast

from ketch import jsonio
from ketch.clock import rfc3339
from ketch.engine.archive_formats import (
    CHUNK,
    CONTAINERD_NAME,
    MAX_CONFIG,
    OCI_LAYOUT,
    REF_NAME,
    apply_changes,
    blob_path,
    compression_of,
    digest_hex,
    docker_manifest_json,
    go_json,
    image_config,
    image_manifest,
    import_config,
    json_object,
    legacy_layers,
    quiet,
    repositories_json,
)
from ketch.engine.archive_load import Prefixed, copy_decoded, copy_in, decoding, decompress_stream, read_head
from ketch.errors import Conflict, CorruptContent, InvalidArgument, Unsupported
from ketch.files import FileLock
from ketch.image.compression import HashingReader, gzip_writer
from ketch.image.store import ImageRecord
from ketch.oci import image as oci
from ketch.oci.reference import Reference
from ketch.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from contextlib import AbstractContextManager
    from typing import Any, BinaryIO

    from ketch.engine.images import ImageService, Report


# --- save -------------------------------------------------------------------------------------------


class SaveItem(Record):
    image: ImageRecord
    tags: tuple[Reference, ...] = ()


def resolve(service: ImageService, names: list[str]) -> list[SaveItem]:
    """The images `docker save NAME...` writes and the tags each carries: a name:tag gives that tag, a
    bare repository name all its tags, an ID or a digest reference none."""
    items: dict[str, list[Any]] = {}
    records = service.images.all()

    def add(image: ImageRecord, ref: Reference | None) -> None:
        tags = items.setdefault(image.id, [image, []])[1]
        if ref is not None and ref not in tags:
            tags.append(ref)

    for text in names:
        ref = None if text.startswith("sha256:") else _reference(text)
        if ref is not None and not ref.tag and not ref.digest:
            found = [
                (i, Reference.parse(n))
                for i in records
                for n in i.names
                if Reference.parse(n).name == ref.name
            ]
            for image, tagged in found:
                add(image, tagged)
            if found:
                continue
        image = service.get(text)
        add(image, ref if ref is not None and ref.tag and not ref.digest else None)
    return [SaveItem(image, tuple(tags)) for image, tags in items.values()]


def _reference(text: str) -> Reference | None:
    """`text` as a reference without a default tag; None for what can only be an ID (64 hex digits)."""
    try:
        return Reference.parse(text, default_tag="")
    except InvalidArgument:
        return None


class _Exact:
    """Reads return `n` bytes unless the stream ends (tarfile's copy treats a short read as the end)."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        if n < 0 or len(data) >= n or not data:
            return data
        buf = bytearray(data)
        while len(buf) < n and (more := self.inner.read(n - len(buf))):
            buf += more
        return bytes(buf)


class _TarSink:
    """Writes members into a tar stream (tarfile's w| mode: nothing is held in memory or seeked)."""

    def __init__(self, out: BinaryIO) -> None:
        self.tar = tarfile.open(fileobj=out, mode="w|", bufsize=CHUNK, format=tarfile.PAX_FORMAT)  # noqa: SIM115

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime, info.uname, info.gname = kind, mode, 0, "", ""
        return info

    def directory(self, name: str) -> None:
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, 0o755))

    def file(self, name: str, size: int, reader: BinaryIO) -> None:
        info = self._info(name, tarfile.REGTYPE, 0o644)
        info.size = size
        self.tar.addfile(info, reader)

    def symlink(self, name: str, target: str) -> None:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)

    def close(self) -> None:
        self.tar.close()


class _DirSink:
    """Writes the same members as files under a directory (for oci-dir)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def directory(self, name: str) -> None:
        os.makedirs(os.path.join(self.root, name), exist_ok=True)

    def file(self, name: str, size: int, reader: BinaryIO) -> None:
        written = 0
        with open(os.path.join(self.root, name), "wb") as f:
            while chunk := reader.read(min(CHUNK, size - written)):
                written += f.write(chunk)
        if written != size:
            raise CorruptContent(f"{name}: wrote {written} bytes of {size}")

    def symlink(self, name: str, target: str) -> None:
        os.symlink(target, os.path.join(self.root, name))

    def close(self) -> None:
        return None


_Sink = _TarSink | _DirSink


def _uncompressed(service: ImageService, digest: str) -> AbstractContextManager[BinaryIO]:
    """A stored layer blob's tar stream, whatever its compression."""

    @contextmanager
    def opened() -> Iterator[BinaryIO]:
        with service.content.open(digest) as blob:
            kind = compression_of(read_head(blob))
            blob.seek(0)
            if kind in ("bzip2", "xz"):
                raise Unsupported(f"blob {digest}: {kind} layers are not supported")
            reader = decompress_stream(kind, blob)
            try:
                yield cast("BinaryIO", _Exact(reader))
            finally:
                reader.close()

    return opened()


def _tar_size(service: ImageService, digest: str, diff_id: str) -> int:
    """The size of a layer's tar, checked against its diff_id before any of it is written out."""
    if digest == diff_id:
        return service.content.size(digest)  # stored uncompressed: the content store verified it
    with _uncompressed(service, digest) as reader, decoding(f"blob {digest}"):
        hashing = HashingReader(reader)
        while hashing.read(CHUNK):
            pass
    if hashing.digest() != diff_id:
        raise CorruptContent(f"blob {digest} decompresses to {hashing.digest()}, not the diff_id {diff_id}")
    return hashing.size


def save_docker_archive(service: ImageService, items: list[SaveItem], sink: _Sink) -> None:
    """Write the images as `docker save` (24 and older) does; members sorted as its directory walk."""
    plan: dict[str, tuple[str, Any]] = {}  # member -> ("dir"|"data"|"layer"|"link", argument)
    entries: list[dict[str, Any]] = []
    tagged: list[tuple[Reference, str]] = []
    saved: dict[str, str] = {}  # diff_id -> the layer.tar holding it
    for item in items:
        config_body = service.content.read(item.image.id, MAX_CONFIG)
        config = json_object(config_body, item.image.id)
        diff_ids = image_config(config_body, item.image.id).diff_ids
        manifest = service.manifest(item.image)
        if len(manifest.layers) != len(diff_ids):
            raise CorruptContent(f"{item.image.id}: the manifest and the config disagree on the layer count")
        legacy = legacy_layers(config, diff_ids)
        for layer, desc, diff_id in zip(legacy, manifest.layers, diff_ids, strict=True):
            if layer.id in plan:
                continue
            plan[layer.id] = ("dir", None)
            plan[f"{layer.id}/VERSION"] = ("data", b"1.0")
            plan[f"{layer.id}/json"] = ("data", layer.json)
            if diff_id in saved:  # docker links a layer saved twice to the first copy
                plan[f"{layer.id}/layer.tar"] = ("link", f"../{saved[diff_id]}")
            else:
                plan[f"{layer.id}/layer.tar"] = ("layer", (desc.digest, diff_id))
                saved[diff_id] = f"{layer.id}/layer.tar"
        plan[f"{digest_hex(item.image.id)}.json"] = ("data", config_body)
        entries.append({
            "Config": f"{digest_hex(item.image.id)}.json",
            "RepoTags": [t.familiar for t in item.tags] or None,
            "Layers": [f"{layer.id}/layer.tar" for layer in legacy],
        })  # fmt: skip
        tagged.extend((t, legacy[-1].id) for t in item.tags if legacy)
    plan["manifest.json"] = ("data", docker_manifest_json(entries))
    if tagged:
        plan["repositories"] = ("data", repositories_json(tagged))
    sizes = {arg: _tar_size(service, *arg) for kind, arg in plan.values() if kind == "layer"}
    for name in sorted(plan, key=lambda n: n.split("/")):
        _write(service, sink, name, *plan[name], sizes)
    sink.close()


def _write(service: ImageService, sink: _Sink, name: str, kind: str, arg: Any, sizes: dict[Any, int]) -> None:
    import io

    if kind == "dir":
        sink.directory(name)
    elif kind == "data":
        sink.file(name, len(arg), io.BytesIO(arg))
    elif kind == "link":
        sink.symlink(name, arg)
    else:
        with _uncompressed(service, arg[0]) as reader:
            sink.file(name, sizes[arg], reader)


def save_oci_layout(service: ImageService, items: list[SaveItem], sink: _Sink) -> None:
    """Write the images as an OCI image layout; blobs stay as stored (layers compressed)."""
    import io

    blobs: dict[str, int] = {}
    descriptors: list[dict[str, Any]] = []
    for item in items:
        image = item.image
        manifest = service.manifest(image)
        for desc in (manifest.config, *manifest.layers):
            blobs[desc.digest] = service.content.size(desc.digest)
        blobs[image.manifest] = size = service.content.size(image.manifest)
        config = service.config(image)
        platform = {
            "architecture": config.architecture,
            "os": config.os,
            **({"variant": config.variant} if config.variant else {}),
        }
        base = {"mediaType": image.manifest_type, "digest": image.manifest, "size": size}
        for tag in item.tags or (None,):
            annotations = {"annotations": {CONTAINERD_NAME: str(tag), REF_NAME: tag.tag}} if tag else {}
            descriptors.append({**base, **annotations, "platform": platform})
    index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": descriptors}
    sink.directory("blobs")
    for algorithm in sorted({d.partition(":")[0] for d in blobs}):
        sink.directory(f"blobs/{algorithm}")
    for digest in sorted(blobs):
        with service.content.open(digest) as f:
            sink.file(blob_path(digest), blobs[digest], f)
    body = go_json(index).encode()
    sink.file("index.json", len(body), io.BytesIO(body))
    sink.file("oci-layout", len(OCI_LAYOUT), io.BytesIO(OCI_LAYOUT))
    sink.close()


def save(service: ImageService, items: list[SaveItem], out: BinaryIO, fmt: str = "docker-archive") -> None:
    """Stream the images to `out` as a docker-archive or an oci-archive."""
    if fmt not in ("docker-archive", "oci-archive"):
        raise InvalidArgument(f"unknown archive format {fmt!r} (docker-archive, oci-archive)")
    writer = save_docker_archive if fmt == "docker-archive" else save_oci_layout
    with FileLock(service._gc_lock, shared=True):  # no garbage collection under a save's feet
        writer(service, items, _TarSink(out))


def save_file(service: ImageService, items: list[SaveItem], path: str, fmt: str = "docker-archive") -> None:
    """Save to a file: written beside it and renamed into place, so a failure leaves no half archive."""
    import stat
    import tempfile

    if fmt == "oci-dir":
        save_dir(service, items, path)
        return
    try:
        special = not stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        special = False
    if special:  # /dev/null, a fifo: write into it, never replace it
        with open(path, "wb") as f:
            save(service, items, f, fmt)
        return
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".ketch-save-")
    try:
        with os.fdopen(fd, "wb") as f:
            save(service, items, f, fmt)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_dir(service: ImageService, items: list[SaveItem], path: str) -> None:
    """Write an OCI image layout into directory `path` (made if missing, else it must be empty)."""
    os.makedirs(path, exist_ok=True)
    if os.listdir(path):
        raise Conflict(f"{path} is not empty")
    with FileLock(service._gc_lock, shared=True):
        save_oci_layout(service, items, _DirSink(path))


# --- import --------------------------------------------------------------------------------------------


def import_rootfs(
    service: ImageService, source: BinaryIO, origin: str, changes: Iterable[str] = (), message: str = "",
    name: str = "", report: Report = quiet,
) -> ImageRecord:  # fmt: skip
    """A one-layer image from a rootfs tarball (plain, gzip, zstd, bzip2 or xz), as docker import makes.
    The layer is stored gzipped: its diff_id and blob digest are computed in the one pass."""
    import tempfile

    container_config = apply_changes(changes)
    ref = Reference.parse(name) if name else None
    comment = message or f"Imported from {origin}"
    with tempfile.TemporaryFile(dir=service.root) as spool:
        diff_id, digest, size = _compress_layer(source, spool)
        created = rfc3339()
        config_body = import_config(diff_id, oci.Platform.host(), container_config, comment, created)
        with FileLock(service._gc_lock, shared=True):
            spool.seek(0)
            copy_in(service, spool, digest, size, f"{origin}: the spooled layer changed")
            image_id = service.content.put(config_body)
            media_type, body = image_manifest(image_id, len(config_body), [("gzip", digest, size)], "oci")
            manifest = oci.Manifest.from_json(jsonio.loads(body), media_type)
            chain, total = service.unpack(image_id, manifest, report)
            record = ImageRecord(
                id=image_id, manifest=service.content.put(body), manifest_type=media_type, chain=chain,
                created=created, added=rfc3339(), size=total,
            )  # fmt: skip
            return service.images.add(record, str(ref) if ref else "")


class _HashingWriter:
    def __init__(self, out: BinaryIO) -> None:
        self.out, self.hash, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _compress_layer(source: BinaryIO, out: BinaryIO) -> tuple[str, str, int]:
    """Gzip `source` (decompressed first if it is compressed) into `out`: (diff_id, digest, size)."""
    head = read_head(source)
    plain = HashingReader(decompress_stream(compression_of(head), Prefixed(head, source)))
    blob = _HashingWriter(out)
    gz = gzip_writer(blob)  # type: ignore[arg-type]
    try:
        copy_decoded(plain, gz, "the rootfs tarball")  # type: ignore[arg-type]
    finally:
        gz.close()
    return plain.digest(), "sha256:" + blob.hash.hexdigest(), blob.size
