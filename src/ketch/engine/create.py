"""`create`: turn run options and an image into a container record and a writable snapshot."""

from __future__ import annotations

import os

from ketch.clock import rfc3339
from ketch.engine.containers import ContainerRecord, check_name
from ketch.engine.options import Device, Health, Mount, RunOptions, Ulimit
from ketch.errors import AlreadyExists, InvalidArgument, NotFound
from ketch.record import Record, replace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ketch.engine.context import Context
    from ketch.image.store import ImageRecord

_NESTED: dict[str, Callable[..., Any]] = {"mounts": Mount, "ulimits": Ulimit, "devices": Device}


def options_to_json(value: Any) -> Any:
    """RunOptions (and the records inside) as plain JSON values."""
    if isinstance(value, Record):
        return {k: options_to_json(v) for k, v in value.to_dict().items()}
    if isinstance(value, (tuple, list)):
        return [options_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: options_to_json(v) for k, v in value.items()}
    return value


def options_from_json(doc: dict[str, Any]) -> RunOptions:
    values: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _NESTED:
            values[key] = tuple(_record(_NESTED[key], v) for v in value)
        elif key == "health":
            values[key] = None if value is None else _record(Health, value)
        elif isinstance(value, list):
            values[key] = tuple(value)
        else:
            values[key] = value
    return RunOptions(**values)


def _record(kind: Callable[..., Any], doc: dict[str, Any]) -> Any:
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()})


def new_id() -> str:
    return os.urandom(32).hex()


def create(
    ctx: Context, options: RunOptions, image: ImageRecord, image_config: dict[str, Any]
) -> ContainerRecord:
    """Record the container and prepare its snapshot; on any failure nothing is left behind."""
    from ketch.engine import names, runconfig
    from ketch.engine.context import engine_config
    from ketch.engine.options import log_config

    # the log settings first: a bad --log-opt leaves nothing behind
    config = engine_config(ctx.root)  # read once for both
    logging = log_config(options.log_driver, options.log_opts, config)

    own = None
    if config.get("userns-remap"):  # every container but --userns=host's gets a user namespace
        from ketch.engine import userns

        remapped = userns.remap(ctx.root, config=config)
        userns.check(options, remapped is not None)
        own = remapped if remapped is not None and options.userns != "host" else None
    container_id = new_id()
    name = check_name(options.name) if options.name else names.generate(ctx.containers())
    command = runconfig.command_of(options, image_config)
    mode, attachments = _network_plan(ctx, options)
    host_config = {**_host_config(options), **_network_config(options, mode, attachments)}
    host_config["LogConfig"] = logging
    if own is not None:
        from ketch.engine import userns

        host_config[userns.KEY] = userns.record_json(own)
        userns.open_root(ctx.root, ctx.containers().path(container_id), own.root)
    record = ContainerRecord(
        id=container_id, name=name, created=rfc3339(), image=image.id, image_ref=options.image,
        config=_docker_config(options, image_config, command), host_config=host_config,
        path=command[0], args=tuple(command[1:]),
    )  # fmt: skip
    store = ctx.containers()
    for attempt in range(20):
        try:
            store.add(record, durable=not options.remove)
            break
        except AlreadyExists:
            if options.name or attempt == 19:
                raise
            # another create took the generated name since we looked: draw again, as Docker does
            record = replace(record, name=names.generate(store))
    try:
        if own is not None:
            from ketch.engine import userns

            userns.own_directory(store.path(container_id), own.root)
        root_owner = own.root if own is not None else None
        ctx.images().snapshots.prepare(container_id, image.chain[-1] if image.chain else None, root_owner)
    except BaseException:
        store.remove(record)
        raise
    return record


def _network_plan(ctx: Context, options: RunOptions) -> tuple[str, list[Any]]:
    """Docker's NetworkMode and the networks joined; none and host need no network store."""
    if options.network in ("none", "host"):
        return options.network, []
    from ketch.engine import networks

    return networks.plan(ctx, options)


def _docker_config(options: RunOptions, image: dict[str, Any], command: list[str]) -> dict[str, Any]:
    """Docker's Config object, as inspect shows it."""
    from ketch.engine import runconfig

    entrypoint = list(options.entrypoint) if options.entrypoint is not None else image.get("Entrypoint")
    labels = {**(image.get("Labels") or {}), **options.labels}
    return {
        "Hostname": options.hostname, "Domainname": "", "User": runconfig.user_spec_of(options, image),
        "AttachStdin": options.interactive and not options.detach, "AttachStdout": not options.detach,
        "AttachStderr": not options.detach, "Tty": options.tty, "OpenStdin": options.interactive,
        "StdinOnce": options.interactive and not options.detach,
        "Env": runconfig.env_of(options, image, options.hostname or ""),
        "Cmd": list(options.command) if options.command else image.get("Cmd"),
        "Image": options.image, "Volumes": image.get("Volumes"),
        **({"ExposedPorts": exposed} if (exposed := _exposed(options, image)) else {}),
        "WorkingDir": runconfig.workdir_of(options, image), "Entrypoint": entrypoint or None,
        "OnBuild": None, "Labels": labels,
        "StopSignal": options.stop_signal or image.get("StopSignal") or "SIGTERM",
        **({"StopTimeout": options.stop_timeout} if options.stop_timeout is not None else {}),
        **({"Healthcheck": image["Healthcheck"]} if image.get("Healthcheck") else {}),
        "KetchCommand": command,
    }  # fmt: skip


def _network_config(options: RunOptions, mode: str, attachments: list[Any]) -> dict[str, Any]:
    """HostConfig's network part; KetchNetworks lists the networks joined (networks.Attachment)."""
    bindings: dict[str, list[dict[str, str]]] = {}
    if options.publish:  # the port parser loads only for -p
        from ketch.network import ports

        for spec in options.publish:
            for b in ports.parse(spec):
                host_port = f"{b.host_port}-{b.host_port_end}" if b.host_port_end else str(b.host_port or "")
                bindings.setdefault(b.key, []).append({"HostIp": b.host_ip, "HostPort": host_port})
    return {
        "NetworkMode": mode, "KetchNetworks": [a.to_json() for a in attachments],
        "PortBindings": bindings, "PublishAllPorts": options.publish_all, "Dns": list(options.dns),
        "DnsOptions": list(options.dns_options), "DnsSearch": list(options.dns_search),
        "ExtraHosts": list(options.add_hosts) or None,
    }  # fmt: skip


def _exposed(options: RunOptions, image: dict[str, Any]) -> dict[str, Any]:
    """Config.ExposedPorts: the image's EXPOSE, --expose and every -p container port."""
    keys = [*(image.get("ExposedPorts") or {}), *options.expose]
    if options.publish:
        from ketch.network import ports

        keys += [b.key for spec in options.publish for b in ports.parse(spec)]
    return {key: {} for key in dict.fromkeys(keys)}


def _host_config(options: RunOptions) -> dict[str, Any]:
    """Docker's HostConfig, plus the parsed options ketch starts the container from."""
    from ketch.engine.options import parse_restart

    policy, retries = parse_restart(options.restart)
    return {
        "RestartPolicy": {"Name": policy, "MaximumRetryCount": retries},
        "AutoRemove": options.remove, "Privileged": options.privileged, "ReadonlyRootfs": options.read_only,
        "CapAdd": list(options.cap_add) or None, "CapDrop": list(options.cap_drop) or None,
        "SecurityOpt": list(options.security_opt) or None, "Memory": options.memory,
        "MemorySwap": options.memory_swap, "MemoryReservation": options.memory_reservation,
        "NanoCpus": options.nano_cpus, "CpuShares": options.cpu_shares, "CpusetCpus": options.cpuset_cpus,
        "PidsLimit": options.pids_limit or None, "Init": options.init or None, "UsernsMode": options.userns,
        "Binds": [f"{m.source}:{m.target}{':ro' if m.readonly else ''}" for m in options.mounts if m.type == "bind"] or None,
        "Ketch": options_to_json(options),
    }  # fmt: skip


def image_for(ctx: Context, options: RunOptions, on_pull: Callable[[], Any] | None = None) -> ImageRecord:
    """The image to run, pulled according to --pull (missing, always, never)."""
    images = ctx.images()
    if options.pull != "always":
        try:
            return images.get(options.image)
        except NotFound:
            if options.pull == "never":
                raise
    from ketch.oci.image import Platform

    if on_pull is not None:
        on_pull()
    platform = Platform.parse(options.platform) if options.platform else None
    return images.pull(options.image, platform).image


def check_options(options: RunOptions) -> None:
    from ketch.engine.options import check

    if not options.image:
        raise InvalidArgument("requires at least 1 argument: IMAGE")
    check(options)
