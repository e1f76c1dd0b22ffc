"""Per-layer progress for pull and push: live bars on a terminal, one line per status change otherwise."""

from __future__ import annotations

import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

_BAR = 50
_REFRESH = 0.1  # seconds between redraws on a terminal


class Progress:
    def __init__(self, stream: TextIO, quiet: bool = False) -> None:
        self.stream, self.quiet = stream, quiet
        self.tty = stream.isatty() and not quiet
        self.lock = threading.Lock()
        self.order: list[str] = []
        self.state: dict[str, tuple[str, int, int]] = {}
        self.drawn = 0
        self.last_draw = 0.0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.tty:
            with self.lock:
                self._draw()

    def report(self, layer: str, status: str, current: int = 0, total: int = 0) -> None:
        if self.quiet:
            return
        with self.lock:
            old = self.state.get(layer)
            if layer not in self.state:
                self.order.append(layer)
            self.state[layer] = (status, current, total)
            if self.tty:
                if old is None or old[0] != status or time.monotonic() - self.last_draw > _REFRESH:
                    self._draw()
            elif old is None or old[0] != status:
                self.stream.write(f"{layer}: {status}\n")
                self.stream.flush()

    def _draw(self) -> None:
        out = [f"\x1b[{self.drawn}A"] if self.drawn else []
        for layer in self.order:
            status, current, total = self.state[layer]
            out.append(f"\x1b[2K{layer}: {status}{_bar(status, current, total)}\n")
        self.stream.write("".join(out))
        self.stream.flush()
        self.drawn = len(self.order)
        self.last_draw = time.monotonic()


def _bar(status: str, current: int, total: int) -> str:
    if status not in ("Downloading", "Extracting", "Pushing") or total <= 0:
        return ""
    filled = min(_BAR, current * _BAR // total)
    arrow = ">" if filled < _BAR else ""
    return f" [{'=' * max(0, filled - 1)}{arrow}{' ' * (_BAR - filled)}] {_size(current)}/{_size(total)}"


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}TB"
