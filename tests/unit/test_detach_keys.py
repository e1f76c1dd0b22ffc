"""--detach-keys: Docker's key syntax and the escape proxy that watches typed bytes for it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ketch.cli.attach import Session, detach_keys
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
    s = session()
    assert s._escape(b"ab\x10c") == b"ab\x10c" and not s.detached
    assert s._escape(b"x\x10") == b"x" and s.held == b"\x10"  # held back: it may go on
    assert s._escape(b"\x10") == b"\x10" and s.held == b"\x10"  # a second ctrl-p starts again
    assert s._escape(b"\x11after") == b"" and s.detached
    assert session(tty=False).keys == b""  # without a terminal, every byte goes through
