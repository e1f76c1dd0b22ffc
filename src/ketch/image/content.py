"""The content store: blobs by digest, ingested atomically and verified while they stream in.

    <root>/blobs/sha256/<hex>      committed blobs, read-only (0444), trusted only by digest
    <root>/ingest/<hex>.data       a partial download, kept across crashes for Range resumption
    <root>/ingest/<hex>.lock       flock held by the one writer of that digest

A blob becomes visible only by the final rename of a fully verified file, so a crash at any
point leaves either no blob or a whole one; partial data never has a blob's name.
"""

from __future__ import annotations

import os

from ketch.errors import CorruptContent, NotFound
from ketch.files import FileLock, fsync_dir
from ketch.oci import digest as _digest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import BinaryIO

_CHUNK = 1 << 20


class ContentStore:
    def __init__(self, root: str) -> None:
        self.root = root
        for sub in ("blobs/sha256", "blobs/sha512", "ingest"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)

    def path(self, digest: str) -> str:
        algorithm, hexdigest = _digest.parse(digest)
        return os.path.join(self.root, "blobs", algorithm, hexdigest)

    def has(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the content store") from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the content store") from None

    def read(self, digest: str, max_size: int = 16 << 20) -> bytes:
        """A small document (manifest, config), verified against its digest on every read."""
        with self.open(digest) as f:
            data = f.read(max_size + 1)
        if len(data) > max_size:
            raise CorruptContent(f"blob {digest} is larger than {max_size} bytes")
        _digest.check(data, digest)  # CPython's own SHA-2: no OpenSSL to load for a manifest
        return data

    def put(self, data: bytes, digest: str = "") -> str:
        """Store an in-memory document; returns its digest (verified if one was given)."""
        digest = digest or _digest.of(data)
        with self.writer(digest, len(data)) as w:
            if not w.done:
                w.write(data)
                w.commit()
        return digest

    def writer(self, digest: str, size: int | None) -> Writer:
        return Writer(self, digest, size)

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass

    def digests(self) -> Iterator[str]:
        blobs = os.path.join(self.root, "blobs")
        for algorithm in sorted(os.listdir(blobs)):
            for name in sorted(os.listdir(os.path.join(blobs, algorithm))):
                if not name.startswith("."):
                    yield f"{algorithm}:{name}"

    def verify(self, digest: str) -> str | None:
        """None when the blob's bytes hash to its name, else what is wrong."""
        check = _digest.Verifier(digest)
        try:
            with self.open(digest) as f:
                while chunk := f.read(_CHUNK):
                    check.update(chunk)
            check.verify()
        except CorruptContent as exc:
            return str(exc)
        return None


class Writer:
    """Ingests one blob: `with store.writer(d, n) as w: if not w.done: ...w.write()...; w.commit()`.

    Entering takes the digest's lock, so two pulls of one blob never write it twice: the second
    waits, then finds `done`. A partial file left by an interrupted pull is resumed: its bytes
    are hashed again and `offset` tells the caller where to continue (HTTP Range).
    """

    def __init__(self, store: ContentStore, digest: str, size: int | None) -> None:
        algorithm, hexdigest = _digest.parse(digest)
        self.store, self.digest, self.size = store, digest, size
        base = os.path.join(store.root, "ingest", f"{algorithm}-{hexdigest}")
        self._lock = FileLock(base + ".lock")
        self.partial = base + ".data"
        self.verifier = _digest.Verifier(digest, size)
        self.done = False
        self.offset = 0
        self._fd = -1

    def __enter__(self) -> Writer:
        self._lock.__enter__()
        try:
            self.done = self.store.has(self.digest)
            if not self.done:
                self._open_partial()
        except BaseException:
            self._lock.__exit__()
            raise
        return self

    def _open_partial(self) -> None:
        self._fd = os.open(self.partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        have = os.fstat(self._fd).st_size
        if self.size is not None and have > self.size:
            os.ftruncate(self._fd, 0)
            have = 0
        while self.offset < have:  # re-hash what an earlier attempt wrote
            chunk = os.pread(self._fd, min(_CHUNK, have - self.offset), self.offset)
            if not chunk:
                break
            self.verifier.update(chunk)
            self.offset += len(chunk)
        os.lseek(self._fd, self.offset, os.SEEK_SET)

    def write(self, data: bytes | memoryview) -> int:
        self.verifier.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.offset += len(data)
        return len(data)

    def commit(self) -> None:
        """Verify digest and size, then make the blob visible; a mismatch discards the data."""
        try:
            self.verifier.verify()
        except CorruptContent:
            self.discard()
            raise
        os.fsync(self._fd)
        os.fchmod(self._fd, 0o444)
        final = self.store.path(self.digest)
        os.rename(self.partial, final)
        fsync_dir(os.path.dirname(final))
        self.done = True

    def discard(self) -> None:
        try:
            os.unlink(self.partial)
        except FileNotFoundError:
            pass

    def __exit__(self, *_exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.done:
            try:
                os.unlink(self._lock.path)  # nobody needs it any more; a waiter re-checks has()
            except FileNotFoundError:
                pass
        self._lock.__exit__()
