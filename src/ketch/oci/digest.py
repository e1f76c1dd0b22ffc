"""Content digests ("sha256:<hex>"): parsing and a streaming verifier (OCI image spec, descriptor.md)."""

from __future__ import annotations

import hashlib

from ketch.errors import CorruptContent, InvalidArgument

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
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


class Verifier:
    """Hashes bytes as they stream past and checks them against an expected digest and size.

    `expected_size` of None means "unknown" (only the digest is checked). Feeding more bytes
    than expected fails at once, so a lying or endless stream is cut off early.
    """

    def __init__(self, expected: str, expected_size: int | None = None) -> None:
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
