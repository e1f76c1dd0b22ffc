"""How containers look from outside: Docker's inspect JSON and ps status lines (pure given the records)."""

from __future__ import annotations

import os
import time

from ketch.clock import ZERO, human_duration, parse_rfc3339

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.engine.containers import ContainerRecord, State
    from ketch.engine.context import Context


def state_json(state: State) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Status": state.status, "Running": state.status in ("running", "paused"),
        "Paused": state.status == "paused", "Restarting": state.status == "restarting",
        "OOMKilled": state.oom_killed, "Dead": state.status == "dead", "Pid": state.pid,
        "ExitCode": state.exit_code, "Error": state.error, "StartedAt": state.started_at,
        "FinishedAt": state.finished_at,
    }  # fmt: skip
    if state.health:
        out["Health"] = state.health
    return out


def container_json(ctx: Context, record: ContainerRecord, state: State) -> dict[str, Any]:
    """Docker's `container inspect` document."""
    from ketch.engine import networks

    store = ctx.containers()
    directory = store.path(record.id)
    host_config = {k: v for k, v in record.host_config.items() if not k.startswith("Ketch")}
    config = {k: v for k, v in record.config.items() if not k.startswith("Ketch")}
    config["Hostname"] = config.get("Hostname") or record.id[:12]
    # Docker sets LogPath when the json-file logger first starts, and never for other drivers
    json_file = (record.host_config.get("LogConfig") or {}).get("Type", "json-file") == "json-file"
    log_path = (
        os.path.join(directory, f"{record.id}-json.log") if json_file and state.started_at != ZERO else ""
    )
    return {
        "Id": record.id, "Created": record.created, "Path": record.path, "Args": list(record.args),
        "State": state_json(state), "Image": record.image,
        "ResolvConfPath": os.path.join(directory, "resolv.conf"),
        "HostnamePath": os.path.join(directory, "hostname"), "HostsPath": os.path.join(directory, "hosts"),
        "LogPath": log_path, "Name": "/" + record.name,
        "RestartCount": state.restart_count, "Driver": "overlay2" if ctx.driver != "vfs" else "vfs",
        "Platform": "linux", "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "", "ExecIDs": None,
        "HostConfig": host_config, "Mounts": mounts_json(ctx, record), "Config": config,
        "NetworkSettings": networks.container_settings(ctx, record, state.status in ("running", "paused")),
    }  # fmt: skip


def mounts_json(ctx: Context, record: ContainerRecord) -> list[dict[str, Any]]:
    from ketch.engine.create import options_from_json

    options = options_from_json(record.host_config["Ketch"])
    anonymous = record.host_config.get("KetchAnonymousVolumes") or {}
    out = []
    for m in options.mounts:
        if m.type == "tmpfs":
            continue
        name = m.source if m.type == "volume" else ""
        name = name or anonymous.get(m.target, "")
        source = os.path.join(ctx.root, "volumes", name, "_data") if m.type == "volume" else m.source
        entry = {"Type": m.type, "Source": source, "Destination": m.target, "Mode": "",
                 "RW": not m.readonly, "Propagation": "rprivate" if m.type == "bind" else ""}  # fmt: skip
        if m.type == "volume":
            entry.update(Name=name, Driver="local")
        out.append(entry)
    return out


def status_line(state: State, now: float | None = None) -> str:
    """What `ps` shows: "Up 5 seconds", "Exited (0) 3 minutes ago", "Created", "Restarting (1) ..."."""
    now = time.time() if now is None else now
    if state.status in ("running", "paused"):
        up = f"Up {human_duration(now - parse_rfc3339(state.started_at))}"
        health = state.health.get("Status") if state.health else ""
        health = "health: starting" if health == "starting" else health
        suffix = " (Paused)" if state.status == "paused" else f" ({health})" if health else ""
        return up + suffix
    if state.status == "restarting":
        return f"Restarting ({state.exit_code}) {human_duration(now - parse_rfc3339(state.finished_at))} ago"
    if state.status == "exited" and state.finished_at != ZERO:
        return f"Exited ({state.exit_code}) {human_duration(now - parse_rfc3339(state.finished_at))} ago"
    return state.status.capitalize()


def command_line(record: ContainerRecord, width: int = 20) -> str:
    """ps's COMMAND: the quoted command line, cut to `width` with an ellipsis (0: whole)."""
    text = " ".join([record.path, *record.args])
    if width and len(text) > width:
        text = text[: width - 1] + "…"
    return f'"{text}"'
