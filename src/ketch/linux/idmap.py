"""Idmapped mounts: a user namespace that carries a mapping, and trees remounted through it.

A file that is owned by id N on disk shows through an idmapped mount as the host id that N maps
to, so a container whose user namespace has the same mapping sees it as N again. This is how
image layers are shared, unchanged, by containers with and without a user namespace.
"""

from __future__ import annotations

import os

from ketch.linux import syscalls as sc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    Ranges = Sequence[tuple[int, int, int]]  # (container id, host id, size), as in /proc/<pid>/uid_map


def _map_text(ranges: Ranges) -> str:
    return "".join(f"{inside} {outside} {size}\n" for inside, outside, size in ranges)


def userns_fd(uid_map: Ranges, gid_map: Ranges) -> int:
    """An O_RDONLY fd of a new user namespace with these mappings, owned by nothing else.

    A child unshares the namespace and waits; we write its maps, open /proc/<child>/ns/user, and
    let it exit: the fd keeps the namespace alive. The child only unshares and waits on a pipe
    (nothing that needs a lock another thread of ours could hold), and the map is written whole."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # never returns
        code = 1
        try:
            os.close(ready_r)
            os.close(go_w)
            try:
                sc.unshare(sc.CLONE_NEWUSER)
            except OSError as exc:
                os.write(ready_w, str(exc.errno).encode())
                raise
            os.write(ready_w, b"u")
            os.read(go_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(go_r)
    try:
        answer = os.read(ready_r, 16)
        if answer != b"u":
            err = int(answer) if answer.isdigit() else 0
            raise OSError(err, f"cannot create a user namespace for an idmapped mount: {os.strerror(err)}")
        for kind, ranges in (("uid", uid_map), ("gid", gid_map)):
            with open(f"/proc/{pid}/{kind}_map", "w") as f:
                f.write(_map_text(ranges))
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(go_w)  # the child's read returns: it exits
        os.waitpid(pid, 0)


def clone(path: str, userns: int, recursive: bool = False) -> int:
    """A detached copy of the mount tree at `path`, idmapped through user namespace fd `userns`."""
    flags = sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC | (sc.AT_RECURSIVE if recursive else 0)
    fd = sc.open_tree(path, flags)
    try:
        sc.mount_setattr_idmap(fd, userns, recursive)
    except BaseException:
        os.close(fd)
        raise
    return fd


def mount(path: str, target: str, userns: int, recursive: bool = False) -> None:
    """Mount `path` at `target` through an idmapping (a bind mount whose owners are translated)."""
    fd = clone(path, userns, recursive)
    try:
        sc.move_mount(fd, target)
    finally:
        os.close(fd)
