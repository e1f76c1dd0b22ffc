"""Applying OCI layers on the real filesystem: every member type, whiteouts, overlayfs, hostile tars."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ketch.errors import CorruptContent
from ketch.image.layers import LayerStats, Limits, apply_layer

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mknod, chown, trusted.* xattrs, mount"),
]

Entry = tuple[tarfile.TarInfo, bytes]


# --- building layers ---------------------------------------------------------------------------


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: Any) -> Entry:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_600_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def dir_(name: str, **attrs: Any) -> Entry:
    return member(name, tarfile.DIRTYPE, **attrs)


def symlink(name: str, target: str) -> Entry:
    return member(name, tarfile.SYMTYPE, linkname=target)


def hardlink(name: str, target: str) -> Entry:
    return member(name, tarfile.LNKTYPE, linkname=target)


def tar(*entries: Entry, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as out:
        for info, data in entries:
            out.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def raw_header(name: bytes, size: int = 0, kind: bytes = b"0") -> bytes:
    """A ustar header written by hand, for members tarfile would not write (or not with a lying size)."""
    fields = [
        name.ljust(100, b"\0"), b"0000644\0", b"0000000\0", b"0000000\0",
        b"%011o\0" % size if size < 8**11 else b"\x80" + size.to_bytes(11, "big"),  # GNU base-256
        b"%011o\0" % 1_600_000_000, b" " * 8, kind, bytes(100),
        b"ustar\x0000", bytes(247),
    ]  # fmt: skip
    header = bytearray(b"".join(fields))
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body)
    while length != len(body) + len(str(length)):  # the length counts its own digits
        length = len(body) + len(str(length))
    return str(length).encode() + body


def apply(data: bytes, root: Path, overlay: bool = True, **limits: int) -> LayerStats:
    return apply_layer(io.BytesIO(data), str(root), overlay=overlay, limits=Limits(**limits))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """A directory next to root that hostile layers aim at."""
    path = tmp_path / "sentinel"
    path.mkdir()
    (path / "x").write_text("precious")
    (path / "file").write_text("precious too")
    return path


def snapshot(top: Path, skip: Path) -> dict[str, tuple[Any, ...]]:
    """Everything under top except skip: type, inode, links, owner, size, mtime, content."""
    seen: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            body = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
            seen[str(path)] = (
                st.st_mode,
                st.st_ino,
                st.st_nlink,
                st.st_uid,
                st.st_size,
                st.st_mtime_ns,
                body,
            )
    return seen


def xattr(path: Path, name: str) -> bytes:
    return os.getxattr(path, name, follow_symlinks=False)


# --- member types and metadata -----------------------------------------------------------------


def test_files_dirs_modes_owners_xattrs_and_times(root: Path) -> None:
    ns_time = {"mtime": "1500000000.123456789"}
    xattrs = {"SCHILY.xattr.user.note": "hello", "SCHILY.xattr.trusted.mark": "t"}
    layer = tar(
        dir_("./", mode=0o751),
        dir_("bin", uid=1234, gid=5678, pax_headers=ns_time),
        member("bin/tool", data=b"#!/bin/sh\n", mode=0o4755, uid=1234, gid=5678, pax_headers=ns_time),
        member("bin/sg", data=b"x", mode=0o2711),
        dir_("tmp", mode=0o1777, pax_headers=xattrs),
        member("tmp/note", data=b"n" * 5000, pax_headers=xattrs, mtime=1_400_000_000),
        member("deep/er/file", data=b"made with its parents"),
    )
    stats = apply(layer, root, overlay=False)
    assert stats == LayerStats(files=7, size=10 + 1 + 5000 + 21)
    assert stat.S_IMODE(root.stat().st_mode) == 0o751
    assert root.stat().st_mtime_ns == 1_600_000_000 * 10**9
    tool = (root / "bin/tool").stat()
    assert (stat.S_IMODE(tool.st_mode), tool.st_uid, tool.st_gid) == (0o4755, 1234, 5678)
    assert tool.st_mtime_ns == 1_500_000_000_123_456_789
    assert (root / "bin/tool").read_bytes() == b"#!/bin/sh\n"
    assert stat.S_IMODE((root / "bin/sg").stat().st_mode) == 0o2711
    binst = (root / "bin").stat()
    assert (binst.st_uid, binst.st_gid, binst.st_mtime_ns) == (1234, 5678, 1_500_000_000_123_456_789)
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert (root / "tmp").stat().st_mtime_ns == 1_600_000_000 * 10**9  # set after its child was written
    for path in (root / "tmp", root / "tmp/note"):
        assert (xattr(path, "user.note"), xattr(path, "trusted.mark")) == (b"hello", b"t")
    assert (root / "tmp/note").stat().st_mtime_ns == 1_400_000_000 * 10**9
    assert stat.S_IMODE((root / "deep/er").stat().st_mode) == 0o755
    assert (root / "deep/er/file").read_bytes() == b"made with its parents"


def test_symlinks_hardlinks_devices_fifos(root: Path) -> None:
    layer = tar(
        member("data", data=b"shared", uid=7, mode=0o600),
        hardlink("again", "data"),
        hardlink("./sub/third", "./data"),
        symlink("abs", "/etc/passwd"),
        member("up", tarfile.SYMTYPE, linkname="../../outside", uid=42, gid=43),
        member("null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666, uid=5),
        member("loop", tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660),
        member("pipe", tarfile.FIFOTYPE, mode=0o620),
    )
    apply(layer, root)
    data = (root / "data").stat()
    assert data.st_nlink == 3
    assert (root / "again").stat().st_ino == (root / "sub/third").stat().st_ino == data.st_ino
    assert os.readlink(root / "abs") == "/etc/passwd"  # verbatim, never followed
    assert os.readlink(root / "up") == "../../outside"
    assert ((root / "up").lstat().st_uid, (root / "up").lstat().st_gid) == (42, 43)
    null = (root / "null").lstat()
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    assert (stat.S_IMODE(null.st_mode), null.st_uid) == (0o666, 5)
    loop = (root / "loop").lstat()
    assert stat.S_ISBLK(loop.st_mode) and os.major(loop.st_rdev) == 7
    pipe = (root / "pipe").lstat()
    assert stat.S_ISFIFO(pipe.st_mode) and stat.S_IMODE(pipe.st_mode) == 0o620


def test_symlink_xattrs_trusted_kept_user_refused_by_kernel(root: Path) -> None:
    xattrs = {"SCHILY.xattr.trusted.t": "yes", "SCHILY.xattr.user.u": "no"}
    apply(tar(member("target"), member("link", tarfile.SYMTYPE, linkname="target", pax_headers=xattrs)), root)
    assert xattr(root / "link", "trusted.t") == b"yes"
    assert os.listxattr(root / "link", follow_symlinks=False) == ["trusted.t"]  # user.* is EPERM on links
    assert os.listxattr(root / "target") == []


def test_overlay_xattrs_in_a_layer_are_dropped(root: Path) -> None:
    redirect = {"SCHILY.xattr.trusted.overlay.redirect": "/etc", "SCHILY.xattr.trusted.ok": "1"}
    apply(tar(dir_("d", pax_headers=redirect)), root)
    assert os.listxattr(root / "d") == ["trusted.ok"]


def test_deep_trees_and_no_fd_leaks(root: Path) -> None:
    deep = "/".join(f"d{i}" for i in range(150))  # deeper than the fds kept open per chain
    layer = tar(
        member(f"{deep}/a", data=b"a"), member(f"{deep}/b"), member("top"), member(f"{deep[:300]}/c"),
        hardlink(f"{deep}/ln", f"{deep}/a"), member(f"{deep}/.wh.gone"), dir_(deep, mode=0o700),
    )  # fmt: skip
    fds = sorted(os.listdir("/proc/self/fd"))
    apply(layer, root)
    assert (root / deep / "a").stat().st_nlink == 2
    assert stat.S_IMODE((root / deep).stat().st_mode) == 0o700
    assert stat.S_ISCHR((root / deep / "gone").lstat().st_mode)
    assert sorted(os.listdir("/proc/self/fd")) == fds
    with pytest.raises(CorruptContent):
        apply(tar(member(f"{deep}/x"), symlink(f"{deep}/s", "/"), member(f"{deep}/s/x")), root)
    assert sorted(os.listdir("/proc/self/fd")) == fds


def test_later_member_wins(root: Path, sentinel: Path) -> None:
    layer = tar(
        member("f", data=b"first"),
        member("f", data=b"second"),
        dir_("d"),
        member("d/child", data=b"gone with d"),
        member("d", data=b"a file now"),
        member("e", data=b"a file first"),
        dir_("e", mode=0o700),
        symlink("s", str(sentinel)),
        dir_("s"),  # replaces the symlink, does not follow it
        member("s/inside", data=b"in root"),
        symlink("t", "f"),
        member("t", data=b"replaces the link, not its target"),
    )
    apply(layer, root, overlay=False)
    assert (root / "f").read_bytes() == b"second"
    assert (root / "d").read_bytes() == b"a file now"
    assert (root / "e").is_dir() and stat.S_IMODE((root / "e").stat().st_mode) == 0o700
    assert not (root / "s").is_symlink() and (root / "s/inside").read_bytes() == b"in root"
    assert (root / "t").read_bytes() == b"replaces the link, not its target"
    assert (root / "f").read_bytes() == b"second"
    assert sorted(os.listdir(sentinel)) == ["file", "x"]


def test_existing_directory_is_kept_and_updated(root: Path) -> None:
    apply(tar(dir_("etc"), member("etc/old", data=b"lower")), root, overlay=False)
    apply(tar(dir_("etc", mode=0o700, uid=3), member("etc/new", data=b"upper")), root, overlay=False)
    assert sorted(os.listdir(root / "etc")) == ["new", "old"]
    etc = (root / "etc").stat()
    assert (stat.S_IMODE(etc.st_mode), etc.st_uid) == (0o700, 3)


def test_long_names_in_every_format(root: Path) -> None:
    long_dir = "/".join(["d" * 60] * 2)
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):  # long names in "L"/"K" or PAX records
        name = f"{long_dir}/{fmt}-" + "f" * 60
        apply(tar(member(name, data=b"long"), hardlink(name + ".ln", name), fmt=fmt), root)
        assert (root / name).read_bytes() == b"long"
        assert (root / (name + ".ln")).stat().st_ino == (root / name).stat().st_ino
    name = f"{long_dir}/ustar-" + "f" * 60  # ustar: split into the prefix and name fields
    apply(tar(member(name, data=b"prefixed"), fmt=tarfile.USTAR_FORMAT), root)
    assert (root / name).read_bytes() == b"prefixed"


# --- whiteouts ---------------------------------------------------------------------------------


def test_overlay_mode_converts_whiteouts(root: Path) -> None:
    layer = tar(dir_("a"), member("a/.wh.gone"), dir_("b"), member("b/.wh..wh..opq"), member("b/new"))
    stats = apply(layer, root, overlay=True)
    gone = (root / "a/gone").lstat()
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert not (root / "a/.wh.gone").exists()
    assert xattr(root / "b", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(root / "b")) == ["new"]
    assert stats.files == 5


def test_overlay_mount_hides_whited_out_and_opaque_contents(tmp_path: Path) -> None:
    lower, upper, target = tmp_path / "lower", tmp_path / "upper", tmp_path / "merged"
    for path in (lower, upper, target):
        path.mkdir()
    apply(tar(member("keep"), member("gone"), dir_("opq"), member("opq/old"), dir_("plain"),
              member("plain/x")), lower)  # fmt: skip
    apply(tar(member(".wh.gone"), dir_("opq"), member("opq/.wh..wh..opq"), member("opq/new"),
              member("plain/y")), upper)  # fmt: skip
    options = f"lowerdir={upper}:{lower}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)], check=True)
    try:
        assert sorted(os.listdir(target)) == ["keep", "opq", "plain"]
        assert sorted(os.listdir(target / "opq")) == ["new"]
        assert sorted(os.listdir(target / "plain")) == ["x", "y"]
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_vfs_mode_applies_whiteouts(root: Path, sentinel: Path) -> None:
    lower = tar(
        member("file"), dir_("tree"), member("tree/a"), symlink("tree/out", str(sentinel)),
        symlink("link", str(sentinel)), member("stays"),
    )  # fmt: skip
    apply(lower, root, overlay=False)
    upper = tar(member(".wh.file"), member(".wh.tree"), member(".wh.link"), member(".wh.never-was"),
                dir_("missing"), member("missing/.wh.x"))  # fmt: skip
    apply(upper, root, overlay=False)
    assert sorted(os.listdir(root)) == ["missing", "stays"]
    assert sorted(os.listdir(sentinel)) == ["file", "x"]  # removal did not follow the symlinks


def test_vfs_opaque_keeps_this_layers_entries(root: Path) -> None:
    lower = tar(dir_("a"), member("a/old"), dir_("a/sub"), member("a/sub/old"), dir_("a/other"),
                member("a/other/old"), member("b"))  # fmt: skip
    apply(lower, root, overlay=False)
    upper = tar(
        dir_("a"), member("a/early", data=b"before the marker"), member("a/sub/new"),
        member("a/.wh..wh..opq"), member("a/late", data=b"after the marker"),
        member("a/early.wh.not-a-whiteout"), member("a/.wh.early"),
    )  # fmt: skip
    apply(upper, root, overlay=False)
    assert sorted(os.listdir(root / "a")) == ["early", "early.wh.not-a-whiteout", "late", "sub"]
    assert sorted(os.listdir(root / "a/sub")) == ["new"]  # lower children of kept dirs go too
    assert (root / "b").exists()


def test_aufs_metadata_is_skipped(root: Path) -> None:
    apply(tar(dir_(".wh..wh.plnk"), member(".wh..wh.plnk/123.456"), member(".wh..wh.aufs")), root)
    assert os.listdir(root) == []


# --- hostile layers ----------------------------------------------------------------------------

ABSOLUTE = f"ketch-test-{uuid.uuid4().hex[:8]}"

HOSTILE: dict[str, Callable[[Path], list[Entry]]] = {
    "dotdot": lambda s: [member("../x", data=b"escaped")],
    "absolute": lambda s: [member(f"/{ABSOLUTE}", data=b"escaped")],
    "inner-dotdot": lambda s: [dir_("a"), member("a/../../x", data=b"escaped")],
    "symlink-to-root": lambda s: [symlink("link", "/"), member(f"link{s}/x", data=b"escaped")],
    "symlink-etc-passwd": lambda s: [symlink("link", "/"), member("link/etc/passwd", data=b"root::0:0::/:")],
    "symlink-up": lambda s: [symlink("link", ".."), member(f"link/{s.name}/x", data=b"escaped")],
    "symlink-inside": lambda s: [dir_("d"), symlink("link", "d"), member("link/x", data=b"refused too")],
    "hardlink-up": lambda s: [hardlink("ln", f"../{s.name}/file")],
    "hardlink-etc-passwd": lambda s: [hardlink("ln", "/etc/passwd")],
    "hardlink-via-symlink": lambda s: [symlink("etc", "/etc"), hardlink("ln", "etc/passwd")],
    "hardlink-via-symlink-up": lambda s: [symlink("up", ".."), hardlink("ln", f"up/{s.name}/file")],
    "hardlink-dir": lambda s: [dir_("d"), hardlink("ln", "d")],
    "hardlink-missing": lambda s: [hardlink("ln", "nothing")],
    "whiteout-up": lambda s: [member("../.wh.x")],
    "whiteout-via-symlink": lambda s: [symlink("link", str(s)), member("link/.wh.x")],
    "opaque-via-symlink": lambda s: [symlink("link", str(s)), member("link/.wh..wh..opq")],
    "whiteout-of-dotdot": lambda s: [dir_("a"), member("a/.wh..."), member("a/.wh..")],
    "file-as-parent": lambda s: [member("f"), member("f/x")],
}


@pytest.mark.parametrize("overlay", [True, False], ids=["overlay", "vfs"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layers_are_refused(
    tmp_path: Path, root: Path, sentinel: Path, case: str, overlay: bool
) -> None:
    passwd = os.stat("/etc/passwd")
    before = snapshot(tmp_path, skip=root)
    with pytest.raises(CorruptContent, match=r"^layer member '.*'") as caught:
        apply(tar(*HOSTILE[case](sentinel)), root, overlay=overlay)
    assert "\n" not in str(caught.value)
    assert snapshot(tmp_path, skip=root) == before
    assert not os.path.lexists(f"/{ABSOLUTE}")
    after = os.stat("/etc/passwd")
    assert (after.st_ino, after.st_nlink, after.st_size, after.st_mtime_ns) == (
        passwd.st_ino, passwd.st_nlink, passwd.st_size, passwd.st_mtime_ns)  # fmt: skip


def test_nul_in_a_pax_path_is_refused(root: Path) -> None:
    records = pax_record(b"path", b"a\0b")
    pad = bytes(-len(records) % 512)
    layer = raw_header(b"pax", len(records), b"x") + records + pad + raw_header(b"a") + bytes(1024)
    with pytest.raises(CorruptContent, match="escapes the layer root"):
        apply(layer, root)
    assert os.listdir(root) == []


def test_oversized_extended_headers_are_refused(root: Path) -> None:
    records = pax_record(b"comment", b"x" * 600_000)
    pad = bytes(-len(records) % 512)
    pax = raw_header(b"pax", len(records), b"x") + records + pad
    with pytest.raises(CorruptContent, match="extended tar headers"):
        apply(pax + pax + raw_header(b"a") + bytes(1024), root)  # 1.2 MB of records for one member
    assert os.listdir(root) == []


def test_size_bomb_is_refused_before_writing(root: Path) -> None:
    header = raw_header(b"huge", size=1 << 40)  # announces 1 TiB, carries 4 KiB
    with pytest.raises(CorruptContent, match=r"'huge'.*layer expands beyond 1024 bytes \(a tar bomb\?\)"):
        apply(header + bytes(4096), root, max_bytes=1024)
    assert os.listdir(root) == []
    layer = tar(member("a", data=b"x" * 600), member("b", data=b"y" * 600))
    with pytest.raises(CorruptContent, match=r"'b'.*tar bomb"):
        apply(layer, root, overlay=False, max_bytes=1000)
    assert not (root / "b").exists()


def test_entry_bomb_is_refused(root: Path) -> None:
    layer = tar(*(member(f"f{i}") for i in range(11)))
    with pytest.raises(CorruptContent, match=r"'f10'.*more than 10 members"):
        apply(layer, root, max_entries=10)
    assert len(os.listdir(root)) == 10


def test_broken_streams(root: Path) -> None:
    good = tar(member("f", data=b"x" * 2000))
    broken = bytearray(good)
    broken[100] ^= 1  # the mode field: the checksum no longer matches
    with pytest.raises(CorruptContent, match="'f' has a broken tar header"):
        apply(bytes(broken), root)
    with pytest.raises(CorruptContent, match="ends inside the data of member 'f'"):
        apply(good[:1024], root)
    with pytest.raises(CorruptContent, match="unsupported tar type"):
        apply(raw_header(b"vol", kind=b"V") + bytes(1024), root)


# --- the stream --------------------------------------------------------------------------------


class CountingReader(io.RawIOBase):
    """A non-seekable stream that counts the bytes handed out, in odd-sized short reads."""

    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), 7777, len(self.data) - self.offset)
        buffer[:n] = self.data[self.offset : self.offset + n]
        self.offset += n
        return n


def test_stream_is_read_to_its_end(root: Path) -> None:
    data = tar(member("a", data=os.urandom(3 << 20)), member("b", data=b"small")) + bytes(50_000)
    reader = CountingReader(data)
    stats = apply_layer(reader, str(root), overlay=True)  # type: ignore[arg-type]
    assert reader.offset == len(data)
    assert stats == LayerStats(files=2, size=(3 << 20) + 5)
    assert (root / "a").read_bytes() == data[512 : 512 + (3 << 20)]
