"""`system check`: verify every blob against its digest and every image's chain; optionally repair."""

from __future__ import annotations

import os

from ketch import jsonio
from ketch.errors import KetchError
from ketch.files import FileLock
from ketch.oci import image as oci
from ketch.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ketch.engine.images import ImageService
    from ketch.image.store import ImageRecord


class Problem(Record):
    kind: str  # "blob" or "image"
    what: str  # digest, image id or file
    why: str


class Report(Record):
    blobs: int
    images: int
    problems: tuple[Problem, ...]
    partials: tuple[str, ...] = ()  # interrupted downloads: not damage, kept so a re-pull resumes
    repaired: bool = False


def check(service: ImageService, repair: bool = False) -> Report:
    """Everything found broken; with `repair`, broken blobs, images and leftovers are removed."""
    from ketch.engine.images import collect_garbage

    with FileLock(service._gc_lock):  # no pull may ingest while we judge the store
        problems = _blobs(service)
        partials = _partials(service)
        bad_blobs = {p.what for p in problems if p.kind == "blob"}
        images = service.images.all()
        for image in images:
            problems += _image(service, image, bad_blobs)
        if repair:
            _repair(service, problems, partials)
    if repair:
        collect_garbage(service)
    blob_count = sum(1 for _ in service.content.digests())
    return Report(blob_count, len(images), tuple(problems), tuple(partials), repair)


def _blobs(service: ImageService) -> list[Problem]:
    out = []
    for digest in service.content.digests():
        why = service.content.verify(digest)
        if why:
            out.append(Problem("blob", digest, why))
    return out


def _partials(service: ImageService) -> list[str]:
    ingest = os.path.join(service.content.root, "ingest")
    return [os.path.join(ingest, n) for n in sorted(os.listdir(ingest)) if n.endswith(".data")]


def _image(service: ImageService, image: ImageRecord, bad: set[str]) -> list[Problem]:
    def problem(why: str) -> list[Problem]:
        return [Problem("image", image.id, why)]

    needed = [image.manifest, image.id]
    for digest in needed:
        if digest in bad or not service.content.has(digest):
            return problem(f"blob {digest} is missing or corrupt")
    try:
        manifest = oci.Manifest.from_json(
            jsonio.loads(service.content.read(image.manifest)), image.manifest_type
        )
        config = oci.ImageConfig.from_json(jsonio.loads(service.content.read(image.id)))
    except (KetchError, ValueError) as exc:
        return problem(f"unreadable manifest or config: {exc}")
    if manifest.config.digest != image.id:
        return problem(f"the manifest names config {manifest.config.digest}")
    for layer in manifest.layers:
        if layer.digest in bad or not service.content.has(layer.digest):
            return problem(f"layer blob {layer.digest} is missing or corrupt")
    from ketch.image.store import chain_ids

    if chain_ids(config.diff_ids) != image.chain:
        return problem("its layer chain does not match the config's diff_ids")
    missing = [key for key in image.chain if not service.snapshots.has_layer(key)]
    if missing:
        return problem(f"unpacked layer {missing[0]} is missing")
    return []


def _repair(service: ImageService, problems: list[Problem], partials: list[str]) -> None:
    for p in problems:
        if p.kind == "blob":
            service.content.delete(p.what)
        else:
            service.images.remove(p.what)
    for path in partials:
        os.unlink(path)
