"""The image service: pull and push (registry <-> content store), unpack into snapshots, tag, remove.

This is where ketch.registry and ketch.image meet. The storage root holds:

    content/      blobs by digest (ketch.image.content)
    snapshots/    unpacked layers and container layers (ketch.image.snapshots)
    images.json   image records (ketch.image.store)
    gc.lock       shared by writers of blobs (pull, load, import), exclusive for garbage collection
"""

from __future__ import annotations

import os

from ketch import jsonio
from ketch.clock import rfc3339
from ketch.errors import Conflict, CorruptContent, InvalidArgument, KetchError, Unsupported
from ketch.files import FileLock
from ketch.image.content import ContentStore
from ketch.image.snapshots import Snapshots
from ketch.image.store import ImageRecord, ImageStore, chain_ids
from ketch.oci import image as oci
from ketch.oci.reference import Reference
from ketch.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ketch.registry.client import Registry, RegistryConfig

    Report = Callable[[str, str, int, int], None]  # (layer id, status, current, total)

DOWNLOADS = 3  # Docker's max-concurrent-downloads
UNPACKS = 2
# A layer may unpack to 1 GiB, or 100 times its compressed size if that is more: real layers
# compress 2-20x; a decompression bomb (zeros) compresses ~1000x.
EXPANSION_FLOOR, EXPANSION_RATIO = 1 << 30, 100


def _quiet(_id: str, _status: str, _current: int = 0, _total: int = 0) -> None:
    return None


class PullResult(Record):
    image: ImageRecord
    reference: Reference
    digest: str  # the repo digest that was pulled (the index's when there is one)
    new: bool  # whether anything was downloaded


class ImageService:
    def __init__(
        self, root: str, registry_config: RegistryConfig | None = None, driver: str = "auto"
    ) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.content = ContentStore(os.path.join(root, "content"))
        self.images = ImageStore(root)
        self.snapshots = Snapshots(os.path.join(root, "snapshots"), driver)
        self._registry_config = registry_config
        self._gc_lock = os.path.join(root, "gc.lock")

    def registry(self, host: str) -> Registry:
        from ketch.registry.client import Registry, RegistryConfig

        return Registry(host, self._registry_config or RegistryConfig())

    # --- reading the store ----------------------------------------------------------------------

    def get(self, text: str) -> ImageRecord:
        return self.images.get(text)

    def manifest(self, image: ImageRecord) -> oci.Manifest:
        return oci.Manifest.from_json(jsonio.loads(self.content.read(image.manifest)), image.manifest_type)

    def config_json(self, image: ImageRecord) -> dict[str, Any]:
        doc: dict[str, Any] = jsonio.loads(self.content.read(image.id))
        return doc

    def config(self, image: ImageRecord) -> oci.ImageConfig:
        return oci.ImageConfig.from_json(self.config_json(image))

    # --- pull -------------------------------------------------------------------------------------

    def pull(self, text: str, platform: oci.Platform | None = None, report: Report = _quiet) -> PullResult:
        ref = Reference.parse(text)
        with self.registry(ref.domain) as registry, FileLock(self._gc_lock, shared=True):
            return self._pull(registry, ref, platform, report)

    def _pull(
        self, registry: Registry, ref: Reference, platform: oci.Platform | None, report: Report
    ) -> PullResult:
        media_type, digest, body = registry.get_manifest(ref.path, ref.digest or ref.tag)
        pulled_digest, index_digest = digest, ""
        if media_type in oci.INDEX_TYPES:
            index = oci.Index.from_json(_json(body, ref), media_type)
            self.content.put(body, digest)
            index_digest = digest
            chosen = index.select(platform or oci.Platform.host())
            media_type, digest, body = registry.get_manifest(ref.path, chosen.digest)
        if media_type not in oci.MANIFEST_TYPES:
            raise Unsupported(f"{ref.familiar}: unsupported manifest media type {media_type!r}")
        manifest = oci.Manifest.from_json(_json(body, ref), media_type)
        config = self._fetch_config(registry, ref, manifest)
        if platform is not None and not config.platform.matches(platform):
            raise InvalidArgument(f"{ref.familiar} is {config.platform}, not the requested {platform}")
        chain = chain_ids(config.diff_ids)
        new = any(not self.snapshots.has_layer(key) for key in chain)
        size = self._layers(registry, ref, manifest, config, chain, report)
        self.content.put(body, digest)
        record = ImageRecord(
            id=manifest.config.digest, manifest=digest, manifest_type=media_type, chain=chain,
            index=index_digest, created=config.created, added=rfc3339(), size=size,
        )  # fmt: skip
        name = str(ref) if ref.tag else ""
        had_name = any(name in i.names for i in self.images.all() if i.id == record.id)
        image = self.images.add(record, name, f"{ref.name}@{pulled_digest}")
        return PullResult(image, ref, pulled_digest, new or not had_name)

    def _fetch_config(self, registry: Registry, ref: Reference, manifest: oci.Manifest) -> oci.ImageConfig:
        desc = manifest.config
        if desc.size > 16 << 20:
            raise CorruptContent(f"{ref.familiar}: the image config claims {desc.size} bytes")
        self._fetch(registry, ref, desc, _quiet)
        config = oci.ImageConfig.from_json(_json(self.content.read(desc.digest), ref))
        if len(config.diff_ids) != len(manifest.layers):
            raise CorruptContent(
                f"{ref.familiar}: the manifest has {len(manifest.layers)} layers, the config {len(config.diff_ids)}"
            )
        return config

    def _fetch(self, registry: Registry, ref: Reference, desc: oci.Descriptor, report: Report) -> None:
        short = _short(desc.digest)
        with self.content.writer(desc.digest, desc.size) as w:
            if w.done:
                return
            report(short, "Downloading", w.offset, desc.size)
            registry.fetch_blob(
                ref.path,
                desc,
                w,
                offset=w.offset,
                progress=lambda n: report(short, "Downloading", n, desc.size),
            )
            report(short, "Verifying Checksum", desc.size, desc.size)
            w.commit()
            report(short, "Download complete", desc.size, desc.size)

    def _layers(
        self, registry: Registry, ref: Reference, manifest: oci.Manifest, config: oci.ImageConfig,
        chain: tuple[str, ...], report: Report,
    ) -> int:  # fmt: skip
        """Download (up to DOWNLOADS at once) and unpack every missing layer; their total size."""
        from concurrent.futures import ThreadPoolExecutor

        todo = [i for i, key in enumerate(chain) if not self.snapshots.has_layer(key)]
        for i, desc in enumerate(manifest.layers):
            if i not in todo:
                report(_short(desc.digest), "Already exists", 0, 0)
            else:
                report(_short(desc.digest), "Pulling fs layer", 0, desc.size)
        unpacker = _Unpacker(self, manifest, config, chain, report)
        with ThreadPoolExecutor(DOWNLOADS) as downloads, ThreadPoolExecutor(UNPACKS) as unpacks:
            fetched = {
                i: downloads.submit(self._fetch, registry, ref, manifest.layers[i], report) for i in todo
            }
            unpacked = [unpacks.submit(unpacker.run, i, fetched[i]) for i in todo]
            errors = [f.exception() for f in unpacked]
        for exc in errors:
            if exc is not None:
                raise exc
        return sum(self.snapshots.layer_size(key) for key in chain)

    # --- unpack images that arrived without a registry (load, import) ----------------------------

    def unpack(
        self, image_id: str, manifest: oci.Manifest, report: Report = _quiet
    ) -> tuple[tuple[str, ...], int]:
        config = oci.ImageConfig.from_json(jsonio.loads(self.content.read(image_id)))
        if len(config.diff_ids) != len(manifest.layers):
            raise CorruptContent(f"{image_id}: the manifest and the config disagree on the layer count")
        chain = chain_ids(config.diff_ids)
        unpacker = _Unpacker(self, manifest, config, chain, report)
        for i, key in enumerate(chain):
            if not self.snapshots.has_layer(key):
                unpacker.run(i, None)
        return chain, sum(self.snapshots.layer_size(key) for key in chain)


class _Unpacker:
    """Unpacks layers as their downloads finish. Overlay layers are independent directories, so
    they unpack in parallel; each commits only after its parent (the snapshot records the chain).
    vfs layers copy their parent's tree, so they go strictly in order."""

    def __init__(
        self, service: ImageService, manifest: oci.Manifest, config: oci.ImageConfig,
        chain: tuple[str, ...], report: Report,
    ) -> None:  # fmt: skip
        import threading  # pulls only: `ketch run` imports this module too

        self.service, self.manifest, self.config = service, manifest, config
        self.chain, self.report = chain, report
        self.committed = [threading.Event() for _ in chain]
        self.failed = threading.Event()
        for i, key in enumerate(chain):
            if service.snapshots.has_layer(key):
                self.committed[i].set()

    def _wait_parent(self, i: int) -> None:
        while i > 0 and not self.committed[i - 1].wait(0.05):
            if self.failed.is_set():
                raise KetchError("an earlier layer failed")

    def run(self, i: int, download: Any) -> None:
        try:
            if download is not None:
                download.result()
            self._unpack(i)
        except BaseException:
            self.failed.set()
            raise
        self.committed[i].set()

    def _unpack(self, i: int) -> None:
        from ketch.image.compression import HashingReader, decompressed
        from ketch.image.layers import Limits, apply_layer

        snapshots, content = self.service.snapshots, self.service.content
        desc, key = self.manifest.layers[i], self.chain[i]
        parent = self.chain[i - 1] if i else None
        if snapshots.driver != "overlay":
            self._wait_parent(i)
        short = _short(desc.digest)
        self.report(short, "Extracting", 0, desc.size)
        with content.open(desc.digest) as blob, snapshots.stage_layer(key, parent) as staged:

            def progress() -> None:  # by compressed bytes consumed, as Docker's bar measures
                self.report(short, "Extracting", blob.tell(), desc.size)

            reader = HashingReader(decompressed(blob), progress)
            limits = Limits(max_bytes=max(EXPANSION_FLOOR, EXPANSION_RATIO * desc.size))
            stats = apply_layer(reader, staged.path, overlay=staged.overlay, limits=limits)  # type: ignore[arg-type]
            if reader.digest() != self.config.diff_ids[i]:
                raise CorruptContent(
                    f"layer {desc.digest}: its content is {reader.digest()}, the config says {self.config.diff_ids[i]}"
                )
            self._wait_parent(i)
            staged.commit(stats.size)
        self.report(short, "Pull complete", desc.size, desc.size)


def _short(digest: str) -> str:
    return digest.partition(":")[2][:12]


def _json(body: bytes, ref: Reference) -> dict[str, Any]:
    try:
        doc = jsonio.loads(body)
    except ValueError as exc:
        raise CorruptContent(f"{ref.familiar}: the registry sent invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CorruptContent(f"{ref.familiar}: the registry sent a JSON {type(doc).__name__}, not an object")
    return doc


# --- push, remove, garbage collection, inspect -------------------------------------------------------

PUSH_STATUS = {"exists": "Layer already exists", "mounted": "Mounted from {}", "pushed": "Pushed"}
UPLOADS = 5  # Docker's max-concurrent-uploads


class PushResult(Record):
    reference: Reference
    digest: str
    size: int


def push(service: ImageService, text: str, report: Report = _quiet) -> PushResult:
    """Upload an image's blobs (skipping ones the registry has, mounting ones it has elsewhere) and manifest."""
    ref = Reference.parse(text)
    image = service.get(text)
    manifest = service.manifest(image)
    with service.registry(ref.domain) as registry:
        return _push(service, registry, ref, image, manifest, report)


def _push(
    service: ImageService, registry: Registry, ref: Reference, image: ImageRecord, manifest: oci.Manifest,
    report: Report,
) -> PushResult:  # fmt: skip
    from concurrent.futures import ThreadPoolExecutor

    mount_from = next(
        (Reference.parse(d).path for d in image.digests if d.startswith(ref.domain + "/")), ""
    )  # cross-repository mount works within one registry

    def upload(desc: oci.Descriptor) -> None:
        report(_short(desc.digest), "Preparing", 0, desc.size)
        status = registry.push_blob(ref.path, desc, lambda: service.content.open(desc.digest), mount_from)
        report(_short(desc.digest), PUSH_STATUS[status].format(mount_from), desc.size, desc.size)

    with ThreadPoolExecutor(UPLOADS) as pool:
        list(pool.map(upload, manifest.layers))
    upload_config = manifest.config
    registry.push_blob(
        ref.path, upload_config, lambda: service.content.open(upload_config.digest), mount_from
    )
    body = service.content.read(image.manifest)
    digest = registry.put_manifest(ref.path, ref.tag or ref.digest or "latest", image.manifest_type, body)
    service.images.add(image, repo_digest=f"{ref.name}@{digest}")
    return PushResult(ref, digest, len(body))


def containers_using(service: ImageService, image: ImageRecord) -> list[str]:
    """Container snapshots whose parent is this image's top layer."""
    if not image.chain:
        return []
    return [
        name for name in service.snapshots.snapshots() if service.snapshots.parent(name) == image.chain[-1]
    ]


def remove(service: ImageService, text: str, force: bool = False) -> list[tuple[str, str]]:
    """Docker's rmi: untag a name; delete the image when no name is left. [("Untagged"|"Deleted", what)]."""
    image = service.get(text)
    by_name = text not in image.id and not text.startswith("sha256:") and len(image.names) > 0
    if not by_name and len(image.names) > 1 and not force:
        raise Conflict(
            f"unable to delete {image.short_id} (must be forced) - image is referenced in multiple repositories"
        )
    users = containers_using(service, image)
    last_name = len(image.names) == 1
    if users and not force and (not by_name or last_name):
        what = f'repository reference "{text}"' if by_name else f"image {image.short_id}"
        raise Conflict(
            f"unable to remove {what} (must force) - container {users[0][:12]} is using its referenced image"
        )
    events: list[tuple[str, str]] = []
    if by_name:
        image, last = service.images.untag(text)
        events.append(("Untagged", Reference.parse(text).familiar))
        if not last:
            return events
    for name in image.names:
        events.append(("Untagged", Reference.parse(name).familiar))
    if users:  # forced: a container still stands on it, so it stays, untagged (as Docker)
        for name in image.names:
            service.images.untag(name)
        return events
    for digest in image.digests:
        events.append(("Untagged", Reference.parse(digest).familiar))
    service.images.remove(image.id)
    events.append(("Deleted", image.id))
    collect_garbage(service)
    return events


def collect_garbage(service: ImageService) -> int:
    """Remove blobs and layers no image refers to; the bytes of blobs freed."""
    with FileLock(service._gc_lock):
        images = service.images.all()
        keep_blobs: set[str] = set()
        keep_layers: set[str] = set()
        for image in images:
            keep_blobs.update(_blobs_of(service, image))
            keep_layers.update(image.chain)
        freed = 0
        for digest in list(service.content.digests()):
            if digest not in keep_blobs:
                freed += service.content.size(digest)
                service.content.delete(digest)
        _remove_layers(service, keep_layers)
        return freed


def _blobs_of(service: ImageService, image: ImageRecord) -> set[str]:
    blobs = {image.manifest, image.id}
    if image.index:
        blobs.add(image.index)
    try:
        manifest = service.manifest(image)
    except KetchError:
        return blobs
    blobs.update(layer.digest for layer in manifest.layers)
    return blobs


def _remove_layers(service: ImageService, keep: set[str]) -> None:
    """Children before parents: a layer with a child (or a container on it) cannot go yet."""
    pending = [key for key in service.snapshots.layers() if key not in keep]
    while pending:
        left = []
        for key in pending:
            try:
                service.snapshots.remove_layer(key)
            except Conflict:
                left.append(key)
        if len(left) == len(pending):
            return  # the rest are parents of kept layers or of containers
        pending = left


def prune(service: ImageService, everything: bool = False) -> tuple[list[tuple[str, str]], int]:
    """Remove dangling images (with `everything`, all images no container uses)."""
    events: list[tuple[str, str]] = []
    images = service.images.all()
    parents = {i.parent for i in images}
    for image in images:
        if (not everything and (image.names or image.id in parents)) or containers_using(service, image):
            continue  # without -a: only dangling images, untagged and nobody's parent (Docker's)
        for name in (*image.names, *image.digests):
            events.append(("untagged", Reference.parse(name).familiar))
        service.images.remove(image.id)
        events.append(("deleted", image.id))
    freed = collect_garbage(service) if events else 0
    return events, freed


def inspect(service: ImageService, image: ImageRecord) -> dict[str, Any]:
    """Docker's image inspect JSON."""
    config = service.config_json(image)
    snapshots = service.snapshots
    lowers = [snapshots.layer_dir(key) for key in reversed(image.chain) if snapshots.has_layer(key)]
    return {
        "Id": image.id,
        "RepoTags": [Reference.parse(n).familiar for n in image.names],
        "RepoDigests": [Reference.parse(d).familiar for d in image.digests],
        "Parent": image.parent,
        "Comment": (config.get("history") or [{}])[-1].get("comment", ""),
        "Created": config.get("created", ""),
        "DockerVersion": config.get("docker_version", ""),
        "Author": config.get("author", ""),
        "Config": config.get("config") or {},
        "Architecture": config.get("architecture", ""),
        **({"Variant": config["variant"]} if config.get("variant") else {}),
        "Os": config.get("os", ""),
        "Size": image.size,
        "GraphDriver": {
            "Name": "overlay2" if snapshots.driver == "overlay" else "vfs",
            "Data": {"LowerDir": ":".join(lowers[1:]), "UpperDir": lowers[0] if lowers else ""},
        },
        "RootFS": {"Type": "layers", "Layers": list((config.get("rootfs") or {}).get("diff_ids", []))},
        "Metadata": {"LastTagTime": image.added},
    }


def history(service: ImageService, image: ImageRecord) -> list[dict[str, Any]]:
    """Newest first, as `docker history`: each step with the size of the layer it made."""
    config = service.config(image)
    sizes = [
        service.snapshots.layer_size(key) if service.snapshots.has_layer(key) else 0 for key in image.chain
    ]
    steps = list(config.history) or [oci.History(created=config.created) for _ in image.chain]
    rows = []
    layer = 0
    for step in steps:
        size = 0
        if not step.empty_layer and layer < len(sizes):
            size, layer = sizes[layer], layer + 1
        rows.append(
            {"created": step.created, "created_by": step.created_by, "comment": step.comment, "size": size}
        )
    rows.reverse()
    known = {i.id: i for i in service.images.all()}
    current: ImageRecord | None = image
    for row in rows:  # each step's image while the chain of parents (a local build's) is there
        row["id"] = current.id if current is not None else "<missing>"
        current = known.get(current.parent) if current is not None and current.parent else None
    return rows
