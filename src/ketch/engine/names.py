"""Container names for containers created without --name, in Docker's adjective_surname style."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ketch.engine.containers import ContainerStore

_LEFT = (
    "admiring", "bold", "brave", "busy", "calm", "clever", "dazzling", "eager", "elated", "epic",
    "fervent", "focused", "gallant", "happy", "hopeful", "jolly", "keen", "kind", "lucid", "modest",
    "nifty", "optimistic", "peaceful", "quirky", "relaxed", "serene", "sharp", "stoic", "tender", "vibrant",
    "wizardly", "zealous",
)  # fmt: skip
_RIGHT = (
    "babbage", "bardeen", "curie", "darwin", "dijkstra", "euclid", "faraday", "feynman", "franklin", "gauss",
    "goodall", "hamilton", "hopper", "hypatia", "johnson", "kepler", "knuth", "lamarr", "liskov", "lovelace",
    "mccarthy", "meitner", "noether", "pascal", "ritchie", "shannon", "thompson", "torvalds", "turing", "wozniak",
)  # fmt: skip


def generate(store: ContainerStore) -> str:
    """A free name; after a few collisions a digit is appended, as Docker does."""
    for attempt in range(10):
        name = f"{_choice(_LEFT)}_{_choice(_RIGHT)}" + (str(_below(10)) if attempt > 2 else "")
        if not os.path.lexists(os.path.join(store.names, name)):
            return name
    return f"ketch_{os.urandom(4).hex()}"


def _choice(words: tuple[str, ...]) -> str:
    return words[_below(len(words))]


def _below(n: int) -> int:
    """A uniform random integer in [0, n) from os.urandom (`random` would pull in hashlib)."""
    limit = (1 << 32) - (1 << 32) % n  # reject the top partial block: no modulo bias
    while True:
        value = int.from_bytes(os.urandom(4), "big")
        if value < limit:
            return value % n
