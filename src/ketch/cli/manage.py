"""Container verbs around a running container: pause, unpause, top, stats, rename, update, attach, prune."""

from __future__ import annotations

import sys

from ketch.cli import common
from ketch.cli.args import Flag, Parsed
from ketch.cli.common import command, out
from ketch.errors import Conflict, InvalidArgument, KetchError, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.engine.containers import ContainerRecord
    from ketch.engine.context import Context


def _runtime_container(ctx: Context, record: ContainerRecord) -> Any:
    from ketch.runtime.container import Runtime

    if not ctx.containers().state(record.id).running:
        raise Conflict(f"Container {record.id} is not running")
    try:
        return Runtime(ctx.runtime_root).load(record.id)
    except NotFound:
        raise Conflict(f"Container {record.id} is not running") from None


@command()
def pause(g: Parsed, cmd: Parsed) -> int:
    from ketch.cli.containers import _each

    def act(ctx: Context, record: ContainerRecord) -> None:
        if ctx.containers().state(record.id).status == "paused":
            raise Conflict(f"Container {record.id} is already paused")
        _runtime_container(ctx, record).pause()
        ctx.containers().update_state(record.id, status="paused")

    return _each(g, cmd, "pause", act)


@command()
def unpause(g: Parsed, cmd: Parsed) -> int:
    from ketch.cli.containers import _each

    def act(ctx: Context, record: ContainerRecord) -> None:
        if ctx.containers().state(record.id).status != "paused":
            raise Conflict(f"Container {record.id} is not paused")
        _runtime_container(ctx, record).resume()
        ctx.containers().update_state(record.id, status="running")

    return _each(g, cmd, "unpause", act)


@command(positional_stops=True)
def top(g: Parsed, cmd: Parsed) -> int:
    """The container's processes, through the host's ps (Docker's default columns: -ef)."""
    import subprocess

    from ketch.cli.containers import context

    if not cmd.args:
        raise InvalidArgument('"ketch top" requires at least 1 argument')
    ctx = context(g)
    record = ctx.containers().find(cmd.args[0])
    pids = _runtime_container(ctx, record).processes()
    ps_args = cmd.args[1:] or ["-ef"]
    result = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InvalidArgument(f"ps {' '.join(ps_args)}: {result.stderr.strip()}")
    lines = result.stdout.splitlines()
    column = lines[0].split().index("PID") if lines and "PID" in lines[0].split() else 1
    wanted = {str(p) for p in pids}
    out("\n".join([lines[0], *(line for line in lines[1:] if line.split()[column] in wanted)]))
    return 0


STATS_HEADER = {
    "ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT",
    "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS",
}  # fmt: skip
STATS_TABLE = (
    "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"
)


@command(Flag("all", short="a"), Flag("no-stream"), Flag("no-trunc"), Flag("format", value=True))
def stats(g: Parsed, cmd: Parsed) -> int:
    """One sample (--no-stream), or a live view redrawn every second until interrupted."""
    import time

    from ketch.cli.containers import context

    ctx = context(g)
    store = ctx.containers()
    records = [store.find(t) for t in cmd.args] if cmd.args else store.all()
    if not cmd.args and not cmd.boolean("all"):
        records = [r for r in records if store.state(r.id).running]
    fmt = cmd.string("format") or STATS_TABLE
    live = not cmd.boolean("no-stream") and sys.stdout.isatty()
    while True:
        rows = _sample(ctx, records, cmd.boolean("no-trunc"))
        text = common.render(fmt, rows, STATS_HEADER)
        out(("\x1b[2J\x1b[H" if live else "") + text)
        if not live:
            return 0
        time.sleep(1)


def _sample(ctx: Context, records: list[ContainerRecord], no_trunc: bool) -> list[dict[str, Any]]:
    """CPU % over 100 ms, as Docker computes it: container CPU time over host CPU time, times CPUs."""
    import os
    import time

    before = {r.id: _usage(ctx, r) for r in records}
    host_before = _host_cpu()
    time.sleep(0.1)
    host_after = _host_cpu()
    rows = []
    for record in records:
        now = _usage(ctx, record)
        delta, host = now["cpu"] - before[record.id]["cpu"], host_after - host_before
        cpu = delta / host * (os.cpu_count() or 1) * 100 if host > 0 and now["running"] else 0.0
        limit = now["limit"] or _host_memory()
        rows.append({
            "ID": record.id if no_trunc else record.short_id, "Name": record.name, "CPUPerc": f"{cpu:.2f}%",
            "MemUsage": f"{_bytes(now['mem'])} / {_bytes(limit)}",
            "MemPerc": f"{now['mem'] / limit * 100 if limit else 0:.2f}%", "NetIO": "0B / 0B",
            "BlockIO": f"{common.human_size(now['read'])} / {common.human_size(now['write'])}",
            "PIDs": str(now["pids"]),
        })  # fmt: skip
    return rows


def _usage(ctx: Context, record: ContainerRecord) -> dict[str, Any]:
    try:
        data = _runtime_container(ctx, record).stats()["data"]
    except KetchError:
        return {"cpu": 0, "mem": 0, "limit": 0, "pids": 0, "read": 0, "write": 0, "running": False}
    memory = data.get("memory", {}).get("usage", {})
    blkio = data.get("blkio", {}).get("ioServiceBytesRecursive") or []
    return {
        "cpu": data.get("cpu", {}).get("usage", {}).get("total", 0), "mem": memory.get("usage", 0),
        "limit": memory.get("limit", 0) if memory.get("limit", 0) < 1 << 60 else 0,
        "pids": data.get("pids", {}).get("current", 0),
        "read": sum(e.get("value", 0) for e in blkio if e.get("op", "").lower() == "read"),
        "write": sum(e.get("value", 0) for e in blkio if e.get("op", "").lower() == "write"), "running": True,
    }  # fmt: skip


def _host_cpu() -> int:
    """Host CPU time in nanoseconds (all CPUs), from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = f.readline().split()[1:8]
    return sum(int(x) for x in fields) * 10_000_000  # USER_HZ is 100


def _host_memory() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        return int(f.readline().split()[1]) * 1024


def _bytes(n: float) -> str:
    """Docker's binary units for memory: 1.5MiB, 23.4GiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.4g}{units[i]}"


@command()
def rename(g: Parsed, cmd: Parsed) -> int:
    from ketch.cli.containers import context

    if len(cmd.args) != 2:
        raise InvalidArgument('"ketch rename" requires exactly 2 arguments')
    ctx = context(g)
    store = ctx.containers()
    record = store.find(cmd.args[0])
    with store.lock(record.id):
        store.rename(record, cmd.args[1])
    return 0


@command(Flag("memory", short="m", value=True), Flag("memory-swap", value=True), Flag("memory-reservation", value=True),
         Flag("cpus", value=True), Flag("cpu-shares", short="c", value=True), Flag("cpuset-cpus", value=True),
         Flag("pids-limit", value=True), Flag("restart", value=True))  # fmt: skip
def update(g: Parsed, cmd: Parsed) -> int:
    """Change limits of running containers live, and record them (and --restart) for later starts."""
    from ketch.cli.containers import _each, _resources
    from ketch.engine import update as engine_update

    changes = {k: v for k, v in _resources(cmd).items() if v or cmd.string(k.replace("_", "-"))}
    restart = cmd.string("restart")
    if not changes and not restart:
        raise InvalidArgument("you must provide one or more flags when using this command")
    return _each(g, cmd, "update", lambda ctx, r: engine_update.update(ctx, r, changes, restart))


@command(Flag("no-stdin"), Flag("sig-proxy", value=True), Flag("detach-keys", value=True))
def attach(g: Parsed, cmd: Parsed) -> int:
    from ketch.cli.attach import DEFAULT_DETACH_KEYS, Session
    from ketch.cli.containers import context
    from ketch.engine import lifecycle

    if len(cmd.args) != 1:
        raise InvalidArgument('"ketch attach" requires exactly 1 argument')
    ctx = context(g)
    record = ctx.containers().find(cmd.args[0])
    started = lifecycle.attach(ctx, record)
    stdin = bool(record.config.get("OpenStdin")) and not cmd.boolean("no-stdin")
    given = cmd.flags.get("detach-keys")
    keys = given if isinstance(given, str) else DEFAULT_DETACH_KEYS
    return Session(started, stdin, bool(record.config.get("Tty")), keys).run()


def _prune_filters(filters: list[tuple[str, str]]) -> dict[str, list[str]]:
    chosen: dict[str, list[str]] = {"until": [], "label": [], "label!": []}
    for key, value in filters:
        if key not in chosen:
            raise InvalidArgument(f"invalid filter '{key}'")
        chosen[key].append(value)
    return chosen


def _label_matches(labels: dict[str, str], want: str) -> bool:
    key, sep, value = want.partition("=")
    return key in labels and (not sep or labels[key] == value)


@command(Flag("force", short="f"), Flag("filter", value=True, multi=True))
def prune(g: Parsed, cmd: Parsed) -> int:
    """Remove every stopped container (narrowed by --filter until=, label=, label!=), as Docker does."""
    from ketch.cli.containers import _when, context
    from ketch.clock import parse_rfc3339
    from ketch.engine import lifecycle

    chosen = _prune_filters(common.filters(cmd.strings("filter")))
    if not cmd.boolean("force") and not common.confirm("WARNING! This will remove all stopped containers."):
        return 0
    ctx = context(g)
    store = ctx.containers()
    removed = []
    for record in store.all():
        labels = record.config.get("Labels") or {}
        if chosen["until"] and parse_rfc3339(record.created) >= min(_when(u) for u in chosen["until"]):
            continue
        if not all(_label_matches(labels, want) for want in chosen["label"]):
            continue
        if any(_label_matches(labels, unwanted) for unwanted in chosen["label!"]):
            continue
        if not store.state(record.id).running:
            lifecycle.remove_container(ctx, record)
            removed.append(record.id)
    if removed:
        out("Deleted Containers:\n" + "\n".join(removed) + "\n")
    out("Total reclaimed space: 0B")
    return 0
