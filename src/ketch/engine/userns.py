"""User namespaces: Docker's `userns-remap` (engine.json) and `--userns`, by moby's rules.

    "userns-remap": "default" | "USER[:GROUP]"     (names or numeric ids, as daemon.json takes it)

The user's ranges come from /etc/subuid and /etc/subgid, looked up by uid first, then by name,
both files by the *user* (moby's LoadIdentityMapping); the first five ranges, in file order, map
container ids 0, 1, ... onwards (container 0 -> the first subordinate id). "default" is the
`ketchremap` user (Docker's `dockremap`), which ketch creates as Docker does: `useradd -r -s
/bin/false`, then a free 65536-id range from 100000 up with `usermod --add-subuids/--add-subgids`.

A container created while remapping is on records its mapping (host_config "KetchUserns"),
so it keeps it for its whole life whatever engine.json says later; `--userns=host` records none.
Parsing, lookups and checks are pure (the accounts and files come in); `remap` reads the host.
"""

from __future__ import annotations

import os

from ketch.errors import InvalidArgument, SetupFailed
from ketch.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.engine.containers import ContainerRecord
    from ketch.engine.options import RunOptions

DEFAULT = "default"
DEFAULT_USER = "ketchremap"
SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"
MAX_RANGES = 5  # "Docker uses only the first five mappings" (the kernel's old limit)
RANGE_START, RANGE_LENGTH = 100000, 65536  # where Docker looks for a free range, and its size
KEY = "KetchUserns"  # the container record's mapping, in host_config
OVERFLOW_ID = 65534  # what an unmapped id shows as inside a user namespace (/proc/sys/kernel/overflowuid)

IDMap = tuple[tuple[int, int, int], ...]  # (container id, host id, size), as in /proc/<pid>/uid_map


class Remap(Record):
    user: str
    group: str
    uid_map: IDMap
    gid_map: IDMap

    @property
    def root(self) -> tuple[int, int]:
        """The host uid and gid of the container's root (moby's RootPair)."""
        return to_host(0, self.uid_map), to_host(0, self.gid_map)

    def host_ids(self, uid: int, gid: int) -> tuple[int, int]:
        """A container's owner as the host stores it (moby's ToHost)."""
        return to_host(uid, self.uid_map), to_host(gid, self.gid_map)

    def container_ids(self, uid: int, gid: int) -> tuple[int, int]:
        """A host owner as the container sees it: unmapped ids are the overflow id, 65534."""
        return to_container(uid, self.uid_map), to_container(gid, self.gid_map)


class Accounts:
    """The host's users and groups through NSS (what getent reads); tests give their own."""

    def user(self, key: str) -> tuple[str, int] | None:
        import pwd

        try:
            entry = pwd.getpwuid(int(key)) if key.isdecimal() else pwd.getpwnam(key)
        except (KeyError, OverflowError):
            return None
        return entry.pw_name, entry.pw_uid

    def group(self, key: str) -> tuple[str, int] | None:
        import grp

        try:
            entry = grp.getgrgid(int(key)) if key.isdecimal() else grp.getgrnam(key)
        except (KeyError, OverflowError):
            return None
        return entry.gr_name, entry.gr_gid


# --- /etc/subuid and /etc/subgid ------------------------------------------------------------------


def parse_subids(text: str, path: str) -> list[tuple[str, int, int]]:
    """NAME_OR_ID:START:COUNT lines (blank lines and # comments skipped), with moby's errors."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3:
            raise InvalidArgument(f"Cannot parse subuid/gid information: Format not correct for {path} file")
        try:
            entries.append((parts[0], int(parts[1]), int(parts[2])))
        except ValueError as exc:
            raise InvalidArgument(
                f"String to int conversion failed during subuid/gid parsing of {path}: {exc}"
            ) from None
    return entries


def ranges_for(entries: list[tuple[str, int, int]], name: str, uid: int) -> list[tuple[int, int]]:
    """The user's ranges: those listed under its uid, else those under its name (moby's order)."""
    for key in (str(uid), name):
        found = [(start, count) for owner, start, count in entries if owner == key]
        if found:
            return found
    return []


def id_map(ranges: list[tuple[int, int]]) -> IDMap:
    """Container ids 0.. over the ranges in order (moby's createIDMap), at most MAX_RANGES."""
    out, inside = [], 0
    for start, count in ranges[:MAX_RANGES]:
        out.append((inside, start, count))
        inside += count
    return tuple(out)


def to_host(container_id: int, mapping: IDMap) -> int:
    for inside, outside, size in mapping:
        if inside <= container_id < inside + size:
            return outside + container_id - inside
    raise InvalidArgument(f"Container ID {container_id} cannot be mapped to a host ID")


def to_container(host_id: int, mapping: IDMap) -> int:
    for inside, outside, size in mapping:
        if outside <= host_id < outside + size:
            return inside + host_id - outside
    return OVERFLOW_ID


def next_free(
    entries: list[tuple[str, int, int]], start: int = RANGE_START, length: int = RANGE_LENGTH
) -> int:
    """The first `length` ids from `start` up that no listed range overlaps."""
    for _owner, first, count in sorted(entries, key=lambda e: e[1]):
        if first < start + length and start < first + count:
            start = first + count
    return start


# --- the engine.json value ------------------------------------------------------------------------


def parse_remap(spec: str, accounts: Accounts) -> tuple[str, str] | None:
    """moby's parseRemappedRoot: the (user, group) names, None when "default" names a user that
    does not exist yet (the caller creates it). Names and numeric ids must exist."""
    parts = spec.split(":")
    if len(parts) > 2 or not parts[0]:
        raise InvalidArgument(f'Invalid user/group specification in --userns-remap: "{spec}"')
    first = parts[0]
    lookup = DEFAULT_USER if first == DEFAULT else first
    user = accounts.user(lookup)
    if user is None:
        if first.isdecimal():
            raise InvalidArgument(f"Uid {first} has no entry in /etc/passwd")
        if first == DEFAULT:
            return None
        raise InvalidArgument(f'Error during uid lookup for "{lookup}": no such user')
    group = accounts.group(parts[1] if len(parts) == 2 else lookup)
    if group is None:
        key = parts[1] if len(parts) == 2 else lookup
        if key.isdecimal():
            raise InvalidArgument(f"Gid {key} has no entry in /etc/group")
        raise InvalidArgument(
            f'Error during {"groupname" if len(parts) == 2 else "gid"} lookup for "{key}": no such group'
        )
    return user[0], group[0]


def mapping(user: str, group: str, accounts: Accounts, subuid: str, subgid: str) -> Remap:
    """moby's LoadIdentityMapping: the user's ranges in both files (the group is not consulted)."""
    found = accounts.user(user)
    if found is None:
        raise InvalidArgument(f"Could not get user for username {user}")
    name, uid = found
    maps = []
    for kind, text, path in (("subuid", subuid, SUBUID), ("subgid", subgid, SUBGID)):
        ranges = ranges_for(parse_subids(text, path), name, uid)
        if not ranges:
            raise InvalidArgument(f'Can\'t create ID mappings: no {kind} ranges found for user "{name}"')
        maps.append(id_map(ranges))
    return Remap(user=name, group=group, uid_map=maps[0], gid_map=maps[1])


def remap(root: str, accounts: Accounts | None = None, config: dict[str, Any] | None = None) -> Remap | None:
    """The engine's remapping from <root>/engine.json (`config`, when the caller has read it), None
    when off (or the user is root, which cannot be remapped: Docker then turns user namespaces off)."""
    from ketch.engine.context import engine_config

    spec = str((engine_config(root) if config is None else config).get("userns-remap") or "")
    if not spec:
        return None
    accounts = accounts or Accounts()
    names = parse_remap(spec, accounts)
    if names is None:
        create_default_user(os.path.join(root, "userns.lock"))
        names = parse_remap(spec, accounts)
        assert names is not None
    if accounts.user(names[0]) == ("root", 0):
        return None
    return mapping(*names, accounts, _read(SUBUID), _read(SUBGID))


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def create_default_user(lock: str) -> None:
    """Docker's `default`: a system user and group, then a free range in each file if it has none."""
    from ketch.files import FileLock

    accounts = Accounts()
    with FileLock(lock):
        if accounts.user(DEFAULT_USER) is None:
            _tool("useradd", "-r", "-s", "/bin/false", DEFAULT_USER)
        found = accounts.user(DEFAULT_USER)
        assert found is not None
        for flag, path in (("--add-subuids", SUBUID), ("--add-subgids", SUBGID)):
            entries = parse_subids(_read(path), path)
            if not ranges_for(entries, *found):
                start = next_free(entries)
                _tool("usermod", flag, f"{start}-{start + RANGE_LENGTH - 1}", DEFAULT_USER)


def _tool(*argv: str) -> None:
    import subprocess

    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise SetupFailed(f'Error during "{DEFAULT_USER}" user creation: {argv[0]}: {exc.strerror}') from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise SetupFailed(f'Error during "{DEFAULT_USER}" user creation: {last}')


# --- containers -----------------------------------------------------------------------------------


def check(options: RunOptions, remapping: bool) -> None:
    """The daemon's refusals of what cannot share the host's namespaces with a private user
    namespace (moby's verifyPlatformContainerSettings); --userns=host lifts them."""
    if not remapping or options.userns == "host":
        return
    if options.privileged:
        raise InvalidArgument(
            "privileged mode is incompatible with user namespaces.  You must run the container in the "
            "host namespace when running privileged mode"
        )
    if options.network == "host":
        raise InvalidArgument("cannot share the host's network namespace when user namespaces are enabled")


def record_json(remapped: Remap) -> dict[str, Any]:
    """What a container records: its mappings in config.json's form."""

    def json(m: IDMap) -> list[dict[str, int]]:
        return [{"containerID": c, "hostID": h, "size": s} for c, h, s in m]

    return {"uidMappings": json(remapped.uid_map), "gidMappings": json(remapped.gid_map)}


def of(record: ContainerRecord) -> Remap | None:
    """The mapping a container was created with; None when it has no user namespace."""
    doc = record.host_config.get(KEY)
    if not doc:
        return None

    def maps(items: list[dict[str, int]]) -> IDMap:
        return tuple((m["containerID"], m["hostID"], m["size"]) for m in items)

    return Remap(user="", group="", uid_map=maps(doc["uidMappings"]), gid_map=maps(doc["gidMappings"]))


def accessible(path: str, uid: int, gid: int) -> bool:
    """moby's canAccess: may uid:gid search (x) the directory `path`?"""
    try:
        st = os.stat(path)
    except OSError:
        return False
    mode = st.st_mode
    return bool(mode & 0o001 or (st.st_uid == uid and mode & 0o100) or (st.st_gid == gid and mode & 0o010))


def open_root(root: str, directory: str, owner: tuple[int, int]) -> None:
    """The container's init (the remapped root) starts from host paths under `directory` (its
    rootfs, /etc files): ketch's root and containers/ get o+x as Docker's root is 0711, and every
    directory above must already let it through."""
    for path in (root, os.path.dirname(directory)):
        mode = os.stat(path).st_mode & 0o7777
        if not mode & 0o001:
            os.chmod(path, mode | 0o011)
    check_path(root, directory, owner)


def own_directory(directory: str, owner: tuple[int, int]) -> None:
    """Docker's container directory under remapping: 0710, its group the remapped root's."""
    os.chown(directory, os.getuid(), owner[1])
    os.chmod(directory, 0o710)


def check_path(root: str, directory: str, owner: tuple[int, int]) -> None:
    """Every directory above `directory` must let the remapped root through, as Docker checks
    its graphroot at start (its message)."""
    path = os.path.abspath(directory)
    while True:
        path = os.path.dirname(path)
        if path == "/":
            return
        if not accessible(path, *owner):
            raise InvalidArgument(
                f"a subdirectory in your graphroot path ({root}) restricts access to the remapped root "
                "uid/gid; please fix by allowing 'o+x' permissions on existing directories"
            )
