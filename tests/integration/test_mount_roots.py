"""statx(2)'s mount-root attribute, which replaced mountinfo scans on the start path."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketch.engine.bundle import _is_mount
from ketch.linux import syscalls as sc
from ketch.runtime.rootfs import _mount_point_of

pytestmark = pytest.mark.root


def test_a_bind_mount_of_the_same_filesystem_is_seen_and_found_from_below(tmp_path: Path) -> None:
    top = tmp_path / "top"
    (top / "a" / "b").mkdir(parents=True)
    assert sc.is_mount_root(str(top)) is False and not _is_mount(str(top))
    sc.mount(str(top), str(top), None, sc.MS_BIND)
    try:
        assert sc.is_mount_root(str(top)) is True and _is_mount(str(top))
        assert _mount_point_of(str(top / "a" / "b")) == str(top)
        assert _mount_point_of(str(top)) == str(top)
    finally:
        sc.umount(str(top))
    assert sc.is_mount_root(str(top)) is False
    assert _mount_point_of(str(top / "a")) != str(top)
    assert sc.is_mount_root("/") is True and _mount_point_of("/") == "/"
