"""Unit tests for the pure half of ketch.runtime.rootfs: mount options, describe(), resolve_in_root()."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument
from ketch.linux import syscalls as sc
from ketch.oci.runtime import Mount
from ketch.runtime.rootfs import MountOp, describe, known_options, parse_options, resolve_in_root

# --- parse_options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "flags"),
    [
        ((), 0),
        (("defaults",), 0),
        (("ro",), sc.MS_RDONLY),
        (("ro", "rw"), 0),
        (("rw", "ro"), sc.MS_RDONLY),
        (("nosuid", "nodev", "noexec"), sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC),
        (("noexec", "exec"), 0),
        (("nosuid", "suid", "nosuid"), sc.MS_NOSUID),
        (("nodev", "dev"), 0),
        (("sync", "async"), 0),
        (("dirsync",), sc.MS_DIRSYNC),
        (("noatime", "atime", "relatime"), sc.MS_RELATIME),
        (("nodiratime",), sc.MS_NODIRATIME),
        (("relatime", "norelatime"), 0),
        (("strictatime",), sc.MS_STRICTATIME),
        (("lazytime", "nolazytime"), 0),
        (("nosymfollow",), sc.MS_NOSYMFOLLOW),
        (("silent", "loud"), 0),
        (("mand", "nomand"), 0),
        (("remount", "ro"), sc.MS_REMOUNT | sc.MS_RDONLY),
        (("bind",), sc.MS_BIND),
        (("rbind",), sc.MS_BIND | sc.MS_REC),
        (("rbind", "ro", "nosuid"), sc.MS_BIND | sc.MS_REC | sc.MS_RDONLY | sc.MS_NOSUID),
    ],
)
def test_flags_are_set_and_cleared_in_order(options: tuple[str, ...], flags: int) -> None:
    got, propagation, data = parse_options(options)
    assert got == flags
    assert propagation == ()
    assert data == ""


def test_propagation_options_are_collected_in_order() -> None:
    flags, propagation, data = parse_options(("rprivate", "ro", "shared", "rslave", "unbindable"))
    assert flags == sc.MS_RDONLY
    assert propagation == (
        sc.MS_PRIVATE | sc.MS_REC,
        sc.MS_SHARED,
        sc.MS_SLAVE | sc.MS_REC,
        sc.MS_UNBINDABLE,
    )
    assert data == ""


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("private", sc.MS_PRIVATE),
        ("shared", sc.MS_SHARED),
        ("rshared", sc.MS_SHARED | sc.MS_REC),
        ("slave", sc.MS_SLAVE),
        ("runbindable", sc.MS_UNBINDABLE | sc.MS_REC),
    ],
)
def test_each_propagation_option(option: str, value: int) -> None:
    assert parse_options((option,))[1] == (value,)


def test_unknown_options_go_to_the_data_string_in_order() -> None:
    flags, _, data = parse_options(("nosuid", "mode=755", "ro", "size=65536k", "newinstance"))
    assert flags == sc.MS_NOSUID | sc.MS_RDONLY
    assert data == "mode=755,size=65536k,newinstance"


@pytest.mark.parametrize("option", ["rro", "rrw", "rnosuid", "rnodev", "rnoexec", "rnoatime"])
def test_recursive_attributes_are_refused(option: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_options(("nosuid", option), "mounts[3].options")
    assert str(info.value).startswith("mounts[3].options: recursive mount attribute")
    assert repr(option) in str(info.value)


def test_empty_option_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="empty mount option"):
        parse_options(("ro", ""))


@pytest.mark.parametrize(
    "option",
    [
        "context=system_u:object_r:container_file_t:s0:c1,c2",
        "fscontext=system_u:object_r:fs_t:s0",
        "rootcontext=x",
        "defcontext=y",
        "z",
        "Z",
        "private-label",
        "idmap",
    ],
)
def test_selinux_and_relabel_options_are_ignored(option: str) -> None:
    assert parse_options(("ro", option, "mode=1777")) == (sc.MS_RDONLY, (), "mode=1777")


def test_known_options_cover_flags_and_propagation() -> None:
    known = known_options()
    assert {"ro", "rw", "bind", "rbind", "rprivate", "shared", "nosymfollow"} <= known
    assert "rro" not in known
    assert "mode=755" not in known


# --- describe ------------------------------------------------------------------------------------


def test_describe_plain_mount() -> None:
    op = describe(Mount("/dev", "tmpfs", "tmpfs", ("nosuid", "mode=755", "rprivate")), "/bundle")
    assert op == MountOp("tmpfs", "/dev", "tmpfs", sc.MS_NOSUID, "mode=755", (sc.MS_PRIVATE | sc.MS_REC,))
    assert not op.is_bind


def test_describe_non_bind_keeps_relative_source() -> None:
    assert describe(Mount("/proc", "proc", "proc"), "/bundle").source == "proc"


def test_describe_bind_type_adds_ms_bind() -> None:
    op = describe(Mount("/data", "bind", "/host/data", ("ro",)), "/bundle")
    assert op.flags == sc.MS_BIND | sc.MS_RDONLY
    assert op.is_bind
    assert op.source == "/host/data"
    assert op.fstype == "bind"


def test_describe_bind_option_with_other_type() -> None:
    op = describe(Mount("/sys", "none", "/sys", ("rbind", "nosuid", "ro")), "/bundle")
    assert op.flags == sc.MS_BIND | sc.MS_REC | sc.MS_NOSUID | sc.MS_RDONLY
    assert op.is_bind


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("data", "/srv/bundle/data"),
        ("sub/dir", "/srv/bundle/sub/dir"),
        ("/abs/path", "/abs/path"),
    ],
)
def test_describe_relative_bind_source_is_joined_to_bundle(source: str, expected: str) -> None:
    assert describe(Mount("/mnt", "bind", source), "/srv/bundle").source == expected


def test_describe_bind_without_source_is_refused() -> None:
    with pytest.raises(InvalidArgument) as info:
        describe(Mount("/mnt", "none", "", ("bind",)), "/bundle", "mounts[4]")
    assert str(info.value).startswith("mounts[4].source: a bind mount needs a source")


def test_describe_reports_bad_options_under_the_mount_path() -> None:
    with pytest.raises(InvalidArgument) as info:
        describe(Mount("/mnt", "bind", "/x", ("rro",)), "/bundle", "mounts[2]")
    assert str(info.value).startswith("mounts[2].options:")


# --- resolve_in_root -----------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("container\n")
    (r / "usr" / "lib").mkdir(parents=True)
    (r / "usr" / "bin").mkdir()
    (r / "var").mkdir()
    return r


def test_plain_paths(root: Path) -> None:
    assert resolve_in_root(str(root), "/etc/passwd") == f"{root}/etc/passwd"
    assert resolve_in_root(str(root), "etc//./passwd") == f"{root}/etc/passwd"
    assert resolve_in_root(str(root), "/") == str(root)
    assert resolve_in_root(str(root), "") == str(root)


def test_root_itself_is_canonicalised(root: Path, tmp_path: Path) -> None:
    (tmp_path / "alias").symlink_to(root)
    assert resolve_in_root(str(tmp_path / "alias"), "/etc") == f"{root}/etc"


def test_missing_components_are_kept(root: Path) -> None:
    assert resolve_in_root(str(root), "/does/not/exist") == f"{root}/does/not/exist"
    assert resolve_in_root(str(root), "/etc/new/file") == f"{root}/etc/new/file"


def test_dotdot_cannot_climb_out(root: Path) -> None:
    assert resolve_in_root(str(root), "/../../..") == str(root)
    assert resolve_in_root(str(root), "/../../etc/passwd") == f"{root}/etc/passwd"
    assert resolve_in_root(str(root), "/usr/../../../etc") == f"{root}/etc"
    assert resolve_in_root(str(root), "/usr/lib/../bin") == f"{root}/usr/bin"


def test_absolute_symlink_restarts_at_the_root(root: Path) -> None:
    (root / "var" / "run").symlink_to("/run")
    assert resolve_in_root(str(root), "/var/run/x.pid") == f"{root}/run/x.pid"


def test_symlink_to_host_passwd_stays_inside(root: Path) -> None:
    (root / "evil").symlink_to("/etc/passwd")
    resolved = resolve_in_root(str(root), "/evil")
    assert resolved == f"{root}/etc/passwd"
    assert Path(resolved).read_text() == "container\n"


def test_relative_symlink_escaping_with_dotdot_stays_inside(root: Path) -> None:
    (root / "usr" / "lib" / "up").symlink_to("../../../../../../etc")
    assert resolve_in_root(str(root), "/usr/lib/up/passwd") == f"{root}/etc/passwd"


def test_relative_symlink_is_resolved_from_its_directory(root: Path) -> None:
    (root / "usr" / "lib" / "sibling").symlink_to("../bin")
    (root / "usr" / "lib" / "here").symlink_to("./x/y")
    assert resolve_in_root(str(root), "/usr/lib/sibling/sh") == f"{root}/usr/bin/sh"
    assert resolve_in_root(str(root), "/usr/lib/here") == f"{root}/usr/lib/x/y"


def test_chain_of_links(root: Path) -> None:
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("/usr/c")
    (root / "usr" / "c").symlink_to("../etc")
    assert resolve_in_root(str(root), "/a/passwd") == f"{root}/etc/passwd"


def test_dotdot_after_a_link_pops_the_links_target(root: Path) -> None:
    (root / "lib").symlink_to("/usr/lib")
    assert resolve_in_root(str(root), "/lib/..") == f"{root}/usr"


def test_dangling_link_resolves_to_its_missing_target(root: Path) -> None:
    (root / "dangling").symlink_to("/nowhere/file")
    assert resolve_in_root(str(root), "/dangling") == f"{root}/nowhere/file"


def test_symlink_loop_raises_eloop(root: Path) -> None:
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("/loop1")
    with pytest.raises(OSError) as info:
        resolve_in_root(str(root), "/loop1/x")
    assert info.value.errno == errno.ELOOP


def test_self_loop_raises_eloop(root: Path) -> None:
    (root / "self").symlink_to("self")
    with pytest.raises(OSError) as info:
        resolve_in_root(str(root), "self")
    assert info.value.errno == errno.ELOOP


def test_many_links_below_the_limit_resolve(root: Path) -> None:
    for i in range(100):
        (root / f"l{i}").symlink_to(f"l{i + 1}")
    (root / "l100").symlink_to("etc")
    assert resolve_in_root(str(root), "/l0/passwd") == f"{root}/etc/passwd"


def test_result_never_leaves_the_root(root: Path) -> None:
    (root / "up").symlink_to("..")
    (root / "abs").symlink_to("/..")
    (root / "usr" / "deep").symlink_to("../../../up/abs/up")
    for path in ("/up", "/abs", "/usr/deep", "/up/up/up/etc", "/usr/deep/etc/passwd"):
        resolved = resolve_in_root(str(root), path)
        assert resolved == str(root) or resolved.startswith(str(root) + os.sep)
