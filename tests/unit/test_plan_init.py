"""Unit tests for ketch.runtime.plan: namespace plans and the init plan, decided before any fork."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ketch.errors import InvalidArgument, NotFound
from ketch.linux import syscalls as sc
from ketch.oci.runtime import Linux, Namespace, Spec
from ketch.runtime.init import InitPlan, NamespacePlan
from ketch.runtime.plan import CreateOptions, init_plan, namespaces
from ketch.runtime.specgen import default_spec

# --- namespaces ----------------------------------------------------------------------------------


def linux(*nss: Namespace) -> Linux:
    return Linux(namespaces=nss)


def test_new_namespaces_become_clone_flags() -> None:
    plan = namespaces(linux(Namespace("mount"), Namespace("uts"), Namespace("ipc")))
    assert plan == NamespacePlan(
        joins=(),
        new_flags=sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC,
        new_user=False,
        enter_pid=False,
    )
    assert plan.has_mount


def test_every_namespace_kind_has_a_flag() -> None:
    plan = namespaces(linux(*(Namespace(t) for t in ("pid", "network", "mount", "ipc", "uts", "cgroup"))))
    assert plan.new_flags == (
        sc.CLONE_NEWPID
        | sc.CLONE_NEWNET
        | sc.CLONE_NEWNS
        | sc.CLONE_NEWIPC
        | sc.CLONE_NEWUTS
        | sc.CLONE_NEWCGROUP
    )
    assert plan.enter_pid


def test_new_user_namespace() -> None:
    plan = namespaces(linux(Namespace("user"), Namespace("mount")))
    assert plan.new_user
    assert plan.new_flags == sc.CLONE_NEWUSER | sc.CLONE_NEWNS


def test_new_time_namespace_needs_a_fork() -> None:
    plan = namespaces(linux(Namespace("time")))
    assert plan.new_flags == sc.CLONE_NEWTIME
    assert plan.enter_pid


def test_no_namespaces() -> None:
    assert namespaces(linux()) == NamespacePlan()


def test_joins_are_kept_in_order_and_not_unshared(tmp_path: Path) -> None:
    net, mnt = tmp_path / "net", tmp_path / "mnt"
    net.touch()
    mnt.touch()
    plan = namespaces(linux(Namespace("network", str(net)), Namespace("uts"), Namespace("mount", str(mnt))))
    assert plan.joins == (("network", str(net)), ("mount", str(mnt)))
    assert plan.new_flags == sc.CLONE_NEWUTS
    assert plan.has_mount
    assert not plan.enter_pid


def test_joined_pid_namespace_needs_a_fork(tmp_path: Path) -> None:
    (tmp_path / "pid").touch()
    plan = namespaces(linux(Namespace("pid", str(tmp_path / "pid"))))
    assert plan.enter_pid
    assert plan.new_flags == 0


def test_joined_user_namespace_is_not_new(tmp_path: Path) -> None:
    (tmp_path / "user").touch()
    assert not namespaces(linux(Namespace("user", str(tmp_path / "user")))).new_user


def test_join_path_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as info:
        namespaces(linux(Namespace("mount"), Namespace("network", str(tmp_path / "missing"))))
    assert str(info.value).startswith("linux.namespaces: network namespace path")
    assert str(tmp_path / "missing") in str(info.value)


# --- init_plan -----------------------------------------------------------------------------------

Config = dict[str, Any]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "rootfs").mkdir()
    return tmp_path


def spec_at(bundle: Path, edit: Callable[[Config], object] | None = None) -> Spec:
    d = copy.deepcopy(default_spec())
    d["root"]["path"] = str(bundle / "rootfs")
    d["process"]["terminal"] = False
    if edit is not None:
        edit(d)
    return Spec.from_json(d)


def make_plan(
    spec: Spec, bundle: Path, opts: CreateOptions | None = None, warnings: list[str] | None = None
) -> InitPlan:
    return init_plan(
        spec, "c1", str(bundle), 7, {}, opts or CreateOptions(), [] if warnings is None else warnings
    )


def test_init_plan_from_the_default_spec(bundle: Path) -> None:
    warnings: list[str] = []
    plan = make_plan(spec_at(bundle), bundle, warnings=warnings)
    assert plan.container_id == "c1"
    assert plan.rootfs == str((bundle / "rootfs").resolve())
    assert plan.fifo_fd == 7
    assert plan.hostname == "ketch"
    assert plan.readonly_root is True
    assert plan.namespaces.new_flags & sc.CLONE_NEWNS
    assert plan.namespaces.enter_pid
    assert plan.process.args == ("sh",)
    assert plan.process.no_new_privs is True
    assert plan.process.env["TERM"] == "xterm"
    assert [m.destination for m in plan.mounts][:2] == ["/proc", "/dev"]
    assert plan.mounts[1].flags == sc.MS_NOSUID | sc.MS_STRICTATIME
    assert plan.mounts[1].data == "mode=755,size=65536k"
    assert plan.masked_paths == Spec.from_json(default_spec()).linux.masked_paths
    assert plan.personality is None
    assert plan.no_pivot is False
    assert plan.new_keyring is True
    assert plan.create_container_hooks == ()
    assert warnings == []


def test_init_plan_relative_root_is_joined_to_the_bundle(bundle: Path) -> None:
    spec = spec_at(bundle, lambda d: d["root"].update(path="rootfs"))
    assert make_plan(spec, bundle).rootfs == str((bundle / "rootfs").resolve())


def test_init_plan_relative_bind_source_is_joined_to_the_bundle(bundle: Path) -> None:
    spec = spec_at(
        bundle, lambda d: d["mounts"].append({"destination": "/data", "type": "bind", "source": "data"})
    )
    op = make_plan(spec, bundle).mounts[-1]
    assert op.source == str(bundle / "data")
    assert op.is_bind


def test_init_plan_options_and_personality(bundle: Path) -> None:
    spec = spec_at(bundle, lambda d: d["linux"].update(personality={"domain": "LINUX32"}))
    plan = make_plan(spec, bundle, CreateOptions(no_pivot=True, new_keyring=False, preserve_fds=2))
    assert plan.personality == 0x0008
    assert plan.no_pivot is True
    assert plan.new_keyring is False
    assert plan.preserve_fds == 2


def test_init_plan_terminal_needs_a_console(bundle: Path) -> None:
    spec = spec_at(bundle, lambda d: d["process"].update(terminal=True))
    with pytest.raises(InvalidArgument) as info:
        make_plan(spec, bundle)
    assert str(info.value).startswith("process.terminal")


def test_init_plan_terminal_with_a_console(bundle: Path) -> None:
    spec = spec_at(bundle, lambda d: d["process"].update(terminal=True))
    assert make_plan(spec, bundle, CreateOptions(console=True)).process.terminal is True


def test_init_plan_missing_rootfs(bundle: Path) -> None:
    spec = spec_at(bundle, lambda d: d["root"].update(path=str(bundle / "nope")))
    with pytest.raises(NotFound) as info:
        make_plan(spec, bundle)
    assert str(info.value).startswith("root.path:")


def test_init_plan_rootfs_that_is_a_file(bundle: Path) -> None:
    (bundle / "file").write_text("")
    with pytest.raises(NotFound):
        make_plan(spec_at(bundle, lambda d: d["root"].update(path="file")), bundle)


def test_without_a_mount_namespace_mounts_are_skipped_with_a_warning(bundle: Path) -> None:
    def edit(d: Config) -> None:
        d["linux"]["namespaces"] = [ns for ns in d["linux"]["namespaces"] if ns["type"] != "mount"]

    warnings: list[str] = []
    plan = make_plan(spec_at(bundle, edit), bundle, warnings=warnings)
    assert not plan.namespaces.has_mount
    assert warnings == [
        "no mount namespace: the spec's mounts are not made, the host's mount table is shared"
    ]


def test_init_plan_needs_a_process(bundle: Path) -> None:
    with pytest.raises(InvalidArgument, match="process"):
        make_plan(spec_at(bundle, lambda d: d.pop("process")), bundle)


def test_init_plan_reports_bad_mount_options_by_index(bundle: Path) -> None:
    spec = spec_at(bundle, lambda d: d["mounts"][2]["options"].append("rro"))
    with pytest.raises(InvalidArgument) as info:
        make_plan(spec, bundle)
    assert str(info.value).startswith("mounts[2].options:")


def test_init_plan_unknown_rlimit(bundle: Path) -> None:
    spec = spec_at(
        bundle, lambda d: d["process"]["rlimits"].append({"type": "RLIMIT_X", "hard": 1, "soft": 1})
    )
    with pytest.raises(InvalidArgument, match=r"process\.rlimits\[1\]\.type"):
        make_plan(spec, bundle)
