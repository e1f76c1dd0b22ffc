"""Each start of a container: mount its rootfs, write /etc files and volumes, write the OCI bundle."""

from __future__ import annotations

import os

from ketch import jsonio
from ketch.errors import NotFound
from ketch.files import atomic_write
from ketch.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.engine.containers import ContainerRecord
    from ketch.engine.context import Context
    from ketch.engine.options import RunOptions


class Prepared(Record):
    path: str  # the bundle directory (the container's directory)
    terminal: bool
    stdin: bool
    health: Any = None  # a health.Check, when the container has a healthcheck
    wiring: Any = None  # the networks.Wiring: endpoints to plumb once the init exists


def prepare(
    ctx: Context, record: ContainerRecord, ports: tuple[Any, ...] = (), monitor: tuple[int, int] = (0, 0)
) -> Prepared:
    """Everything `runtime.create` needs, from the container record: the rootfs mounted, the
    network endpoints allocated (`ports` already reserved), the /etc files and config.json
    written. If it fails, the endpoints are given back; the mount stays for release()."""
    from ketch.engine import networks
    from ketch.engine.create import options_from_json

    options = options_from_json(record.host_config["Ketch"])
    hostname = _hostname(record, options)
    wiring = networks.wire(ctx, record, options, hostname, ports, monitor)
    try:
        return _prepare(ctx, record, options, wiring)
    except BaseException:
        networks.release(ctx, record.id, wiring.endpoints)
        raise


def _hostname(record: ContainerRecord, options: RunOptions) -> str:
    from ketch.engine import runconfig

    return runconfig.hostname_of(options, record.id)


def _prepare(ctx: Context, record: ContainerRecord, options: RunOptions, wiring: Any) -> Prepared:
    from ketch.engine import runconfig, specconv, userns, users

    store, images = ctx.containers(), ctx.images()
    image = images.get(record.image)
    image_config: dict[str, Any] = images.config_json(image).get("config") or {}
    directory = store.path(record.id)
    rootfs = os.path.join(directory, "rootfs")
    remapped = userns.of(record)  # a user namespace: its root owns the files ketch makes for it
    owner = remapped.root if remapped is not None else None
    _mount(images, record.id, rootfs, remapped)
    hostname = wiring.hostname or runconfig.hostname_of(options, record.id)
    files = _etc_files(directory, hostname, wiring, owner)
    inputs = specconv.SpecInputs(
        options=options, image_config=image_config, container_id=record.id, rootfs=rootfs,
        user=users.resolve_user(rootfs, runconfig.user_spec_of(options, image_config)),
        hosts_file=files["hosts"], resolv_file=files["resolv.conf"], hostname_file=files["hostname"],
        volume_sources=_volumes(ctx, record, options, image_config, owner), cgroups_path=f"/ketch/{record.id}",
        cgroup_v2=_cgroup_v2(), init_path=_init_path() if options.init else "",
        device_nodes=_devices(options), hostname=hostname, network_path=wiring.netns,
        uid_mappings=remapped.uid_map if remapped else (), gid_mappings=remapped.gid_map if remapped else (),
    )  # fmt: skip
    spec = specconv.container_spec(inputs)
    atomic_write(os.path.join(directory, "config.json"), jsonio.dumps(spec).encode(), 0o600, durable=False)
    from ketch.engine.health import check_of

    return Prepared(directory, options.tty, options.interactive, check_of(record, image_config), wiring)


def release(ctx: Context, record: ContainerRecord) -> None:
    """Unmount the rootfs (after the container stopped); a rootfs that is not mounted is fine."""
    rootfs = ctx.containers().path(record.id, "rootfs")
    try:  # no mountinfo scan first: umount(2) of what is not a mount point fails with EINVAL
        ctx.images().snapshots.unmount(rootfs)
    except NotFound:
        pass


def _is_mount(path: str) -> bool:
    """Whether something is mounted on `path`. os.path.ismount cannot see a bind mount from the
    same filesystem (the vfs driver's rootfs): statx(2) can, else mountinfo."""
    from ketch.linux import syscalls

    known = syscalls.is_mount_root(path)
    if known is not None:
        return known
    target = os.path.realpath(path).encode()
    with open("/proc/self/mountinfo", "rb") as f:
        return any(line.split(b" ", 5)[4] == target for line in f)


def _mount(images: Any, container_id: str, rootfs: str, remapped: Any = None) -> None:
    os.makedirs(rootfs, exist_ok=True)
    if _is_mount(rootfs):
        return
    if remapped is None:
        images.snapshots.mount(container_id, rootfs)
        return
    from ketch.linux import idmap

    userns = idmap.userns_fd(remapped.uid_map, remapped.gid_map)  # the layers show through its mapping
    try:
        images.snapshots.mount(container_id, rootfs, userns)
    finally:
        os.close(userns)


def _etc_files(
    directory: str, hostname: str, wiring: Any, owner: tuple[int, int] | None = None
) -> dict[str, str]:
    """/etc/hostname, /etc/hosts and /etc/resolv.conf of the container (see networks.wire);
    with a user namespace they are its root's, as they are root's without one."""
    paths = {name: os.path.join(directory, name) for name in ("hostname", "hosts", "resolv.conf")}
    # rebuilt at every start, so they need no fsync
    atomic_write(paths["hostname"], f"{hostname}\n".encode(), 0o644, durable=False)
    atomic_write(paths["hosts"], wiring.hosts.encode(), 0o644, durable=False)
    atomic_write(paths["resolv.conf"], wiring.resolv.encode(), 0o644, durable=False)
    if owner is not None:
        for path in paths.values():
            os.chown(path, *owner)
    return paths


def _volumes(
    ctx: Context,
    record: ContainerRecord,
    options: RunOptions,
    image_config: dict[str, Any],
    owner: tuple[int, int] | None = None,
) -> dict[str, str]:
    """Host directories for named and anonymous volumes. A new volume starts with a copy of what
    the image has at its mount point, as Docker does; under a user namespace its root owns it
    (the copy keeps the ids the idmapped rootfs shows, which are already host ids)."""
    from ketch.engine import specconv

    anonymous: dict[str, str] = record.host_config.setdefault("KetchAnonymousVolumes", {})
    sources: dict[str, str] = {}
    for mount in specconv.volume_mounts(options, image_config):
        name = mount.source or anonymous.get(mount.target, "")
        if not name:
            name = anonymous[mount.target] = os.urandom(32).hex()
            ctx.containers().update_record(record)
        data = os.path.join(ctx.root, "volumes", name, "_data")
        seed = os.path.join(ctx.containers().path(record.id, "rootfs"), mount.target.lstrip("/"))
        if not os.path.isdir(data):
            _new_volume(data, seed, "nocopy" not in mount.options, owner)
        elif "nocopy" not in mount.options and not os.listdir(data):
            _fill(data, seed)  # an empty volume (`volume create`) takes the image's content, as Docker's
        sources[mount.target] = data
    return sources


def _new_volume(data: str, seed: str, copy: bool, owner: tuple[int, int] | None = None) -> None:
    """Create a volume's directory, filled from `seed` (the image's content at the mount point)."""
    tmp = data + ".new"
    os.makedirs(tmp, mode=0o755, exist_ok=True)
    if owner is not None:
        os.chown(tmp, *owner)
    if copy:
        _fill(tmp, seed)
    os.rename(tmp, data)


def _fill(target: str, seed: str) -> None:
    import subprocess

    if os.path.isdir(seed) and not os.path.islink(seed):
        subprocess.run(["cp", "-a", "--", f"{seed}/.", target], check=True, capture_output=True)


def _cgroup_v2() -> bool:
    from ketch.runtime.cgroups import hierarchies

    return "" in hierarchies()


def _init_path() -> str:
    import shutil

    from ketch.errors import Unsupported

    path = shutil.which("tini-static") or shutil.which("tini") or shutil.which("catatonit")
    if path is None:
        raise Unsupported("--init needs an init binary on the host (apt-get install tini)")
    return path


def _devices(options: RunOptions) -> tuple[Any, ...]:
    from ketch.engine import specconv

    nodes = specconv.resolve_devices(options.devices)
    return nodes + specconv.host_devices() if options.privileged else nodes
