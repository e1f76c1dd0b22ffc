"""Signal names and numbers as kill(1) and runc accept them: TERM, SIGTERM, 15, RTMIN+3."""

from __future__ import annotations

import signal

from ketch.errors import InvalidArgument


def parse_signal(text: str) -> int:
    raw = text.strip().upper()
    if raw.isascii() and raw.isdigit():
        number = int(raw)
        if 0 < number <= signal.SIGRTMAX:
            return number
        raise InvalidArgument(f"invalid signal {text!r}")
    name = raw if raw.startswith("SIG") else "SIG" + raw
    for base, start in (("SIGRTMIN", signal.SIGRTMIN), ("SIGRTMAX", signal.SIGRTMAX)):
        if name.startswith(base):
            rest = name[len(base) :]
            try:
                offset = int(rest) if rest else 0
            except ValueError:
                break
            number = start + offset
            if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
                return number
            break
    sig = getattr(signal.Signals, name, None) if name.isidentifier() else None
    if not isinstance(sig, signal.Signals):
        raise InvalidArgument(f"invalid signal {text!r}")
    return int(sig)
