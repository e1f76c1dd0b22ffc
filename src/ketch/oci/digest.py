"""Content digests ("sha256:<hex>"): parsing and a streaming verifier (OCI image spec, descriptor.md).

`hashlib` is imported where it is used: it loads OpenSSL (~4 ms), which only pays off on big
streams (several times faster per byte than CPython's own SHA-2). Small documents checked by
`check()` use CPython's builtin `_sha256`/`_sha512` modules, which cost nothing to import.
"""

from __future__ import annotations

from ketch.errors import CorruptContent, InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    class _Hash(Protocol):
        def hexdigest(self) -> str: ...


_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_HEX = frozenset("0123456789abcdef")


def parse(digest: str) -> tuple[str, str]:
    """("sha256", hex) for a valid digest; InvalidArgument otherwise."""
    algorithm, sep, encoded = digest.partition(":")
    if not sep or algorithm not in _HEX_LENGTH:
        raise InvalidArgument(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
    if len(encoded) != _HEX_LENGTH[algorithm] or not _HEX.issuperset(encoded):
        raise InvalidArgument(f"invalid digest {digest!r}: bad {algorithm} hex")
    return algorithm, encoded


def is_valid(digest: str) -> bool:
    try:
        parse(digest)
    except InvalidArgument:
        return False
    return True


def of(data: bytes, algorithm: str = "sha256") -> str:
    import hashlib

    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def small_hex(data: bytes, algorithm: str = "sha256") -> str:
    """The hex digest of a small document, without loading OpenSSL."""
    return _small_hash(algorithm)(data).hexdigest()


def check(data: bytes, expected: str) -> None:
    """Verify a small in-memory document against `expected`, as a Verifier fed `data` at once
    would (InvalidArgument for a malformed digest, CorruptContent for a mismatch), without
    loading OpenSSL."""
    algorithm, _ = parse(expected)
    actual = f"{algorithm}:{small_hex(data, algorithm)}"
    if actual != expected:
        raise CorruptContent(f"digest mismatch: expected {expected}, got {actual}")


def _small_hash(algorithm: str) -> Callable[[bytes], _Hash]:
    """CPython's builtin implementation of `algorithm` (in `_sha2` since 3.12), else hashlib's."""
    for name in (f"_{algorithm}", "_sha2"):
        try:
            builtin: Callable[[bytes], _Hash] = getattr(__import__(name), algorithm)
        except ImportError:
            continue
        return builtin
    import hashlib

    openssl: Callable[[bytes], _Hash] = getattr(hashlib, algorithm)
    return openssl


class Verifier:
    """Hashes bytes as they stream past and checks them against an expected digest and size.

    `expected_size` of None means "unknown" (only the digest is checked). Feeding more bytes
    than expected fails at once, so a lying or endless stream is cut off early.
    """

    def __init__(self, expected: str, expected_size: int | None = None) -> None:
        import hashlib

        self.algorithm, self.hex = parse(expected)
        self.expected, self.expected_size = expected, expected_size
        self._hash = hashlib.new(self.algorithm)
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self.expected_size is not None and self.size > self.expected_size:
            raise CorruptContent(f"{self.expected}: more than the expected {self.expected_size} bytes")
        self._hash.update(data)

    def digest(self) -> str:
        return f"{self.algorithm}:{self._hash.hexdigest()}"

    def verify(self) -> None:
        """Raise CorruptContent unless everything fed so far is exactly the expected content."""
        if self.expected_size is not None and self.size != self.expected_size:
            raise CorruptContent(
                f"{self.expected}: got {self.size} bytes, the descriptor says {self.expected_size}"
            )
        actual = self.digest()
        if actual != self.expected:
            raise CorruptContent(f"digest mismatch: expected {self.expected}, got {actual}")
