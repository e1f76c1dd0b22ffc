"""Unit tests for ketch.runtime.signals.parse_signal: kill(1)/runc-style signal names and numbers."""

from __future__ import annotations

import signal

import pytest

from ketch.errors import InvalidArgument
from ketch.runtime.signals import parse_signal


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("TERM", signal.SIGTERM),
        ("SIGTERM", signal.SIGTERM),
        ("term", signal.SIGTERM),
        ("sigterm", signal.SIGTERM),
        (" KILL ", signal.SIGKILL),
        ("9", 9),
        ("15", 15),
        ("1", 1),
        ("HUP", signal.SIGHUP),
        ("usr1", signal.SIGUSR1),
        ("WINCH", signal.SIGWINCH),
        ("IOT", signal.SIGABRT),
        ("CLD", signal.SIGCHLD),
    ],
)
def test_names_and_numbers(text: str, number: int) -> None:
    assert parse_signal(text) == number


def test_highest_number_is_rtmax() -> None:
    assert parse_signal(str(int(signal.SIGRTMAX))) == signal.SIGRTMAX


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("RTMIN", signal.SIGRTMIN),
        ("SIGRTMIN", signal.SIGRTMIN),
        ("RTMIN+3", signal.SIGRTMIN + 3),
        ("rtmin+3", signal.SIGRTMIN + 3),
        ("SIGRTMIN+3", signal.SIGRTMIN + 3),
        ("RTMAX", signal.SIGRTMAX),
        ("SIGRTMAX-1", signal.SIGRTMAX - 1),
        ("RTMAX-3", signal.SIGRTMAX - 3),
        ("RTMIN+0", signal.SIGRTMIN),
    ],
)
def test_realtime_signals(text: str, number: int) -> None:
    assert parse_signal(text) == number


def test_realtime_range_edges() -> None:
    span = int(signal.SIGRTMAX) - int(signal.SIGRTMIN)
    assert parse_signal(f"RTMIN+{span}") == signal.SIGRTMAX
    assert parse_signal(f"RTMAX-{span}") == signal.SIGRTMIN


@pytest.mark.parametrize(
    "text",
    [
        "FOO",
        "SIGFOO",
        "0",
        "99999",
        str(int(signal.SIGRTMAX) + 1),
        "-9",
        "+9",
        "",
        " ",
        "SIG",
        "RTMIN-1",
        "RTMAX+1",
        "RTMIN+x",
        "RTMIN+",
        "SIG TERM",
        "SIG_DFL",
        "TERM=1",
        "1.5",
    ],
)
def test_invalid_signals_raise(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid signal"):
        parse_signal(text)


def test_superscript_digit_raises_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        parse_signal("\u00b2")
