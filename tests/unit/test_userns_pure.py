"""Unit tests for ketch.engine.userns: userns-remap's lookups in /etc/subuid and /etc/subgid, the
mapping, and the checks Docker makes on containers with a user namespace (no root needed)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.engine import specconv, userns
from ketch.engine.create import _host_config
from ketch.engine.options import RunOptions, check
from ketch.engine.userns import Accounts, Remap
from ketch.errors import InvalidArgument
from ketch.oci.runtime import Spec, validate

USERS = {"testuser": 1001, "ketchremap": 998, "root": 0, "other": 1002}
GROUPS = {"testuser": 1001, "ketchremap": 997, "root": 0, "staff": 50}


class FakeAccounts(Accounts):
    """/etc/passwd and /etc/group as dicts, by name or by id."""

    def __init__(self, users: dict[str, int] | None = None, groups: dict[str, int] | None = None) -> None:
        self.users = USERS if users is None else users
        self.groups = GROUPS if groups is None else groups

    @staticmethod
    def _find(table: dict[str, int], key: str) -> tuple[str, int] | None:
        if key.isdecimal():
            return next(((name, i) for name, i in table.items() if i == int(key)), None)
        return (key, table[key]) if key in table else None

    def user(self, key: str) -> tuple[str, int] | None:
        return self._find(self.users, key)

    def group(self, key: str) -> tuple[str, int] | None:
        return self._find(self.groups, key)


ACCOUNTS = FakeAccounts()


# --- /etc/subuid, /etc/subgid -------------------------------------------------------------------------


def test_subid_lines_skip_blanks_and_comments() -> None:
    text = "# ranges\n\ntestuser:231072:65536\n  1001:100000:10  \nother:300000:65536\n"
    assert userns.parse_subids(text, "/etc/subuid") == [
        ("testuser", 231072, 65536), ("1001", 100000, 10), ("other", 300000, 65536),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("testuser:231072\n", "Cannot parse subuid/gid information: Format not correct for /etc/subuid file"),
        ("testuser:a:b:c\n", "Format not correct for /etc/subuid file"),
        ("testuser:x:65536\n", "String to int conversion failed during subuid/gid parsing of /etc/subuid"),
    ],
)
def test_subid_lines_that_do_not_parse(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        userns.parse_subids(text, "/etc/subuid")


def test_ranges_are_found_by_uid_first_then_by_name() -> None:
    entries = userns.parse_subids("testuser:231072:65536\n1001:500000:1000\n1001:600000:10\n", "f")
    assert userns.ranges_for(entries, "testuser", 1001) == [(500000, 1000), (600000, 10)]
    assert userns.ranges_for(entries, "testuser", 4242) == [(231072, 65536)]
    assert userns.ranges_for(entries, "nobody", 65534) == []


def test_the_map_puts_container_ids_over_the_ranges_in_file_order_first_five() -> None:
    ranges = [(300000, 10), (100000, 5), (1, 1), (2, 1), (3, 1), (4, 1)]
    assert userns.id_map(ranges) == ((0, 300000, 10), (10, 100000, 5), (15, 1, 1), (16, 2, 1), (17, 3, 1))
    assert userns.id_map([(231072, 65536)]) == ((0, 231072, 65536),)


def test_ids_both_ways() -> None:
    mapping = ((0, 100000, 10), (10, 500000, 65526))
    assert userns.to_host(0, mapping) == 100000 and userns.to_host(12, mapping) == 500002
    assert userns.to_container(500002, mapping) == 12
    assert userns.to_container(0, mapping) == 65534  # unmapped: the overflow id, as the kernel shows it
    with pytest.raises(InvalidArgument, match="Container ID 65536 cannot be mapped to a host ID"):
        userns.to_host(65536, mapping)
    remap = Remap(user="u", group="g", uid_map=((0, 100000, 65536),), gid_map=((0, 200000, 65536),))
    assert remap.root == (100000, 200000)
    assert remap.host_ids(5, 6) == (100005, 200006)
    assert remap.container_ids(100005, 0) == (5, 65534)


def test_the_first_free_range_from_100000() -> None:
    assert userns.next_free([]) == 100000
    assert userns.next_free([("a", 100000, 65536)]) == 165536
    assert userns.next_free([("b", 300000, 65536), ("a", 120000, 100)]) == 120100  # gaps are used, sorted
    assert userns.next_free([("a", 150000, 10)]) == 150010  # would overlap: after it
    assert userns.next_free([("a", 1000, 100)]) == 100000


# --- the engine.json value ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("testuser", ("testuser", "testuser")),
        ("testuser:staff", ("testuser", "staff")),
        ("1001", ("testuser", "testuser")),  # a uid alone: the gid is the same number
        ("1001:50", ("testuser", "staff")),
        ("testuser:50", ("testuser", "staff")),
        ("1001:testuser", ("testuser", "testuser")),
        ("default", ("ketchremap", "ketchremap")),
    ],
)
def test_remap_values_as_daemon_json_takes_them(spec: str, names: tuple[str, str]) -> None:
    assert userns.parse_remap(spec, ACCOUNTS) == names


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("a:b:c", 'Invalid user/group specification in --userns-remap: "a:b:c"'),
        ("nosuch", 'Error during uid lookup for "nosuch"'),
        ("4242", "Uid 4242 has no entry in /etc/passwd"),
        ("other", 'Error during gid lookup for "other"'),  # no group of that name
        ("testuser:nosuch", 'Error during groupname lookup for "nosuch"'),
        ("testuser:4242", "Gid 4242 has no entry in /etc/group"),
    ],
)
def test_remap_values_that_name_nothing(spec: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        userns.parse_remap(spec, ACCOUNTS)


def test_default_without_its_user_asks_for_its_creation() -> None:
    assert userns.parse_remap("default", FakeAccounts(users={"root": 0}, groups={"root": 0})) is None


def test_mapping_reads_both_files_by_the_user() -> None:
    remap = userns.mapping("testuser", "staff", ACCOUNTS, "testuser:231072:65536\n", "1001:400000:65536\n")
    assert remap == Remap(user="testuser", group="staff", uid_map=((0, 231072, 65536),),
                          gid_map=((0, 400000, 65536),))  # fmt: skip


@pytest.mark.parametrize(
    ("subuid", "subgid", "message"),
    [
        ("", "testuser:1:2\n", 'Can\'t create ID mappings: no subuid ranges found for user "testuser"'),
        (
            "testuser:1:2\n",
            "other:1:2\n",
            'Can\'t create ID mappings: no subgid ranges found for user "testuser"',
        ),
    ],
)
def test_a_missing_range_is_one_clear_error(subuid: str, subgid: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        userns.mapping("testuser", "testuser", ACCOUNTS, subuid, subgid)
    assert str(info.value) == message


def test_remap_from_engine_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "subuid").write_text("testuser:231072:65536\n")
    (tmp_path / "subgid").write_text("testuser:231072:65536\n")
    monkeypatch.setattr(userns, "SUBUID", str(tmp_path / "subuid"))
    monkeypatch.setattr(userns, "SUBGID", str(tmp_path / "subgid"))
    assert userns.remap(str(tmp_path), ACCOUNTS) is None  # no engine.json
    (tmp_path / "engine.json").write_text(json.dumps({"userns-remap": "testuser"}))
    remap = userns.remap(str(tmp_path), ACCOUNTS)
    assert remap is not None and remap.root == (231072, 231072)
    (tmp_path / "engine.json").write_text(json.dumps({"userns-remap": "root"}))
    assert userns.remap(str(tmp_path), ACCOUNTS) is None  # root cannot be remapped: user namespaces off
    (tmp_path / "engine.json").write_text(json.dumps({"userns-remap": "other"}))
    with pytest.raises(InvalidArgument):
        userns.remap(str(tmp_path), FakeAccounts(groups={**GROUPS, "other": 1002}))


# --- containers -----------------------------------------------------------------------------------------


def test_userns_flag_takes_host_only() -> None:
    check(RunOptions("a", userns="host"))
    check(RunOptions("a"))
    for value in ("private", "remap", "host:x"):
        with pytest.raises(InvalidArgument) as info:
            check(RunOptions("a", userns=value))
        assert str(info.value) == "--userns: invalid USER mode"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (RunOptions("a", privileged=True), "privileged mode is incompatible with user namespaces.  You must run "
                                           "the container in the host namespace when running privileged mode"),
        (RunOptions("a", network="host"), "cannot share the host's network namespace when user namespaces are enabled"),
    ],
)  # fmt: skip
def test_what_a_user_namespace_cannot_share(options: RunOptions, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        userns.check(options, remapping=True)
    assert str(info.value) == message
    userns.check(options, remapping=False)  # without remapping: allowed
    userns.check(RunOptions("a", privileged=True, network="host", userns="host"), remapping=True)


def test_read_only_volumes_and_other_networks_are_fine() -> None:
    for options in (RunOptions("a", read_only=True), RunOptions("a", network="none"),
                    RunOptions("a", network="container:x")):  # fmt: skip
        userns.check(options, remapping=True)


def test_the_container_records_its_mapping() -> None:
    remap = Remap(user="u", group="g", uid_map=((0, 100000, 65536),), gid_map=((0, 200000, 10), (10, 5, 1)))
    doc = userns.record_json(remap)
    assert doc == {"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                   "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 10},
                                   {"containerID": 10, "hostID": 5, "size": 1}]}  # fmt: skip

    class Record:
        host_config = {userns.KEY: doc}

    back = userns.of(Record())  # type: ignore[arg-type]
    assert back is not None and (back.uid_map, back.gid_map) == (remap.uid_map, remap.gid_map)
    Record.host_config = {}
    assert userns.of(Record()) is None  # type: ignore[arg-type]


def test_inspect_shows_the_userns_mode_as_given() -> None:
    assert _host_config(RunOptions("a"))["UsernsMode"] == ""
    assert _host_config(RunOptions("a", userns="host"))["UsernsMode"] == "host"


def _spec(**inputs: object) -> dict[str, object]:
    spec = specconv.container_spec(
        specconv.SpecInputs(RunOptions("alpine"), {"Cmd": ["sh"]}, "c" * 64, "/r/rootfs", last_cap=40,
                            arch="x86_64", kernel="6.1.0", environ={}, **inputs)  # type: ignore[arg-type]
    )  # fmt: skip
    validate(Spec.from_json(json.loads(json.dumps(spec))))
    return spec


def test_the_spec_gets_a_user_namespace_with_the_mapping() -> None:
    spec = _spec(uid_mappings=((0, 231072, 65536),), gid_mappings=((0, 231072, 65536),))
    linux = spec["linux"]
    assert isinstance(linux, dict)
    assert {"type": "user"} in linux["namespaces"]
    assert (
        linux["uidMappings"] == linux["gidMappings"] == [{"containerID": 0, "hostID": 231072, "size": 65536}]
    )
    # moby: "We cannot set up ping socket support in a user namespace"
    assert linux["sysctl"] == {"net.ipv4.ip_unprivileged_port_start": "0"}
    plain = _spec()["linux"]
    assert isinstance(plain, dict)
    assert {"type": "user"} not in plain["namespaces"] and "uidMappings" not in plain
    assert "net.ipv4.ping_group_range" in plain["sysctl"]


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary directory whose parents everyone can search (pytest's tmp_path is under a 0700 one)."""
    path = Path(tempfile.mkdtemp())
    if not all(userns.accessible(str(p), 231072, 231072) for p in path.parents if str(p) != "/"):
        shutil.rmtree(path)
        pytest.skip(f"{tempfile.gettempdir()} is not searchable by others")
    try:
        yield path
    finally:
        path.chmod(0o700)
        shutil.rmtree(path)


def test_directories_the_remapped_root_must_get_through(open_tmp: Path) -> None:
    tmp_path = open_tmp
    root = tmp_path / "root"
    container = root / "containers" / "abc"
    container.mkdir(parents=True)
    tmp_path.chmod(0o711)
    root.chmod(0o700)
    (root / "containers").chmod(0o700)
    userns.open_root(str(root), str(container), (231072, 231072))  # ketch's own: made traversable
    assert (root.stat().st_mode & 0o011) == 0o011 and ((root / "containers").stat().st_mode & 0o011) == 0o011
    tmp_path.chmod(0o700)
    try:
        with pytest.raises(InvalidArgument) as info:
            userns.open_root(str(root), str(container), (231072, 231072))
        assert str(info.value) == (
            f"a subdirectory in your graphroot path ({root}) restricts access to the remapped root uid/gid; "
            "please fix by allowing 'o+x' permissions on existing directories"
        )
        gid = os.stat(tmp_path).st_gid
        tmp_path.chmod(0o710)
        assert userns.accessible(str(tmp_path), 231072, gid)  # through the group, as moby's canAccess
        assert not userns.accessible(str(tmp_path), 231072, gid + 1)
    finally:
        tmp_path.chmod(0o700)
