"""Image records: names and repo digests -> manifest and config, in one atomically rewritten file.

    <root>/images.json   {"images": [ImageRecord as JSON, ...]}
    <root>/images.lock   flock held for every read-modify-write

An image's ID is its config digest, as in Docker. Lookups accept a name (normalised like Docker),
a name@digest, or an unambiguous ID prefix.
"""

from __future__ import annotations

import os

from ketch import jsonio
from ketch.errors import Conflict, InvalidArgument, NotFound
from ketch.files import FileLock, atomic_write
from ketch.oci.reference import Reference, looks_like_id
from ketch.record import Record, replace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


class ImageRecord(Record):
    id: str  # the config digest
    manifest: str  # digest of the platform manifest
    manifest_type: str
    chain: tuple[str, ...] = ()  # chain IDs of the layers, bottom first
    names: tuple[str, ...] = ()  # full references with a tag: docker.io/library/alpine:latest
    digests: tuple[str, ...] = ()  # repo digests: docker.io/library/alpine@sha256:...
    index: str = ""  # the index (manifest list) it was pulled through, if any
    created: str = ""  # from the config
    added: str = ""  # when this store got it
    size: int = 0  # bytes of the unpacked layers
    parent: str = ""  # the image this one was committed or built on (Docker's Parent), if any

    def to_json(self) -> dict[str, Any]:
        out = self.to_dict()
        for key in ("chain", "names", "digests"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ImageRecord:
        d = dict(d)
        for key in ("chain", "names", "digests"):
            d[key] = tuple(d.get(key, ()))
        return cls(**d)

    @property
    def short_id(self) -> str:
        return self.id.partition(":")[2][:12]


def chain_ids(diff_ids: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """OCI ChainIDs: chain[0] = diff_id[0]; chain[n] = sha256(chain[n-1] + " " + diff_id[n])."""
    import hashlib  # here, not at the top: loading OpenSSL costs `ketch run` ~3 ms

    out: list[str] = []
    for diff_id in diff_ids:
        if out:
            diff_id = "sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest()
        out.append(diff_id)
    return tuple(out)


class ImageStore:
    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)
        self._file = os.path.join(root, "images.json")
        self._lock = os.path.join(root, "images.lock")

    # --- reading ---------------------------------------------------------------------------

    def _load(self) -> list[ImageRecord]:
        try:
            with open(self._file, "rb") as f:
                doc = jsonio.loads(f.read())
        except FileNotFoundError:
            return []
        return [ImageRecord.from_json(d) for d in doc.get("images", [])]

    def all(self) -> list[ImageRecord]:
        with FileLock(self._lock, shared=True):
            return self._load()

    def get(self, text: str) -> ImageRecord:
        """The image a user means by `text`: a name[:tag], name@digest, or an ID (prefix)."""
        return find(self.all(), text)

    # --- writing -----------------------------------------------------------------------------

    def _save(self, images: list[ImageRecord]) -> None:
        doc = {"images": [i.to_json() for i in images]}
        atomic_write(self._file, jsonio.dumps(doc, indent=1).encode())

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    def add(self, image: ImageRecord, name: str = "", repo_digest: str = "") -> ImageRecord:
        """Store `image` (merging with an existing record of the same ID) and point `name` at it."""
        with self.transaction() as images:
            if name:
                _untag(images, name)
            old = next((i for i in images if i.id == image.id), None)
            merged = image
            if old is not None:
                merged = replace(image, names=old.names, digests=old.digests, index=image.index or old.index)
            if name:
                merged = replace(merged, names=(*merged.names, name))
            if repo_digest and repo_digest not in merged.digests:
                merged = replace(merged, digests=(*merged.digests, repo_digest))
            images[:] = [i for i in images if i.id != image.id] + [merged]
            return merged

    def tag(self, source: str, name: str) -> ImageRecord:
        ref = Reference.parse(name)
        if ref.digest:
            raise InvalidArgument(f"refusing to create a tag with a digest reference: {name}")
        target = str(ref)
        with self.transaction() as images:
            image = find(images, source)
            _untag(images, target)
            image = next(i for i in images if i.id == image.id)
            updated = replace(image, names=(*image.names, target))
            images[:] = [updated if i.id == image.id else i for i in images]
            return updated

    def untag(self, text: str) -> tuple[ImageRecord, bool]:
        """Remove one name; (the image, whether it has no names left and should go)."""
        with self.transaction() as images:
            image = find(images, text)
            name = _full_name(text)
            if name in image.names:
                image = replace(image, names=tuple(n for n in image.names if n != name))
                images[:] = [image if i.id == image.id else i for i in images]
            return image, not image.names

    def remove(self, image_id: str) -> None:
        with self.transaction() as images:
            images[:] = [i for i in images if i.id != image_id]


class _Transaction:
    """`with store.transaction() as images:` edit the list in place; it is saved on success."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store
        self.lock = FileLock(store._lock)
        self.images: list[ImageRecord] = []

    def __enter__(self) -> list[ImageRecord]:
        self.lock.__enter__()
        self.images = self.store._load()
        return self.images

    def __exit__(self, exc_type: object, *_rest: object) -> None:
        try:
            if exc_type is None:
                self.store._save(self.images)
        finally:
            self.lock.__exit__()


def _full_name(text: str) -> str:
    try:
        return str(Reference.parse(text))
    except InvalidArgument:
        return ""


def _untag(images: list[ImageRecord], name: str) -> None:
    """Take `name` away from whichever image has it (a tag names one image)."""
    images[:] = [replace(i, names=tuple(n for n in i.names if n != name)) for i in images]


def find(images: list[ImageRecord], text: str) -> ImageRecord:
    """Docker's lookup order: an exact name or name@digest, then an unambiguous ID prefix."""
    name = _full_name(text)
    for image in images:
        if name and (name in image.names or name in image.digests):
            return image
    if "@" in text and name:
        ref = Reference.parse(text)
        for image in images:
            repos = {n.partition("@")[0] for n in image.digests} | {
                Reference.parse(n).name for n in image.names
            }
            if f"{ref.name}@{ref.digest}" in image.digests or (
                image.manifest == ref.digest and ref.name in repos
            ):
                return image
    if looks_like_id(text) or text.startswith("sha256:"):
        return _by_id(images, text)
    raise NotFound(f"No such image: {text}")


def _by_id(images: list[ImageRecord], text: str) -> ImageRecord:
    prefix = text if text.startswith("sha256:") else "sha256:" + text
    matches = [i for i in images if i.id.startswith(prefix)]
    if len(matches) > 1:
        raise Conflict(f"image ID prefix {text!r} is ambiguous")
    if not matches:
        raise NotFound(f"No such image: {text}")
    return matches[0]


def iter_names(images: list[ImageRecord]) -> Iterator[tuple[str, ImageRecord]]:
    for image in images:
        for name in image.names:
            yield name, image
