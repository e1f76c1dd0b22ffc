"""Container names for containers created without --name, in Docker's adjective_surname style."""

from __future__ import annotations

import random

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
    import os

    rng = random.SystemRandom()
    for attempt in range(10):
        name = f"{rng.choice(_LEFT)}_{rng.choice(_RIGHT)}" + (str(rng.randint(0, 9)) if attempt > 2 else "")
        if not os.path.lexists(os.path.join(store.names, name)):
            return name
    return f"ketch_{os.urandom(4).hex()}"
