"""--detach-keys: Docker's key syntax and the escape proxy that watches typed bytes for it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ketch.cli.attach import Escape, Session, detach_keys
from ketch.errors import InvalidArgument


def test_key_syntax() -> None:
    assert detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert detach_keys("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_") == bytes([0, 27, 28, 29, 30, 31])
    assert detach_keys("a,ctrl-a,X") == b"a\x01X"
    assert detach_keys("") == b""
    for bad in ("ctrl-1", "ab", "ctrl-", "ctrl-pq"):
        with pytest.raises(InvalidArgument):
            detach_keys(bad)


def session(keys: str = "ctrl-p,ctrl-q", tty: bool = True) -> Session:
    return Session(SimpleNamespace(sock=None, reader=None), True, tty, keys)


def test_the_escape_proxy_holds_only_what_may_be_the_sequence() -> None:
    e = Escape(b"\x10\x11")
    assert e.feed(b"ab\x10c") == b"ab\x10c" and not e.detached
    assert e.feed(b"x\x10") == b"x" and e.held == b"\x10"  # held back: it may go on
    assert e.feed(b"\x10") == b"\x10" and e.held == b"\x10"  # a second ctrl-p starts again
    assert e.feed(b"\x11after") == b"" and e.detached
    assert Escape(b"").feed(b"\x10\x11") == b"\x10\x11"  # no keys: every byte goes through


def test_sessions_watch_for_the_keys_on_a_terminal_only() -> None:
    assert session().escape.keys == b"\x10\x11"
    assert session(tty=False).escape.keys == b""
