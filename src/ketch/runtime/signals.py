"""Signals by name and number, as kill(1) and runc accept them: TERM, SIGTERM, 15, RTMIN+3.

Built on the `_signal` C module: the `signal` wrapper module turns every constant into an
IntEnum, and importing enum costs ~5 ms of ketch-oci's start-up.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stubs; it is what `signal` wraps

from ketch.errors import InvalidArgument

SIGKILL: int = _signal.SIGKILL
SIGTERM: int = _signal.SIGTERM
SIGRTMIN: int = _signal.SIGRTMIN
SIGRTMAX: int = _signal.SIGRTMAX
NAMES: dict[str, int] = {
    name: number
    for name, number in vars(_signal).items()
    if name.startswith("SIG") and not name.startswith("SIG_") and isinstance(number, int)
}
FORWARDED = tuple(
    NAMES[n]
    for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH")
    if n in NAMES
)


def handle(sig: int, handler: object) -> None:
    _signal.signal(sig, handler)


def pidfd_send(pidfd: int, sig: int) -> None:
    _signal.pidfd_send_signal(pidfd, sig)


def parse_signal(text: str) -> int:
    raw = text.strip().upper()
    if raw.isascii() and raw.isdigit():
        number = int(raw)
        if 0 < number <= SIGRTMAX:
            return number
        raise InvalidArgument(f"invalid signal {text!r}")
    name = raw if raw.startswith("SIG") else "SIG" + raw
    for base, start in (("SIGRTMIN", SIGRTMIN), ("SIGRTMAX", SIGRTMAX)):
        if name.startswith(base):
            rest = name[len(base) :]
            try:
                offset = int(rest) if rest else 0
            except ValueError:
                break
            number = start + offset
            if SIGRTMIN <= number <= SIGRTMAX:
                return number
            break
    found = NAMES.get(name)
    if found is None or name in ("SIGRTMIN", "SIGRTMAX"):
        raise InvalidArgument(f"invalid signal {text!r}")
    return found
