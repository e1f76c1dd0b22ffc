"""The build context: a directory (or an unpacked tarball), its .dockerignore, and COPY sources.

Every source path is resolved inside a root by hand, one component at a time with lstat: `..`
stops at the root and a symlink's target is resolved again from the root (an absolute one from
the root itself), so neither the context nor a stage's rootfs can hand out a file outside it.
Files excluded by .dockerignore are not in the context at all.
"""

from __future__ import annotations

import os
import stat

from ketch.build.ignore import IgnoreRules, clean
from ketch.errors import InvalidArgument, NotFound

_MAX_LINKS = 40
WILDCARDS = frozenset("*?[")


class Source:
    """One file, directory or symlink to copy: where it is (`path`, already safe) and where it
    goes, relative to the destination (`name`)."""

    __slots__ = ("name", "path", "st")

    def __init__(self, path: str, name: str, st: os.stat_result) -> None:
        self.path, self.name, self.st = path, name, st


class Root:
    """A directory tree whose paths are resolved without ever leaving it."""

    def __init__(self, path: str, ignore: IgnoreRules | None = None) -> None:
        self.path = path
        self.ignore = ignore or IgnoreRules()

    def resolve(self, rel: str, follow_last: bool = True) -> str:
        """The real path of `rel` inside the root (symlinks resolved inside it); NotFound if missing."""
        parts = [p for p in clean("/" + rel).split("/") if p]
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            here = os.path.join(self.path, *done, part)
            try:
                st = os.lstat(here)
            except FileNotFoundError:
                raise NotFound(f"{rel}: no such file or directory") from None
            if stat.S_ISLNK(st.st_mode) and (parts or follow_last):
                hops += 1
                if hops > _MAX_LINKS:
                    raise InvalidArgument(f"{rel}: too many levels of symbolic links")
                target = os.readlink(here)
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p and p != "."] + parts
                continue
            done.append(part)
        return os.path.join(self.path, *done)

    def relative(self, real: str) -> str:
        return os.path.relpath(real, self.path) if real != self.path else "."

    def glob(self, pattern: str) -> list[str]:
        """Context-relative paths matching a COPY source pattern (Go's filepath.Match per component)."""
        import fnmatch

        want = [p for p in clean("/" + pattern).split("/") if p]
        found: list[str] = []

        def walk(rel: str, depth: int) -> None:
            directory = self.resolve(rel) if rel else self.path
            try:
                names = sorted(os.listdir(directory))
            except (NotADirectoryError, FileNotFoundError):
                return
            for name in names:
                child = f"{rel}/{name}" if rel else name
                if self.ignore.excluded(child) or not fnmatch.fnmatchcase(name, want[depth]):
                    continue
                if depth + 1 == len(want):
                    found.append(child)
                elif os.path.isdir(os.path.join(directory, name)):
                    walk(child, depth + 1)

        if want:
            walk("", 0)
        return found

    def sources(self, pattern: str) -> list[Source]:
        """What one COPY source names: a file, a directory's contents (recursively), or every match
        of a wildcard pattern (a matched directory keeps its name, as Docker copies it); NotFound
        when nothing matches."""
        rel = clean("/" + pattern).lstrip("/")
        wild = any(c in WILDCARDS for c in rel)
        matches = self.glob(rel) if wild else [rel or "."]
        out: list[Source] = []
        for match in matches:
            if match != "." and self.ignore.excluded(match) and not self._has_included(match):
                continue
            try:
                real = self.resolve(match)
            except NotFound:
                if wild:
                    continue
                raise NotFound(f'"{pattern}": not found') from None
            st = os.stat(real)
            if stat.S_ISDIR(st.st_mode):
                out += self._tree(real, "")
            else:
                out.append(
                    Source(real, os.path.basename(match) if match != "." else os.path.basename(real), st)
                )
        if not matches or (not out and not wild and rel not in ("", ".")):
            raise NotFound(f"no source files were specified matching {pattern}")
        return out

    def _has_included(self, rel: str) -> bool:
        return self.ignore.may_contain_included(rel)

    def _tree(self, top: str, prefix: str) -> list[Source]:
        """A directory's entries (not the directory itself), named relative to it under `prefix`;
        symlinks are kept as symlinks, so the walk never leaves the directory."""
        out: list[Source] = []

        def walk(directory: str) -> None:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
            for entry in entries:
                in_context = os.path.relpath(entry.path, self.path)
                st = entry.stat(follow_symlinks=False)
                is_dir = stat.S_ISDIR(st.st_mode)
                excluded = self.ignore.excluded(in_context)
                if excluded and not (is_dir and self.ignore.may_contain_included(in_context)):
                    continue
                name = os.path.relpath(entry.path, top)
                if not excluded:
                    out.append(Source(entry.path, f"{prefix}/{name}" if prefix else name, st))
                if is_dir:
                    walk(entry.path)

        walk(top)
        return out


def content_hash(sources: list[Source], extra: str = "") -> str:
    """A digest of what the sources hold: names, types, modes, link targets and file contents,
    not times (Docker's COPY cache key ignores mtimes)."""
    import hashlib

    h = hashlib.sha256(extra.encode())
    for src in sources:
        st = src.st
        h.update(f"\0{src.name}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(src.path).encode())
        elif stat.S_ISREG(st.st_mode):
            with open(src.path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()
