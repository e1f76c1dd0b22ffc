"""Spec -> plans: what the init (or an exec'd process) will do, decided before anything is forked."""

from __future__ import annotations

import os

from ketch.errors import InvalidArgument, NotFound
from ketch.linux.syscalls import NAMESPACE_FILES, NAMESPACE_FLAGS
from ketch.oci.runtime import Linux, Process, Spec
from ketch.record import Record
from ketch.runtime import process, rootfs
from ketch.runtime.init import InitPlan, NamespacePlan

PERSONALITIES = {"LINUX": 0x0000, "LINUX32": 0x0008}


class CreateOptions(Record):
    no_pivot: bool = False
    new_keyring: bool = True
    preserve_fds: int = 0
    console: bool = False


def namespaces(linux: Linux) -> NamespacePlan:
    joins = tuple((ns.type, ns.path) for ns in linux.namespaces if ns.path)
    for kind, path in joins:
        if not os.path.exists(path):
            raise NotFound(f"linux.namespaces: {kind} namespace path {path} does not exist")
    flags = 0
    for ns in linux.namespaces:
        if not ns.path:
            flags |= NAMESPACE_FLAGS[ns.type]
    return NamespacePlan(
        joins=joins,
        new_flags=flags,
        new_user=bool(flags & NAMESPACE_FLAGS["user"]),
        enter_pid=linux.namespace("pid") is not None or bool(flags & NAMESPACE_FLAGS["time"]),
        time_offsets=linux.time_offsets,
    )


def init_plan(
    spec: Spec, container_id: str, bundle: str, fifo_fd: int, cgroup_dirs: dict[str, str],
    opts: CreateOptions, warnings: list[str], seccomp_json: str = "",
) -> InitPlan:  # fmt: skip
    if spec.process is None:
        raise InvalidArgument("process: a container needs a process to run")
    if spec.process.terminal and not opts.console:
        raise InvalidArgument("process.terminal is true but no --console-socket was given")
    root = spec.root.path if os.path.isabs(spec.root.path) else os.path.join(bundle, spec.root.path)
    if not os.path.isdir(root):
        raise NotFound(f"root.path: rootfs {root} does not exist")
    linux = spec.linux
    if linux.namespace("mount") is None and spec.mounts:
        warnings.append(
            "no mount namespace: the spec's mounts are not made, the host's mount table is shared"
        )
    return InitPlan(
        container_id=container_id,
        rootfs=os.path.realpath(root),
        namespaces=namespaces(linux),
        process=process.plan(spec.process, linux.seccomp, warnings, seccomp_json),
        fifo_fd=fifo_fd,
        mounts=tuple(rootfs.describe(m, bundle, f"mounts[{i}]") for i, m in enumerate(spec.mounts)),
        devices=linux.devices,
        cgroup_dirs=cgroup_dirs,
        propagation=linux.rootfs_propagation,
        readonly_root=spec.root.readonly,
        masked_paths=linux.masked_paths,
        readonly_paths=linux.readonly_paths,
        sysctl=linux.sysctl,
        hostname=spec.hostname,
        domainname=spec.domainname,
        personality=PERSONALITIES[linux.personality] if linux.personality else None,
        no_pivot=opts.no_pivot,
        new_keyring=opts.new_keyring,
        preserve_fds=opts.preserve_fds,
        create_container_hooks=spec.hooks["createContainer"],
        start_container_hooks=spec.hooks["startContainer"],
        runtime_hooks=bool(spec.hooks["prestart"] or spec.hooks["createRuntime"]),
    )


def exec_namespaces(linux: Linux, init_pid: int) -> NamespacePlan:
    """Join every namespace the container's init lives in that differs from ours."""
    joins = []
    for ns in linux.namespaces:
        name = NAMESPACE_FILES[ns.type]
        theirs = f"/proc/{init_pid}/ns/{name}"
        try:
            if os.stat(theirs).st_ino != os.stat(f"/proc/self/ns/{name}").st_ino:
                joins.append((ns.type, theirs))
        except FileNotFoundError as exc:
            raise NotFound(f"container init {init_pid} is gone") from exc
    kinds = {k for k, _ in joins}
    return NamespacePlan(joins=tuple(joins), enter_pid="pid" in kinds or "time" in kinds)


def exec_plan(proc: Process, spec: Spec, warnings: list[str], seccomp_json: str = "") -> process.ProcessPlan:
    return process.plan(proc, spec.linux.seccomp, warnings, seccomp_json)
