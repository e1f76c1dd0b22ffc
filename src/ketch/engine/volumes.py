"""Volumes: `<root>/volumes/<name>/` with the data in `_data/` and Docker's metadata in `volume.json`.

    <root>/volumes/<name>/_data         what containers mount (see ketch.engine.bundle)
    <root>/volumes/<name>/volume.json   Name, Driver, Labels, Options, CreatedAt
    <root>/volumes/.creating-<random>/  a volume being made: renamed to <name> once complete
    <root>/volumes/.removing-<random>/  a volume being deleted: renamed away first, then removed

`run -v name:/x` (and anonymous volumes) create `<name>/_data` without metadata: such a volume is
described from defaults (CreatedAt from its directory's mtime; anonymous when its name is 64 hex
digits, as `run` names them) and the description is written down the first time it is read.
A volume is in use while any container, running or not, names it or holds it as an anonymous
volume; Docker refuses to remove those, even with --force.
"""

from __future__ import annotations

import errno
import os
import re
import time

from ketch import jsonio
from ketch.errors import Conflict, InvalidArgument, NotFound, Unsupported
from ketch.files import atomic_write
from ketch.record import Record, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.engine.context import Context

ANONYMOUS_LABEL = "com.docker.volume.anonymous"  # Docker (23+) marks anonymous volumes with it
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_STALE = 600.0  # seconds after which a crashed `.creating-` directory is swept by prune


class Volume(Record):
    name: str
    mountpoint: str
    created_at: str
    driver: str = "local"
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] | None = None

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in self.labels

    def to_json(self) -> dict[str, Any]:
        """`docker volume inspect`'s document."""
        return {
            "CreatedAt": self.created_at, "Driver": self.driver, "Labels": dict(self.labels),
            "Mountpoint": self.mountpoint, "Name": self.name,
            "Options": None if self.options is None else dict(self.options), "Scope": "local",
        }  # fmt: skip


def directory(ctx: Context) -> str:
    path = os.path.join(ctx.root, "volumes")
    os.makedirs(path, exist_ok=True)
    return path


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def _created_at(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# --- create ----------------------------------------------------------------------------------------


def create(
    ctx: Context,
    name: str = "",
    labels: dict[str, str] | None = None,
    driver: str = "local",
    options: dict[str, str] | None = None,
) -> Volume:
    """Docker's `volume create`: a new volume, or the existing one of that name (as Docker does).
    Under userns-remap its _data belongs to the remapped root, as Docker's does."""
    from ketch.engine import userns
    from ketch.engine.options import _check_volume_name

    if driver not in ("", "local"):
        raise Unsupported(f"volume driver {driver!r} is not supported: only the local driver is")
    for key in options or {}:
        raise Unsupported(f"volume option {key!r} is not supported: the local driver here takes no options")
    name = name or os.urandom(32).hex()
    _check_volume_name(name)
    remapped = userns.remap(ctx.root)
    top = directory(ctx)
    tmp = os.path.join(top, f".creating-{os.urandom(8).hex()}")
    os.mkdir(tmp, 0o755)
    try:
        os.mkdir(os.path.join(tmp, "_data"), 0o755)
        if remapped is not None:
            os.chown(os.path.join(tmp, "_data"), *remapped.root)
        volume = Volume(name, os.path.join(top, name, "_data"), _created_at(time.time()),
                        labels=dict(labels or {}), options={})  # fmt: skip
        _write(tmp, volume)
        os.rename(tmp, os.path.join(top, name))  # a complete volume appears at once, or not at all
    except OSError as exc:
        _remove_tree(tmp)
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        return get(ctx, name)  # taken: Docker returns the volume that exists
    return volume


def _write(path: str, volume: Volume) -> None:
    atomic_write(os.path.join(path, "volume.json"), _metadata(volume), 0o600)


def _metadata(volume: Volume) -> bytes:
    doc = {"Name": volume.name, "Driver": volume.driver, "Labels": volume.labels,
           "Options": volume.options, "CreatedAt": volume.created_at}  # fmt: skip
    return jsonio.dumps(doc).encode()


# --- reading ---------------------------------------------------------------------------------------


def get(ctx: Context, name: str) -> Volume:
    if not valid_name(name):
        raise NotFound(f"get {name}: no such volume")
    path = os.path.join(directory(ctx), name)
    try:
        with open(os.path.join(path, "volume.json"), "rb") as f:
            doc = jsonio.loads(f.read())
    except FileNotFoundError:
        return _implicit(path, name)
    except (NotADirectoryError, ValueError):
        raise NotFound(f"get {name}: no such volume") from None
    return Volume(name, os.path.join(path, "_data"), str(doc.get("CreatedAt") or ""),
                  driver=str(doc.get("Driver") or "local"), labels=dict(doc.get("Labels") or {}),
                  options=doc.get("Options"))  # fmt: skip


def _implicit(path: str, name: str) -> Volume:
    """A volume `run` made (no metadata): its defaults, written down if nobody did meanwhile."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        raise NotFound(f"get {name}: no such volume") from None
    import stat

    if not stat.S_ISDIR(st.st_mode):
        raise NotFound(f"get {name}: no such volume")
    labels = {ANONYMOUS_LABEL: ""} if _HEX64.fullmatch(name) else {}
    volume = Volume(name, os.path.join(path, "_data"), _created_at(st.st_mtime), labels=labels)
    _write_once(path, volume)
    return volume


def _write_once(path: str, volume: Volume) -> None:
    """Write volume.json unless it exists: a `volume create` racing with us keeps its own."""
    tmp = os.path.join(path, f".volume.json.{os.getpid()}")
    try:
        atomic_write(tmp, _metadata(volume), 0o600)
        try:
            os.link(tmp, os.path.join(path, "volume.json"))
        finally:
            os.unlink(tmp)
    except OSError:
        pass  # exists already, removed meanwhile, or a read-only root: the defaults still hold


def names(ctx: Context) -> list[str]:
    return [n for n in os.listdir(directory(ctx)) if valid_name(n)]


def list_volumes(ctx: Context) -> list[Volume]:
    """Every volume, by name in natural order (as `docker volume ls` sorts them)."""
    out = []
    for name in names(ctx):
        try:
            out.append(get(ctx, name))
        except NotFound:
            continue  # removed meanwhile
    out.sort(key=lambda v: natural_key(v.name))
    return out


def natural_key(text: str) -> list[tuple[int, str]]:
    return [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", text) if part]


def users(ctx: Context) -> dict[str, list[str]]:
    """Volume name -> the IDs of the containers (running or not) that use it."""
    from ketch.engine.create import options_from_json

    used: dict[str, list[str]] = {}
    for record in ctx.containers().all():
        wanted = set((record.host_config.get("KetchAnonymousVolumes") or {}).values())
        try:
            options = options_from_json(record.host_config.get("Ketch") or {})
            wanted.update(m.source for m in options.mounts if m.type == "volume" and m.source)
        except (TypeError, ValueError):
            pass
        for name in wanted:
            used.setdefault(name, []).append(record.id)
    return used


# --- filters ---------------------------------------------------------------------------------------


def select(volumes: list[Volume], filters: list[tuple[str, str]], used: dict[str, list[str]]) -> list[Volume]:
    """`volume ls --filter`: dangling=true|false, name= and driver= (regular expressions, any
    value matches), label=key[=value] (every one must match)."""
    groups: dict[str, list[str]] = {}
    for key, value in filters:
        if key not in ("dangling", "name", "driver", "label"):
            raise InvalidArgument(f"invalid filter '{key}'")
        groups.setdefault(key, []).append(value)
    out = volumes
    for value in groups.get("dangling", []):
        dangling = _boolean("dangling", value)
        out = [v for v in out if (v.name not in used) == dangling]
    if "name" in groups:
        out = [v for v in out if any(_search(p, v.name) for p in groups["name"])]
    if "driver" in groups:
        out = [v for v in out if any(_search(p, v.driver) for p in groups["driver"])]
    return [v for v in out if labels_match(v.labels, groups.get("label", []))]


def _boolean(key: str, value: str) -> bool:
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise InvalidArgument(f"invalid filter '{key}={value}'")


def _search(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return pattern in text


def labels_match(labels: dict[str, str], specs: list[str]) -> bool:
    """Every "key" spec is a label; every "key=value" spec is a label with that value."""
    for spec in specs:
        key, eq, value = spec.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


# --- remove and prune ------------------------------------------------------------------------------


def remove(ctx: Context, name: str, force: bool = False, used: dict[str, list[str]] | None = None) -> None:
    """Docker's `volume rm`: refuse a volume in use (even forced); forced, a missing one is no error."""
    try:
        get(ctx, name)
    except NotFound:
        if force:
            return
        raise
    holders = (users(ctx) if used is None else used).get(name)
    if holders:
        raise Conflict(f"remove {name}: volume is in use - [{', '.join(holders)}]")
    if not _delete(ctx, name) and not force:
        raise NotFound(f"get {name}: no such volume")


def _delete(ctx: Context, name: str) -> bool:
    """Rename the volume away (so it vanishes at once), then remove it; False if it was gone."""
    top = directory(ctx)
    doomed = os.path.join(top, f".removing-{os.urandom(8).hex()}")
    try:
        os.rename(os.path.join(top, name), doomed)
    except FileNotFoundError:
        return False
    _remove_tree(doomed)
    return True


def _remove_tree(path: str) -> None:
    from ketch.runtime.container import remove_tree

    remove_tree(path)


def prune(
    ctx: Context, all_: bool = False, filters: list[tuple[str, str]] | None = None
) -> tuple[list[str], int]:
    """Docker's `volume prune`: unused anonymous volumes (with `all_`, named ones too), narrowed by
    label=/label!= filters (`all=true` is the filter form of `all_`). The names and bytes freed."""
    labels, not_labels = [], []
    for key, value in filters or []:
        if key == "label":
            labels.append(value)
        elif key == "label!":
            not_labels.append(value)
        elif key == "all":
            all_ = all_ or _boolean("all", value)
        else:
            raise InvalidArgument(f"invalid filter '{key}'")
    used = users(ctx)
    deleted, freed = [], 0
    for volume in list_volumes(ctx):
        if volume.name in used or not (all_ or volume.anonymous) or not labels_match(volume.labels, labels):
            continue
        if not_labels and labels_match(volume.labels, not_labels):
            continue
        size = disk_usage(volume.mountpoint)
        if _delete(ctx, volume.name):
            deleted.append(volume.name)
            freed += size
    _sweep(ctx)
    return deleted, freed


def _sweep(ctx: Context) -> None:
    """What crashed removals and creations left: `.removing-*` always, `.creating-*` when stale."""
    top = directory(ctx)
    for entry in os.listdir(top):
        path = os.path.join(top, entry)
        try:
            stale = entry.startswith(".creating-") and time.time() - os.lstat(path).st_mtime > _STALE
        except FileNotFoundError:
            continue
        if entry.startswith(".removing-") or stale:
            _remove_tree(path)


def disk_usage(path: str) -> int:
    """Bytes in a tree: every non-directory's size, hard links counted once; symlinks not followed."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total
