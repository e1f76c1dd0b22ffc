"""Snapshots: read-only layers stacked with overlayfs under a writable container layer; vfs copies as fallback.

Layout of `root` (Docker's overlay2 habits):

    driver                  the driver this root is laid out for ("overlay" or "vfs"); the probe's cache
    lock                    flock'd while the directories below change shape
    layers/<hex>/diff/      a layer's files (vfs: the full merged tree of the layer and its parents)
    layers/<hex>/parent     the parent's chain id ("" for a base layer)
    layers/<hex>/size       the size the caller reported at commit
    layers/<hex>/link       overlay: the layer's short name under l/
    layers/<hex>/lower      overlay: the parents' short links, uppermost first ("l/AAA:l/BBB")
    l/<26 chars> -> ../layers/<hex>/diff
    containers/<name>/      diff/ (writable), parent; overlay also work/ and lower
    empty/                  overlay: the lowerdir of a container without a parent
    tmp/<kind>-<random>/    stagings, removals, probes; each flock'd by its owner while alive
    tmp/idmap-<random>/N    overlay: the idmapped mounts of a mount's lower layers, for its duration

Mounts are made from `root` with relative paths through the short links, so 128 lower layers fit in
the one page mount(2) copies. Something becomes visible only by the rename of a finished directory
from tmp/; a tmp/ entry whose owner died (its flock is free) is stale and is removed by the next
staging or removal, with any l/ link left dangling by a crash.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys

from ketch.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, SetupFailed, Unsupported
from ketch.files import FileLock, atomic_write

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.oci.runtime import Mount

DRIVERS = ("overlay", "vfs")
_HEX = frozenset("0123456789abcdef")  # sets, not regexes: re costs ~5 ms to import and compile
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_CHARS = _ALNUM | frozenset("_.+-")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_LINK_LENGTH = 26  # Docker's: (26 + len("l/:")) * 128 lowers leave room in a 4096-byte page


def _short_id() -> str:
    """26 random [A-Z0-9] characters (rejection sampling keeps them uniform)."""
    out: list[str] = []
    while len(out) < _LINK_LENGTH:
        out.extend(_ALPHABET[b % 36] for b in os.urandom(32) if b < 252)
    return "".join(out[:_LINK_LENGTH])


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def _write(path: str, text: str) -> None:
    """A plain write: the files written this way sit in a tmp/ directory nobody sees until its rename."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _mkdir(path: str, mode: int = 0o755) -> None:
    os.mkdir(path)
    os.chmod(path, mode)  # not left to the umask: the merged root takes its mode from diff/


def _rmtree(path: str) -> None:
    """Remove a tree without following symlinks out, through overlay's 000-mode work/ dirs too."""
    import shutil  # lazily: it pulls in re (~5 ms)

    tried: set[str] = set()

    def retry(_func: Any, failed: str, exc: BaseException) -> None:
        if isinstance(exc, FileNotFoundError):
            return
        if not isinstance(exc, PermissionError) or failed in tried:
            raise exc
        # root without CAP_DAC_OVERRIDE (in a user namespace) cannot enter or empty a 000-mode dir
        tried.add(failed)
        os.chmod(os.path.dirname(failed), 0o700)
        if stat.S_ISDIR(os.lstat(failed).st_mode):
            os.chmod(failed, 0o700)
            remove(failed)
        else:
            os.unlink(failed)

    def remove(top: str) -> None:
        if sys.version_info >= (3, 12):
            shutil.rmtree(top, onexc=retry)
        else:
            shutil.rmtree(top, onerror=lambda func, p, info: retry(func, p, info[1]))

    remove(path)


def _remove_stale(path: str) -> None:
    """Remove a dead owner's tmp/ dir. An idmap dir may still have layers mounted on its entries:
    those are detached and the entries only rmdir'd, never emptied (that would empty the layers)."""
    if not os.path.basename(path).startswith("idmap-"):
        _rmtree(path)
        return
    _detach_points(path)
    for entry in os.listdir(path):
        point = os.path.join(path, entry)
        if os.path.isdir(point) and not os.path.islink(point):
            os.rmdir(point)
        else:
            os.unlink(point)
    os.rmdir(path)


def _detach_points(path: str) -> None:
    from ketch.linux import syscalls

    for entry in os.listdir(path):
        try:
            syscalls.umount(os.path.join(path, entry), syscalls.MNT_DETACH | syscalls.UMOUNT_NOFOLLOW)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOENT):
                raise


def _lock_dir(path: str, wait: bool) -> int | None:
    """An fd holding an flock on directory `path`, or None when another live process holds it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _is_hex64(text: str) -> bool:
    return len(text) == 64 and _HEX.issuperset(text)


def _is_name(name: str) -> bool:
    return 0 < len(name) <= 128 and name[0] in _ALNUM and _NAME_CHARS.issuperset(name)


def _check_key(key: str) -> str:
    """The hex part of a chain id, which names the layer's directory."""
    if not (key.startswith("sha256:") and _is_hex64(key[7:])):
        raise InvalidArgument(f"invalid layer key {key!r}: expected sha256:<64 hex digits>")
    return key[7:]


def _check_name(name: str) -> None:
    if not _is_name(name):
        raise InvalidArgument(
            f"invalid snapshot name {name!r}: use up to 128 letters, digits, '_', '.', '+', '-'"
        )


def _copy_tree(src: str, dst: str) -> None:
    import subprocess

    cmd = ["cp", "-a", "--reflink=auto", "-T", src, dst]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["exit status " + str(done.returncode)])[-1]
        raise SetupFailed(f"cannot copy {src}: {last}")


def _mount_error(name: str, target: str, exc: OSError, layer: str = "") -> SetupFailed:
    what = f" (idmapping {layer})" if layer else ""
    return SetupFailed(
        f"cannot mount snapshot {name} on {target}{what}: {os.strerror(exc.errno or 0)}", exc.errno
    )


class Staged:
    """A layer being unpacked into `path`; `commit(size)` publishes it, `abort()` (or an error) drops it."""

    def __init__(self, owner: Snapshots, key: str, parent: str | None, tmp: str, fd: int) -> None:
        self.key = key
        self.parent = parent
        self.path = os.path.join(tmp, "diff")
        self.overlay = owner.driver == "overlay"  # unpack whiteouts as 0/0 char devices, not deletions
        self._owner = owner
        self._tmp = tmp
        self._fd = fd

    def commit(self, size: int) -> None:
        """Make the staged tree the layer `key`; if another process made it first, drop ours."""
        if self._fd < 0:
            raise Conflict(f"staged layer {self.key} was already committed or aborted")
        if size < 0:
            raise InvalidArgument(f"invalid layer size {size}")
        try:
            self._owner._publish_layer(self._tmp, self.key, self.parent, size)
        finally:
            self.abort()

    def abort(self) -> None:
        """Remove what was staged (nothing is left once commit renamed it away)."""
        if self._fd < 0:
            return
        try:
            if os.path.lexists(self._tmp):
                _rmtree(self._tmp)
        finally:
            os.close(self._fd)  # drops the flock that marked the staging as alive
            self._fd = -1

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.abort()


class Snapshots:
    """Read-only layers keyed by chain id and writable container snapshots on top, under `root`."""

    def __init__(self, root: str, driver: str = "auto") -> None:
        if driver not in (*DRIVERS, "auto"):
            raise InvalidArgument(f"unknown snapshot driver {driver!r}: use overlay, vfs or auto")
        self.root = os.path.abspath(root)
        os.makedirs(self.root, 0o700, exist_ok=True)
        for sub in ("layers", "l", "containers", "tmp", "empty"):
            os.makedirs(os.path.join(self.root, sub), 0o700 if sub == "tmp" else 0o755, exist_ok=True)
        self._tmp = os.path.join(self.root, "tmp")
        self._lock = os.path.join(self.root, "lock")
        self.driver = self._choose_driver(driver)

    # --- driver ---------------------------------------------------------------------------------

    def _choose_driver(self, wanted: str) -> str:
        """The driver recorded for this root, else `wanted` (auto: probed once) recorded now."""
        path = os.path.join(self.root, "driver")
        recorded = _read(path) if os.path.exists(path) else ""
        if not recorded:
            choice = wanted if wanted != "auto" else ("overlay" if self._probe_overlay() else "vfs")
            with FileLock(self._lock):
                recorded = _read(path) if os.path.exists(path) else ""  # a concurrent start may have won
                if not recorded:
                    atomic_write(path, f"{choice}\n".encode())
                    recorded = choice
        if wanted not in ("auto", recorded):
            raise Conflict(
                f"{self.root} holds {recorded} snapshots; it cannot be used with the {wanted} driver"
            )
        return recorded

    def _probe_overlay(self) -> bool:
        """Whether overlayfs mounts here and can make whiteouts (not on overlay, NFS, old kernels)."""
        from ketch.linux import syscalls

        tmp, fd = self._begin("probe", None)
        try:
            lower, upper, work, merged = (os.path.join(tmp, d) for d in ("lower", "upper", "work", "merged"))
            for d in (lower, upper, work, merged):
                _mkdir(d)
            _write(os.path.join(lower, "probe"), "")
            try:
                syscalls.mount(
                    "overlay", merged, "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}"
                )
            except OSError:
                return False
            try:
                os.unlink(os.path.join(merged, "probe"))
                return stat.S_ISCHR(os.lstat(os.path.join(upper, "probe")).st_mode)
            except OSError:
                return False
            finally:
                syscalls.umount(merged, syscalls.MNT_DETACH)
        finally:
            _rmtree(tmp)
            os.close(fd)

    # --- paths and bookkeeping --------------------------------------------------------------------

    def _layer_path(self, key: str) -> str:
        return os.path.join(self.root, "layers", _check_key(key))

    def _container_path(self, name: str) -> str:
        _check_name(name)
        return os.path.join(self.root, "containers", name)

    def _existing_container(self, name: str) -> str:
        path = self._container_path(name)
        if not os.path.isdir(path):
            raise NotFound(f"no snapshot named {name}")
        return path

    def _begin(self, kind: str, parent: str | None, need_parent: bool = True) -> tuple[str, int]:
        """A fresh flock'd tmp/ dir whose `parent` file pins the parent layer until it is done."""
        with FileLock(self._lock):
            self._clean_stale()
            if need_parent and parent is not None and not self.has_layer(parent):
                raise NotFound(f"no layer {parent}")
            tmp = os.path.join(self._tmp, f"{kind}-{_short_id()}")
            os.mkdir(tmp, 0o700)
            fd = _lock_dir(tmp, wait=True)
            assert fd is not None
            try:
                _write(os.path.join(tmp, "parent"), parent or "")
            except BaseException:
                _rmtree(tmp)
                os.close(fd)
                raise
        return tmp, fd

    def _clean_stale(self) -> None:
        """Remove tmp/ dirs of dead owners and the l/ links they left dangling (lock held)."""
        stale: list[tuple[str, int]] = []
        try:
            for entry in os.scandir(self._tmp):
                try:
                    fd = _lock_dir(entry.path, wait=False)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    os.unlink(entry.path)  # not ours: only directories are made here
                    continue
                if fd is not None:
                    stale.append((entry.path, fd))
            if stale:  # a dangling link only ever comes with a stale tmp/ dir: commit and remove crashed
                for link in os.scandir(os.path.join(self.root, "l")):
                    if link.is_symlink() and not os.path.exists(link.path):
                        os.unlink(link.path)
                for path, _fd in stale:
                    _remove_stale(path)
        finally:
            for _path, fd in stale:
                os.close(fd)

    def _retire(self, path: str) -> tuple[str, int]:
        """Move `path` into tmp/ (gone from view at once) for removal outside the lock (lock held)."""
        doomed = os.path.join(self._tmp, f"remove-{_short_id()}")
        os.rename(path, doomed)
        fd = _lock_dir(doomed, wait=True)
        assert fd is not None
        try:
            os.unlink(os.path.join(doomed, "parent"))  # it no longer pins its parent
        except FileNotFoundError:
            pass
        return doomed, fd

    def _user_of(self, key: str) -> str | None:
        """What has layer `key` as its parent, if anything (lock held, stale tmp/ dirs already gone)."""
        for kind, sub in (("layer", "layers"), ("snapshot", "containers"), ("staging", "tmp")):
            base = os.path.join(self.root, sub)
            for entry in os.listdir(base):
                try:
                    parent = _read(os.path.join(base, entry, "parent"))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if parent == key:
                    child = f"sha256:{entry}" if kind == "layer" else entry
                    return f"{kind} {child}"
        return None

    def _lowers(self, parent: str | None) -> list[str]:
        """The overlay lowerdirs of something stacked on `parent`, uppermost first, as l/ links."""
        if parent is None:
            return []
        path = self._layer_path(parent)
        below = _read(os.path.join(path, "lower"))
        return [f"l/{_read(os.path.join(path, 'link'))}", *(below.split(":") if below else [])]

    # --- read-only layers ---------------------------------------------------------------------------

    def has_layer(self, key: str) -> bool:
        return os.path.isdir(self._layer_path(key))

    def layer_dir(self, key: str) -> str:
        """The directory holding the layer's files (its diff/)."""
        path = self._layer_path(key)
        if not os.path.isdir(path):
            raise NotFound(f"no layer {key}")
        return os.path.join(path, "diff")

    def layer_size(self, key: str) -> int:
        """The unpacked size recorded when the layer was committed."""
        path = self._layer_path(key)
        if not os.path.isdir(path):
            raise NotFound(f"no layer {key}")
        return int(_read(os.path.join(path, "size")) or 0)

    def parent(self, name: str) -> str | None:
        """The layer a container snapshot stands on (None for an empty rootfs)."""
        return _read(os.path.join(self._existing_container(name), "parent")) or None

    def layers(self) -> list[str]:
        names = os.listdir(os.path.join(self.root, "layers"))
        return sorted(f"sha256:{n}" for n in names if _is_hex64(n))

    def stage_layer(self, key: str, parent: str | None) -> Staged:
        """A place to unpack layer `key`: empty (overlay) or a copy of the parent's tree (vfs).

        An overlay layer does not need its parent until commit, so a pull unpacks layers in
        parallel and commits them bottom-up; a vfs layer starts from its parent's tree."""
        _check_key(key)
        if parent == key:
            raise InvalidArgument(f"layer {key} cannot be its own parent")
        tmp, fd = self._begin("stage", parent, need_parent=self.driver != "overlay")
        staged = Staged(self, key, parent, tmp, fd)
        try:
            if self.driver == "vfs" and parent is not None:
                _copy_tree(self.layer_dir(parent), staged.path)
            else:
                _mkdir(staged.path)
        except BaseException:
            staged.abort()
            raise
        return staged

    def _publish_layer(self, tmp: str, key: str, parent: str | None, size: int) -> None:
        """Write the metadata, then rename tmp/ into layers/: the last step, so a crash shows nothing."""
        final = self._layer_path(key)
        with FileLock(self._lock):
            if os.path.isdir(final):
                return  # another process won the race; the caller drops our copy
            if parent is not None and not self.has_layer(parent):
                raise NotFound(f"cannot commit layer {key}: its parent {parent} is missing")
            _write(os.path.join(tmp, "size"), str(size))
            if self.driver != "overlay":
                os.rename(tmp, final)
                return
            link = self._new_link()
            _write(os.path.join(tmp, "link"), link)
            _write(os.path.join(tmp, "lower"), ":".join(self._lowers(parent)))
            # dangling until the rename; a crash in between leaves it to _clean_stale with our tmp dir
            link_path = os.path.join(self.root, "l", link)
            os.symlink(f"../layers/{os.path.basename(final)}/diff", link_path)
            try:
                os.rename(tmp, final)
            except BaseException:
                os.unlink(link_path)  # our tmp dir is about to go: nothing else would find this link
                raise

    def _new_link(self) -> str:
        while True:
            link = _short_id()
            if not os.path.lexists(os.path.join(self.root, "l", link)):
                return link

    def remove_layer(self, key: str) -> None:
        """Remove layer `key`; Conflict while a layer or snapshot (or a staging) is stacked on it."""
        path = self._layer_path(key)
        with FileLock(self._lock):
            self._clean_stale()
            if not os.path.isdir(path):
                raise NotFound(f"no layer {key}")
            user = self._user_of(key)
            if user is not None:
                raise Conflict(f"layer {key} is the parent of {user}")
            doomed, fd = self._retire(path)
            if self.driver == "overlay":
                try:
                    os.unlink(os.path.join(self.root, "l", _read(os.path.join(doomed, "link"))))
                except FileNotFoundError:
                    pass
        try:
            _rmtree(doomed)
        finally:
            os.close(fd)

    # --- container snapshots ----------------------------------------------------------------------

    def prepare(self, name: str, parent: str | None, root_owner: tuple[int, int] | None = None) -> None:
        """A writable snapshot `name` over layer `parent` (None: an empty rootfs). `root_owner`:
        the host uid and gid of a user namespace's root, for a snapshot mounted idmapped (see
        mount): overlay's upper directory, which is not idmapped, is made theirs."""
        final = self._container_path(name)
        if os.path.lexists(final):
            raise AlreadyExists(f"snapshot {name} already exists")
        tmp, fd = self._begin("prepare", parent)
        try:
            self._fill_snapshot(tmp, name, parent)
            if root_owner is not None and self.driver == "overlay":
                os.chown(os.path.join(tmp, "diff"), *root_owner)
            with FileLock(self._lock):
                if os.path.lexists(final):
                    raise AlreadyExists(f"snapshot {name} already exists")
                os.rename(tmp, final)
        finally:
            try:
                if os.path.lexists(tmp):
                    _rmtree(tmp)
            finally:
                os.close(fd)

    def _fill_snapshot(self, tmp: str, name: str, parent: str | None) -> None:
        diff = os.path.join(tmp, "diff")
        if self.driver == "vfs":
            if parent is None:
                _mkdir(diff)
            else:
                _copy_tree(self.layer_dir(parent), diff)
            return
        lowers = self._lowers(parent)
        self._overlay_options(name, lowers)  # refuse a stack too deep to mount before making it
        _mkdir(diff)
        _mkdir(os.path.join(tmp, "work"), 0o700)
        _write(os.path.join(tmp, "lower"), ":".join(lowers))

    def _overlay_options(self, name: str, lowers: list[str]) -> tuple[str, ...]:
        base = f"containers/{name}"
        options = (f"lowerdir={':'.join(lowers) or 'empty'}", f"upperdir={base}/diff", f"workdir={base}/work")
        if len(",".join(options)) >= os.sysconf("SC_PAGESIZE"):  # mount(2) copies one page of options
            raise Unsupported(f"{len(lowers)} layers are too many to mount with overlay")
        return options

    def mount_spec(self, name: str) -> tuple[Mount, str]:
        """The Mount making snapshot `name` a rootfs, and the directory to chdir to before mounting."""
        from ketch.oci.runtime import Mount

        path = self._existing_container(name)
        if self.driver == "vfs":
            return Mount("/", "bind", os.path.join(path, "diff"), ("rbind",)), self.root
        lower = _read(os.path.join(path, "lower"))
        options = self._overlay_options(name, lower.split(":") if lower else [])
        return Mount("/", "overlay", "overlay", options), self.root

    def mount(self, name: str, target: str, userns: int = -1) -> None:
        """Mount snapshot `name` at `target`; the cwd is changed for the call (not thread-safe).

        With `userns` (a user namespace's fd) the layers are idmapped through its mapping: a file
        the image gives to uid N shows as the host id N maps to, so a container with the same
        mapping sees N, and no layer is copied or chowned. overlay's upper directory is not
        idmapped: what the container writes is stored with host ids, as Docker's remapped
        storage holds it. vfs idmaps its whole copy (on disk it keeps the container's ids)."""
        from ketch.linux import syscalls

        spec, cwd = self.mount_spec(name)
        target = os.path.abspath(target)
        if userns >= 0:
            self._mount_idmapped(name, spec, target, userns)
            return
        flags = syscalls.MS_BIND | syscalls.MS_REC if spec.type == "bind" else 0
        data = None if spec.type == "bind" else ",".join(spec.options)
        fstype = None if spec.type == "bind" else spec.type
        self._mount_in(cwd, name, spec.source, target, fstype, flags, data)

    def _mount_in(
        self, cwd: str, name: str, source: str, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        from ketch.linux import syscalls

        old = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # survives a deleted cwd
        try:
            os.chdir(cwd)  # the lowerdirs are relative to it, to fit in one page
            syscalls.mount(source, target, fstype, flags, data)
        except OSError as exc:
            raise _mount_error(name, target, exc) from exc
        finally:
            os.fchdir(old)
            os.close(old)

    def _mount_idmapped(self, name: str, spec: Mount, target: str, userns: int) -> None:
        """containerd's and podman's way: each lower layer idmapped (open_tree + mount_setattr) and
        attached under a tmp/ dir just long enough for overlay to take its own reference."""
        from ketch.linux import idmap

        if spec.type == "bind":
            try:
                idmap.mount(spec.source, target, userns, recursive=True)
            except OSError as exc:
                raise _mount_error(name, target, exc) from exc
            return
        path = self._existing_container(name)
        lower = _read(os.path.join(path, "lower"))
        lowers = lower.split(":") if lower else ["empty"]
        tmp, fd = self._begin("idmap", None)
        try:
            for i, layer in enumerate(lowers):
                os.mkdir(os.path.join(tmp, str(i)))
                try:
                    idmap.mount(os.path.join(self.root, layer), os.path.join(tmp, str(i)), userns)
                except OSError as exc:
                    raise _mount_error(name, target, exc, layer) from exc
            up = f"../../containers/{name}"  # relative to tmp, as the lowers are
            options = (
                f"lowerdir={':'.join(map(str, range(len(lowers))))},upperdir={up}/diff,workdir={up}/work"
            )
            self._mount_in(tmp, name, "overlay", target, "overlay", 0, options)
        finally:
            try:
                _remove_stale(tmp)  # overlay holds the layers now: the mounts under tmp go
            finally:
                os.close(fd)

    def unmount(self, target: str) -> None:
        """Unmount a snapshot mounted at `target`, detaching it lazily if it is busy."""
        from ketch.linux import syscalls

        try:
            try:
                syscalls.umount(target)
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                syscalls.umount(target, syscalls.MNT_DETACH)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):
                raise NotFound(f"nothing is mounted on {target}") from exc
            raise SetupFailed(f"cannot unmount {target}: {os.strerror(exc.errno or 0)}", exc.errno) from exc

    def upper_dir(self, name: str) -> str:
        """The snapshot's writable directory: all the container changed, with whiteouts (overlay)."""
        return os.path.join(self._existing_container(name), "diff")

    def remove(self, name: str) -> None:
        """Remove snapshot `name`; the caller makes sure it is no longer mounted."""
        path = self._container_path(name)
        with FileLock(self._lock):
            self._clean_stale()
            if not os.path.isdir(path):
                raise NotFound(f"no snapshot named {name}")
            doomed, fd = self._retire(path)
        try:
            _rmtree(doomed)
        finally:
            os.close(fd)

    def snapshots(self) -> list[str]:
        return sorted(n for n in os.listdir(os.path.join(self.root, "containers")) if _is_name(n))
