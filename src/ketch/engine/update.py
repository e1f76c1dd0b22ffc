"""`update`: new resource limits for a container, applied live and kept for its next starts."""

from __future__ import annotations

from ketch.record import replace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.engine.containers import ContainerRecord
    from ketch.engine.context import Context

_HOST_CONFIG_KEYS = {
    "memory": "Memory", "memory_swap": "MemorySwap", "memory_reservation": "MemoryReservation",
    "nano_cpus": "NanoCpus", "cpu_shares": "CpuShares", "cpuset_cpus": "CpusetCpus", "pids_limit": "PidsLimit",
}  # fmt: skip


def update(ctx: Context, record: ContainerRecord, changes: dict[str, Any], restart: str = "") -> None:
    from ketch.engine import specconv
    from ketch.engine.create import options_from_json, options_to_json
    from ketch.engine.options import check, parse_restart

    options = replace(options_from_json(record.host_config["Ketch"]), **changes)
    if restart:
        options = replace(options, restart=restart)
    check(options)
    store = ctx.containers()
    with store.lock(record.id):
        host_config = dict(record.host_config, Ketch=options_to_json(options))
        for key, value in changes.items():
            host_config[_HOST_CONFIG_KEYS[key]] = value
        if restart:
            name, retries = parse_restart(restart)
            host_config["RestartPolicy"] = {"Name": name, "MaximumRetryCount": retries}
        store.update_record(replace(record, host_config=host_config))
    if changes and store.state(record.id).running:
        from ketch.runtime.container import Runtime

        resources = specconv.resources_of(options)
        resources.pop("devices", None)  # unchanged by update; rewriting them live is not needed
        Runtime(ctx.runtime_root).load(record.id).update(resources)
