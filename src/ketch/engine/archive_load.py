"""Image archive loading: reading docker-archive and OCI layout tars, and `load` into the image store.

Loading reads members by name from a seekable tar (a pipe is spooled to an unnamed temporary file
under the storage root first); nothing is ever extracted, and every blob enters the content store
through its verifying writer. Layers of a docker-archive are stored as they come (uncompressed tars
are usual): their digest is then their diff_id, so checking one checks the other in a single pass.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from contextlib import contextmanager
from typing import cast

from ketch import jsonio
from ketch.clock import rfc3339
from ketch.engine.archive_formats import (
    CHUNK,
    CONTAINERD_NAME,
    MAX_CONFIG,
    REF_NAME,
    blob_path,
    compression_of,
    image_config,
    image_manifest,
    json_object,
    member_name,
    quiet,
)
from ketch.errors import CorruptContent, InvalidArgument, KetchError, Unsupported
from ketch.files import FileLock
from ketch.image.compression import HashingReader
from ketch.image.store import ImageRecord
from ketch.oci import digest as _digest
from ketch.oci import image as oci
from ketch.oci.reference import Reference
from ketch.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any, BinaryIO

    from ketch.engine.images import ImageService, Report

MAX_DOCUMENT = 4 << 20  # manifest.json, index.json, manifests (registries refuse more, too)
MAX_MEMBERS = 100_000  # an image archive holds a few members per layer


# --- reading archives -------------------------------------------------------------------------------


class TarArchive:
    """A tar archive read by member name only (it is never extracted); symlinks resolve inside it."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self.members: dict[str, tarfile.TarInfo] = {}
        start = fileobj.tell()
        end = fileobj.seek(0, os.SEEK_END)
        fileobj.seek(start)
        try:
            self.tar = tarfile.open(fileobj=fileobj, mode="r:")  # noqa: SIM115 (lives as long as self)
            for count, member in enumerate(self.tar, 1):
                if count > MAX_MEMBERS:
                    raise CorruptContent(f"the archive has more than {MAX_MEMBERS} members")
                name = member_name(member.name)
                if member.isdir():
                    continue
                if name in self.members:
                    raise CorruptContent(f"the archive has {name!r} twice")
                if member.isreg() and not member.issparse() and member.offset_data + member.size > end:
                    raise CorruptContent(f"the archive is truncated in {name}")
                self.members[name] = member
        except (tarfile.TarError, EOFError) as exc:
            raise CorruptContent(f"not a valid tar archive: {exc}") from None

    def has(self, name: str) -> bool:
        return member_name(name) in self.members

    def member(self, name: str) -> tarfile.TarInfo:
        """The regular file `name` names, through symlinks and hard links (which stay inside the archive)."""
        name = member_name(name)
        for _ in range(16):
            found = self.members.get(name)
            if found is None:
                raise CorruptContent(f"the archive has no {name}")
            if found.isreg():
                return found
            if found.issym():
                if found.linkname.startswith("/"):
                    raise CorruptContent(f"{name} links outside the archive")
                name = posixpath.normpath(posixpath.join(posixpath.dirname(name), found.linkname))
                if name == ".." or name.startswith("../"):
                    raise CorruptContent(f"{found.name} links outside the archive")
            elif found.islnk():
                name = member_name(found.linkname)
            else:
                raise CorruptContent(f"{name} in the archive is not a regular file")
        raise CorruptContent(f"{name}: too many levels of links in the archive")

    def open(self, name: str) -> BinaryIO:
        reader = self.tar.extractfile(self.member(name))
        assert reader is not None  # a regular member always has a reader
        return reader  # type: ignore[return-value]

    def read(self, name: str, limit: int) -> bytes:
        member = self.member(name)
        if member.size > limit:
            raise CorruptContent(f"{name} in the archive is {member.size} bytes; the limit is {limit}")
        with self.open(name) as f:
            return f.read()


class DockerEntry(Record):
    config: str  # member names
    layers: tuple[str, ...]
    tags: tuple[Reference, ...]


def parse_docker_manifest(data: bytes) -> list[DockerEntry]:
    """The images of a docker-archive's manifest.json, validated."""
    try:
        doc = jsonio.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptContent(f"manifest.json is not valid JSON: {exc}") from None
    if not isinstance(doc, list) or not doc:
        raise CorruptContent("manifest.json does not list any image")
    return [_docker_entry(item, i) for i, item in enumerate(doc)]


def _docker_entry(item: Any, i: int) -> DockerEntry:
    where = f"manifest.json[{i}]"
    if not isinstance(item, dict) or not isinstance(item.get("Config"), str):
        raise CorruptContent(f"{where}: expected an object with a Config")
    layers, tags = item.get("Layers") or [], item.get("RepoTags") or []
    if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
        raise CorruptContent(f"{where}.Layers: expected an array of strings")
    if not isinstance(tags, list) or not all(isinstance(x, str) for x in tags):
        raise CorruptContent(f"{where}.RepoTags: expected an array of strings")
    refs = []
    for tag in tags:
        ref = Reference.parse(tag, default_tag="")
        if not ref.tag or ref.digest:
            raise InvalidArgument(f"{where}: invalid tag {tag!r}")
        refs.append(ref)
    return DockerEntry(member_name(item["Config"]), tuple(member_name(x) for x in layers), tuple(refs))


def oci_names(annotations: dict[str, str]) -> list[Reference]:
    """The name an OCI layout gives a manifest: containerd's full name, or a ref.name that is a reference."""
    text = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME, "")
    if not text or (text == annotations.get(REF_NAME) and "/" not in text and ":" not in text):
        return []  # a bare tag ("latest") names no repository
    try:
        ref = Reference.parse(text)
    except InvalidArgument:
        return []
    return [ref] if ref.tag else []


class Prefixed:
    """A reader that gives back `head` (already read from `inner`) before the rest of `inner`."""

    def __init__(self, head: bytes, inner: BinaryIO) -> None:
        self.head, self.inner = head, inner

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.inner.read(n)
        if n < 0:
            data, self.head = self.head + self.inner.read(), b""
            return data
        data, self.head = self.head[:n], self.head[n:]
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def read_head(stream: BinaryIO, n: int = 6) -> bytes:
    head = b""
    while len(head) < n:
        chunk = stream.read(n - len(head))
        if not chunk:
            break
        head += chunk
    return head


def decompress_stream(kind: str, stream: Any) -> BinaryIO:
    """A reader of the decompressed bytes of a forward-only `stream` compressed as `kind`."""
    if kind == "gzip":
        try:
            from isal import igzip

            return cast("BinaryIO", igzip.IGzipFile(fileobj=stream, mode="rb"))  # type: ignore[no-untyped-call]
        except ImportError:
            import gzip

            return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    if kind == "zstd":
        try:
            import zstandard
        except ImportError:
            raise Unsupported("zstd input needs the zstandard package (pip install zstandard)") from None
        reader = zstandard.ZstdDecompressor().stream_reader(
            stream, read_size=CHUNK, read_across_frames=True, closefd=False
        )
        return cast("BinaryIO", reader)
    if kind == "bzip2":
        import bz2

        return bz2.BZ2File(stream)  # type: ignore[return-value]
    if kind == "xz":
        import lzma

        return lzma.LZMAFile(stream)  # type: ignore[return-value]
    return stream  # type: ignore[no-any-return]


def _seekable(stream: BinaryIO) -> bool:
    try:
        return stream.seekable() and stream.seek(0, os.SEEK_CUR) >= 0
    except OSError:
        return False


class _Spooled:
    """`with _Spooled(dir, stream) as f`: `stream` as a seekable, uncompressed file.

    A plain seekable file is used as it is; a pipe or a compressed archive is copied (decompressed)
    into an unnamed temporary file in `directory`, which vanishes when closed, even after a crash."""

    def __init__(self, directory: str, stream: BinaryIO) -> None:
        self.directory, self.stream = directory, stream
        self.spool: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        import tempfile

        stream = self.stream
        seekable = _seekable(stream)
        start = stream.tell() if seekable else 0
        head = read_head(stream)
        kind = compression_of(head)
        if seekable and not kind:
            stream.seek(start)
            return stream
        self.spool = tempfile.TemporaryFile(dir=self.directory)
        try:
            copy_decoded(decompress_stream(kind, Prefixed(head, stream)), self.spool, f"the {kind} archive")
        except BaseException:
            self.spool.close()
            raise
        self.spool.seek(0)
        return self.spool

    def __exit__(self, *_exc: object) -> None:
        if self.spool is not None:
            self.spool.close()


def copy_decoded(reader: BinaryIO, out: BinaryIO, what: str) -> None:
    while True:
        with decoding(what):
            chunk = reader.read(CHUNK)
        if not chunk:
            return
        out.write(chunk)


@contextmanager
def decoding(what: str) -> Iterator[None]:
    """Decompression errors (zlib's, zstd's, bz2's and lzma's each their own type) as CorruptContent."""
    try:
        yield
    except KetchError:
        raise
    except Exception as exc:
        raise CorruptContent(f"{what} does not decompress: {exc}") from None


# --- load ---------------------------------------------------------------------------------------------


class Loaded(Record):
    id: str
    names: tuple[str, ...]  # familiar: alpine:latest


def load(
    service: ImageService, source: BinaryIO, report: Report = quiet, platform: oci.Platform | None = None
) -> list[Loaded]:
    """Load every image of a docker-archive or OCI layout archive from `source`."""
    with _Spooled(service.root, source) as f:
        archive = TarArchive(f)
        with FileLock(service._gc_lock, shared=True):
            # docker 25+ writes an index.json too (its manifests may even lack the layers): the
            # manifest.json is what every docker-archive has, so it wins
            if archive.has("manifest.json"):
                return [
                    _load_docker(service, archive, e, report)
                    for e in parse_docker_manifest(archive.read("manifest.json", MAX_DOCUMENT))
                ]
            if archive.has("index.json"):
                return _load_layout(service, archive, platform or oci.Platform.host(), report)
    raise CorruptContent("not an image archive: it has neither manifest.json nor index.json")


def _load_docker(service: ImageService, archive: TarArchive, entry: DockerEntry, report: Report) -> Loaded:
    config_body = archive.read(entry.config, MAX_CONFIG)
    image_id = _digest.of(config_body)
    config = image_config(config_body, entry.config)
    if len(config.diff_ids) != len(entry.layers):
        raise CorruptContent(
            f"{entry.config} has {len(config.diff_ids)} diff_ids for {len(entry.layers)} layers"
        )
    layers = [
        _ingest_layer(service, archive, path, d)
        for path, d in zip(entry.layers, config.diff_ids, strict=True)
    ]
    service.content.put(config_body, image_id)
    media_type, body = image_manifest(image_id, len(config_body), layers)
    manifest = oci.Manifest.from_json(jsonio.loads(body), media_type)
    record = ImageRecord(
        id=image_id, manifest=service.content.put(body), manifest_type=media_type, created=config.created
    )
    return _register(service, record, manifest, entry.tags, report)


def _ingest_layer(
    service: ImageService, archive: TarArchive, path: str, diff_id: str
) -> tuple[str, str, int]:
    """Store one layer file as it is; (compression, digest, size). An uncompressed layer's digest is
    its diff_id, so the content store's own check is the diff_id check."""
    size = archive.member(path).size
    with archive.open(path) as f:
        kind = compression_of(f.read(6))
        f.seek(0)
        if kind in ("bzip2", "xz"):
            raise Unsupported(f"{path}: {kind} layers are not supported; recompress them with gzip or zstd")
        digest = diff_id
        if kind:
            digest = _check_compressed(f, kind, diff_id, path)
            f.seek(0)
        copy_in(service, f, digest, size, f"{path} does not match the image config's diff_id {diff_id}")
    return kind, digest, size


def _check_compressed(f: BinaryIO, kind: str, diff_id: str, path: str) -> str:
    """The digest of a compressed layer file, after checking that it decompresses to `diff_id`."""
    raw = HashingReader(f)
    plain = HashingReader(decompress_stream(kind, raw))
    try:
        with decoding(path):
            while plain.read(CHUNK):
                pass
    finally:
        plain.inner.close()
    while raw.read(CHUNK):  # trailing bytes are part of the blob
        pass
    if plain.digest() != diff_id:
        raise CorruptContent(
            f"{path} decompresses to {plain.digest()}; the image config's diff_id is {diff_id}"
        )
    return raw.digest()


def copy_in(service: ImageService, f: BinaryIO, digest: str, size: int, mismatch: str) -> None:
    """Copy `f` (seekable, at its start) into the content store as blob `digest`, verified."""
    with service.content.writer(digest, size) as w:
        if w.done:
            return
        f.seek(w.offset)  # a partial blob from an interrupted attempt is resumed
        try:
            while chunk := f.read(CHUNK):
                w.write(chunk)
            w.commit()
        except CorruptContent:
            w.discard()
            raise CorruptContent(mismatch) from None


def _register(
    service: ImageService,
    record: ImageRecord,
    manifest: oci.Manifest,
    tags: Iterable[Reference],
    report: Report,
) -> Loaded:
    """Unpack the image, then record it; an image already in the store keeps its manifest."""
    from ketch.record import replace

    chain, size = service.unpack(record.id, manifest, report)
    record = replace(record, chain=chain, size=size, added=rfc3339())
    existing = next((i for i in service.images.all() if i.id == record.id and i.chain == chain), None)
    if existing is not None:
        record = existing
    names = tuple(tags)
    for ref in names:
        service.images.add(record, str(ref))
    if not names:
        service.images.add(record)
    return Loaded(record.id, tuple(ref.familiar for ref in names))


def _load_layout(
    service: ImageService, archive: TarArchive, platform: oci.Platform, report: Report
) -> list[Loaded]:
    try:
        index = oci.Index.from_json(
            json_object(archive.read("index.json", MAX_DOCUMENT), "index.json"), oci.OCI_INDEX
        )
    except InvalidArgument as exc:
        raise CorruptContent(f"index.json: {exc}") from None
    chosen: dict[str, tuple[oci.Descriptor, list[tuple[str, bytes]], list[Reference]]] = {}
    for desc in index.manifests:
        manifest, via = _pick(archive, desc, platform, 0)
        _, _, names = chosen.setdefault(manifest.digest, (manifest, via, []))
        names.extend(n for n in oci_names(desc.annotations) if n not in names)
    if not chosen:
        raise CorruptContent("index.json lists no image")
    return [_load_oci(service, archive, m, via, names, report) for m, via, names in chosen.values()]


def _blob(archive: TarArchive, desc: oci.Descriptor, limit: int) -> bytes:
    """A small blob of the layout, verified against its descriptor."""
    if desc.size > limit:
        raise CorruptContent(f"{desc.digest} claims {desc.size} bytes; the limit is {limit}")
    data = archive.read(blob_path(desc.digest), limit)
    check = _digest.Verifier(desc.digest, desc.size)
    check.update(data)
    check.verify()
    return data


def _pick(
    archive: TarArchive, desc: oci.Descriptor, platform: oci.Platform, depth: int
) -> tuple[oci.Descriptor, list[tuple[str, bytes]]]:
    """The image manifest `desc` leads to (through indexes, for `platform`) and the indexes passed."""
    media_type = desc.media_type
    body = b""
    if media_type not in oci.MANIFEST_TYPES:
        body = _blob(archive, desc, MAX_DOCUMENT)
        doc = json_object(body, desc.digest)
        media_type = media_type or str(
            doc.get("mediaType") or (oci.OCI_INDEX if "manifests" in doc else oci.OCI_MANIFEST)
        )
    if media_type in oci.MANIFEST_TYPES:
        return oci.Descriptor(media_type, desc.digest, desc.size, desc.annotations), []
    if media_type not in oci.INDEX_TYPES:
        raise Unsupported(f"{desc.digest}: unsupported media type {media_type!r}")
    if depth >= 4:
        raise CorruptContent("the archive's indexes nest too deep")
    try:
        index = oci.Index.from_json(json_object(body, desc.digest), media_type)
    except InvalidArgument as exc:
        raise CorruptContent(f"{desc.digest}: {exc}") from None
    present = tuple(
        m for m in index.manifests if archive.has(blob_path(m.digest))
    )  # docker saves one platform
    nested = [m for m in present if m.media_type in oci.INDEX_TYPES]
    try:
        manifest = oci.Index(index.media_type, present).select(platform)
    except InvalidArgument:
        if not nested:
            raise InvalidArgument(f"{desc.digest}: the archive has no image for {platform}") from None
        manifest = nested[0]
    found, via = _pick(archive, manifest, platform, depth + 1)
    return found, [(desc.digest, body), *via]


def _load_oci(service: ImageService, archive: TarArchive, desc: oci.Descriptor, via: list[tuple[str, bytes]],
              names: list[Reference], report: Report) -> Loaded:  # fmt: skip
    body = _blob(archive, desc, MAX_DOCUMENT)
    try:
        manifest = oci.Manifest.from_json(json_object(body, desc.digest), desc.media_type)
    except InvalidArgument as exc:
        raise CorruptContent(f"{desc.digest}: {exc}") from None
    config_body = _blob(archive, manifest.config, MAX_CONFIG)
    config = image_config(config_body, manifest.config.digest)
    if len(config.diff_ids) != len(manifest.layers):
        raise CorruptContent(
            f"{desc.digest}: the manifest has {len(manifest.layers)} layers, the config {len(config.diff_ids)}"
        )
    for layer in manifest.layers:
        path = blob_path(layer.digest)
        if not service.content.has(layer.digest):
            if archive.member(path).size != layer.size:
                raise CorruptContent(f"{path} is not the {layer.size} bytes its descriptor says")
            with archive.open(path) as f:
                copy_in(service, f, layer.digest, layer.size, f"{path} does not match its digest")
    service.content.put(config_body, manifest.config.digest)
    service.content.put(body, desc.digest)
    for digest, index_body in via:
        service.content.put(index_body, digest)
    record = ImageRecord(
        id=manifest.config.digest, manifest=desc.digest, manifest_type=manifest.media_type,
        index=via[-1][0] if via else "", created=config.created,
    )  # fmt: skip
    return _register(service, record, manifest, names, report)
