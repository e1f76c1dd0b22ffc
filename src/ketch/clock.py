"""RFC 3339 times as Docker writes them (UTC, nanoseconds, "Z") and their parsing."""

from __future__ import annotations

import time

ZERO = "0001-01-01T00:00:00Z"  # Go's zero time: Docker's "never"


def rfc3339(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def parse_rfc3339(text: str) -> float:
    """Seconds since the epoch for "2024-01-02T03:04:05.123456789Z" or with a +hh:mm offset; 0 if blank."""
    if not text or text == ZERO:
        return 0.0
    import calendar

    text = text.strip()
    offset = 0
    if text.endswith("Z"):
        text = text[:-1]
    elif len(text) > 6 and text[-6] in "+-" and text[-3] == ":":
        sign = 1 if text[-6] == "+" else -1
        offset = sign * (int(text[-5:-3]) * 3600 + int(text[-2:]) * 60)
        text = text[:-6]
    whole, _, frac = text.partition(".")
    base = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return base - offset + (float("0." + frac) if frac else 0.0)
