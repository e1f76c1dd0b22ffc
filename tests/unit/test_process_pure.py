"""Unit tests for the pure half of ketch.runtime.process: rlimits, capabilities, the plan, lookup()."""

from __future__ import annotations

import errno
import os
import resource
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument, SetupFailed
from ketch.oci.runtime import Capabilities, Process, Rlimit, User
from ketch.runtime import capabilities
from ketch.runtime.process import RLIMITS, CapSets, lookup, plan, plan_caps, plan_rlimits

INF = resource.RLIM_INFINITY


def has_cap_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> 24 & 1)
    return False


def proc(**kw: object) -> Process:
    return Process(args=("sh",), cwd="/", **kw)  # type: ignore[arg-type]


# --- plan_rlimits --------------------------------------------------------------------------------


def test_rlimit_numbers_match_the_resource_module() -> None:
    for name, number in RLIMITS.items():
        if hasattr(resource, name):
            assert getattr(resource, name) == number, name
    assert RLIMITS["RLIMIT_LOCKS"] == 10
    assert RLIMITS["RLIMIT_RTTIME"] == 15


def test_no_rlimits() -> None:
    assert plan_rlimits(proc(), []) == ()


def test_rlimits_within_the_host_limit_are_kept() -> None:
    _, host_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    value = 64 if host_hard == INF else min(64, host_hard)
    warn: list[str] = []
    rl = (Rlimit("RLIMIT_NOFILE", value, value // 2), Rlimit("RLIMIT_CORE", 0, 0))
    assert plan_rlimits(proc(rlimits=rl), warn) == (
        (resource.RLIMIT_NOFILE, value // 2, value),
        (resource.RLIMIT_CORE, 0, 0),
    )
    assert warn == []


def test_unknown_rlimit_type_raises_with_its_index() -> None:
    rl = (Rlimit("RLIMIT_CORE", 0, 0), Rlimit("RLIMIT_BOGUS", 1, 1))
    with pytest.raises(InvalidArgument) as info:
        plan_rlimits(proc(rlimits=rl), [])
    assert str(info.value).startswith("process.rlimits[1].type: unknown rlimit 'RLIMIT_BOGUS'")


def test_lowercase_rlimit_type_is_unknown() -> None:
    with pytest.raises(InvalidArgument):
        plan_rlimits(proc(rlimits=(Rlimit("rlimit_nofile", 1, 1),)), [])


@pytest.mark.parametrize("value", [2**64 - 1, 2**64, -1])
def test_unlimited_spec_values_become_rlim_infinity(value: int) -> None:
    _, host_hard = resource.getrlimit(resource.RLIMIT_CORE)
    if host_hard != INF:
        pytest.skip("the host's RLIMIT_CORE hard limit is finite")
    assert plan_rlimits(proc(rlimits=(Rlimit("RLIMIT_CORE", value, value),)), []) == (
        (resource.RLIMIT_CORE, INF, INF),
    )


def test_hard_limit_above_the_host_is_clamped_without_cap_sys_resource() -> None:
    _, host_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if host_hard == INF:
        pytest.skip("the host's RLIMIT_NOFILE hard limit is unlimited: nothing to clamp")
    warn: list[str] = []
    rl = (Rlimit("RLIMIT_NOFILE", host_hard + 1000, host_hard + 500),)
    got = plan_rlimits(proc(rlimits=rl), warn)
    if has_cap_sys_resource():
        assert got == ((resource.RLIMIT_NOFILE, host_hard + 500, host_hard + 1000),)
        assert warn == []
    else:
        assert got == ((resource.RLIMIT_NOFILE, host_hard, host_hard),)
        assert warn == [f"RLIMIT_NOFILE hard limit {host_hard + 1000} clamped to the host's {host_hard}"]


def test_clamping_keeps_a_soft_limit_below_the_host() -> None:
    _, host_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if host_hard == INF or host_hard < 2:
        pytest.skip("needs a finite RLIMIT_NOFILE hard limit")
    if has_cap_sys_resource():
        pytest.skip("with CAP_SYS_RESOURCE nothing is clamped")
    warn: list[str] = []
    rl = (Rlimit("RLIMIT_NOFILE", 2**64 - 1, 1),)
    assert plan_rlimits(proc(rlimits=rl), warn) == ((resource.RLIMIT_NOFILE, 1, host_hard),)
    assert len(warn) == 1


# --- plan_caps -----------------------------------------------------------------------------------


def test_plan_caps_none_without_capabilities() -> None:
    caps, top = plan_caps(proc())
    assert caps is None
    assert top == capabilities.last_cap()


def test_plan_caps_masks_each_set() -> None:
    c = Capabilities(
        bounding=("CAP_KILL", "CAP_CHOWN"),
        effective=("KILL",),
        inheritable=(),
        permitted=("cap_kill",),
        ambient=("CAP_NET_BIND_SERVICE",),
    )
    caps, _ = plan_caps(proc(capabilities=c))
    assert caps == CapSets(
        bounding=(1 << 5) | 1, effective=1 << 5, permitted=1 << 5, inheritable=0, ambient=1 << 10
    )


def test_plan_caps_empty_sets() -> None:
    caps, _ = plan_caps(proc(capabilities=Capabilities()))
    assert caps == CapSets(0, 0, 0, 0, 0)


def test_plan_caps_unknown_name_names_the_set() -> None:
    with pytest.raises(InvalidArgument) as info:
        plan_caps(proc(capabilities=Capabilities(permitted=("CAP_BOGUS",))))
    assert str(info.value).startswith("process.capabilities.permitted: unknown capability 'CAP_BOGUS'")


# --- plan (without seccomp) ----------------------------------------------------------------------


def test_plan_copies_the_process() -> None:
    p = Process(
        args=("/bin/app", "-v"),
        cwd="/srv",
        env=("A=1", "B=x=y", "EMPTY=", "NOEQUALS", "=nokey", "A=2"),
        user=User(uid=1000, gid=100, umask=0o077, additional_gids=(5, 6)),
        terminal=True,
        console_size=(24, 80),
        no_new_privileges=True,
        oom_score_adj=-500,
    )
    pp = plan(p, None, [])
    assert pp.args == ("/bin/app", "-v")
    assert pp.env == {"A": "2", "B": "x=y", "EMPTY": ""}
    assert pp.cwd == "/srv"
    assert (pp.uid, pp.gid, pp.groups, pp.umask) == (1000, 100, (5, 6), 0o077)
    assert pp.terminal is True
    assert pp.console_size == (24, 80)
    assert pp.caps is None
    assert pp.no_new_privs is True
    assert pp.oom_score_adj == -500
    assert pp.seccomp is None
    assert pp.seccomp_flags == 0
    assert pp.rlimits == ()


def test_plan_default_umask() -> None:
    assert plan(proc(), None, []).umask == 0o022


def test_plan_drops_ambient_caps_not_permitted_and_inheritable() -> None:
    c = Capabilities(
        bounding=("CAP_KILL", "CAP_CHOWN"),
        permitted=("CAP_KILL", "CAP_CHOWN"),
        inheritable=("CAP_KILL",),
        ambient=("CAP_KILL", "CAP_CHOWN"),
    )
    caps = plan(proc(capabilities=c), None, []).caps
    assert caps is not None
    assert caps.ambient == 1 << 5
    assert caps.permitted == (1 << 5) | 1


# --- lookup --------------------------------------------------------------------------------------


def make(path: Path, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


def test_lookup_searches_path_in_order(tmp_path: Path) -> None:
    make(tmp_path / "a" / "prog", 0o644)
    make(tmp_path / "b" / "prog", 0o755)
    make(tmp_path / "c" / "prog", 0o755)
    env = {"PATH": f"{tmp_path}/missing:{tmp_path}/a:{tmp_path}/b:{tmp_path}/c"}
    assert lookup("prog", env) == f"{tmp_path}/b/prog"


def test_lookup_skips_directories(tmp_path: Path) -> None:
    (tmp_path / "a" / "prog").mkdir(parents=True)
    make(tmp_path / "b" / "prog", 0o755)
    assert lookup("prog", {"PATH": f"{tmp_path}/a:{tmp_path}/b"}) == f"{tmp_path}/b/prog"


def test_lookup_missing_program(tmp_path: Path) -> None:
    make(tmp_path / "a" / "other", 0o755)
    with pytest.raises(SetupFailed) as info:
        lookup("prog", {"PATH": f"{tmp_path}/a"})
    assert "executable file not found in $PATH" in str(info.value)
    assert '"prog"' in str(info.value)
    assert info.value.errno == errno.ENOENT


def test_lookup_non_executable_only_is_not_found(tmp_path: Path) -> None:
    make(tmp_path / "a" / "prog", 0o644)
    with pytest.raises(SetupFailed, match=r"executable file not found in \$PATH"):
        lookup("prog", {"PATH": f"{tmp_path}/a"})


def test_lookup_empty_path_entry_means_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make(tmp_path / "prog", 0o755)
    monkeypatch.chdir(tmp_path)
    assert lookup("prog", {"PATH": "/nonexistent-ketch-dir:"}) == "./prog"


def test_lookup_with_a_slash_is_not_searched(tmp_path: Path) -> None:
    prog = make(tmp_path / "prog", 0o755)
    assert lookup(str(prog), {"PATH": "/nonexistent-ketch-dir"}) == str(prog)


def test_lookup_with_a_slash_missing(tmp_path: Path) -> None:
    with pytest.raises(SetupFailed) as info:
        lookup(f"{tmp_path}/nope", {})
    assert "no such file or directory" in str(info.value)
    assert info.value.errno == errno.ENOENT


def test_lookup_with_a_slash_not_executable(tmp_path: Path) -> None:
    prog = make(tmp_path / "prog", 0o644)
    with pytest.raises(SetupFailed) as info:
        lookup(str(prog), {})
    assert "permission denied" in str(info.value)
    assert info.value.errno == errno.EACCES


def test_lookup_with_a_slash_directory(tmp_path: Path) -> None:
    with pytest.raises(SetupFailed) as info:
        lookup(str(tmp_path), {})
    assert info.value.errno == errno.EACCES


def test_lookup_relative_path_with_a_slash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make(tmp_path / "bin" / "prog", 0o755)
    monkeypatch.chdir(tmp_path)
    assert lookup("bin/prog", {}) == "bin/prog"
    assert os.path.isfile("bin/prog")
