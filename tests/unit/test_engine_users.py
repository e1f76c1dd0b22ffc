"""Unit tests for ketch.engine.users: -u resolution inside an image rootfs, without host NSS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ketch.engine import users
from ketch.engine.users import read_file, resolve_user
from ketch.errors import InvalidArgument

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment line

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
nohome:x:1001:1001::
broken:x:abc:0::/broken:/bin/sh
dup:x:2000:2000::/first:/bin/sh
dup:x:2001:2001::/second:/bin/sh
"""
GROUP = """\
root:x:0:
daemon:x:1:
wheel:x:10:app,other
audio:x:29:other,app
app:x:1000:
staff:x:50:
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text(GROUP)
    return tmp_path


def test_default_user_is_root_with_its_home(rootfs: Path) -> None:
    assert resolve_user(str(rootfs), "") == (0, 0, (), "/root")


def test_name_resolves_with_supplementary_groups(rootfs: Path) -> None:
    assert resolve_user(str(rootfs), "app") == (1000, 1000, (10, 29), "/home/app")


def test_numeric_uid_in_passwd_takes_the_entry(rootfs: Path) -> None:
    assert resolve_user(str(rootfs), "1000") == (1000, 1000, (10, 29), "/home/app")


def test_numeric_uid_absent_from_passwd_is_allowed(rootfs: Path) -> None:
    assert resolve_user(str(rootfs), "4242") == (4242, 0, (), "/")


def test_numeric_uid_and_gid_absent_are_allowed(rootfs: Path) -> None:
    assert resolve_user(str(rootfs), "4242:4343") == (4242, 4343, (), "/")


def test_explicit_group_by_name_drops_supplementary_groups(rootfs: Path) -> None:
    assert resolve_user(str(rootfs), "app:staff") == (1000, 50, (), "/home/app")


def test_explicit_group_by_number(rootfs: Path) -> None:
    assert resolve_user(str(rootfs), "daemon:29") == (1, 29, (), "/usr/sbin")


def test_unknown_user_name_is_refused(rootfs: Path) -> None:
    with pytest.raises(
        InvalidArgument, match=r"^unable to find user nobody: no matching entries in passwd file$"
    ):
        resolve_user(str(rootfs), "nobody")


def test_unknown_group_name_is_refused(rootfs: Path) -> None:
    with pytest.raises(
        InvalidArgument, match=r"^unable to find group nogroup: no matching entries in group file$"
    ):
        resolve_user(str(rootfs), "app:nogroup")


def test_out_of_range_ids_are_refused(rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="uids and gids must be in range"):
        resolve_user(str(rootfs), "-1")
    with pytest.raises(InvalidArgument, match="uids and gids must be in range"):
        resolve_user(str(rootfs), "0:4294967296")


def test_empty_home_falls_back_to_root_dir(rootfs: Path) -> None:
    assert resolve_user(str(rootfs), "nohome") == (1001, 1001, (), "/")


def test_first_matching_entry_wins(rootfs: Path) -> None:
    assert resolve_user(str(rootfs), "dup")[:2] == (2000, 2000)


def test_entries_with_non_numeric_ids_are_skipped(rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="unable to find user broken"):
        resolve_user(str(rootfs), "broken")


def test_extra_fields_after_group_are_ignored(rootfs: Path) -> None:
    assert resolve_user(str(rootfs), "app:staff:extra")[1] == 50


def test_rootfs_without_etc_defaults_to_root(tmp_path: Path) -> None:
    assert resolve_user(str(tmp_path), "") == (0, 0, (), "/")
    assert resolve_user(str(tmp_path), "123:456") == (123, 456, (), "/")
    with pytest.raises(InvalidArgument, match="unable to find user app"):
        resolve_user(str(tmp_path), "app")


def test_symlinked_passwd_pointing_outside_is_treated_as_missing(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").symlink_to("/etc/passwd")
    assert read_file(str(tmp_path), "etc/passwd") == b""
    with pytest.raises(InvalidArgument, match="unable to find user root"):
        resolve_user(str(tmp_path), "root")  # the host's root entry must not be found


def test_symlinked_etc_directory_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "etc").symlink_to("/etc")
    assert read_file(str(tmp_path), "etc/passwd") == b""
    assert resolve_user(str(tmp_path), "") == (0, 0, (), "/")


def test_relative_symlink_inside_the_rootfs_is_also_refused(rootfs: Path) -> None:
    (rootfs / "etc" / "passwd").rename(rootfs / "etc" / "passwd.real")
    (rootfs / "etc" / "passwd").symlink_to("passwd.real")
    assert read_file(str(rootfs), "etc/passwd") == b""


def test_fifo_passwd_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.mkfifo(tmp_path / "etc" / "passwd")
    assert read_file(str(tmp_path), "etc/passwd") == b""  # must not block


def test_directory_in_place_of_passwd_reads_as_empty(tmp_path: Path) -> None:
    (tmp_path / "etc" / "passwd").mkdir(parents=True)
    assert read_file(str(tmp_path), "etc/passwd") == b""


def test_dot_dot_components_are_refused(rootfs: Path) -> None:
    assert read_file(str(rootfs / "etc"), "../etc/passwd") == b""


def test_reads_at_most_the_limit_and_drops_a_cut_line(rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(users, "MAX_BYTES", 40)
    data = read_file(str(rootfs), "etc/passwd")
    assert data == b"root:x:0:0:root:/root:/bin/sh\n# a comment line"[:40].rpartition(b"\n")[0]


def test_rootfs_may_be_a_directory_fd(rootfs: Path) -> None:
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert resolve_user(fd, "app")[0] == 1000
        os.fstat(fd)  # still open: the caller's fd is not closed
    finally:
        os.close(fd)
