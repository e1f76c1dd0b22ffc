"""Container verbs: run, create, start, stop, restart, kill, rm, wait, logs, ps, exec."""

from __future__ import annotations

import os
import sys

from ketch.cli import common
from ketch.cli.args import Flag, Parsed
from ketch.cli.common import command, out
from ketch.errors import InvalidArgument, KetchError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.engine.containers import ContainerRecord
    from ketch.engine.context import Context
    from ketch.engine.options import RunOptions

RUN_FLAGS = (
    Flag("detach", short="d"), Flag("interactive", short="i"), Flag("tty", short="t"), Flag("rm"),
    Flag("name", value=True), Flag("env", short="e", value=True, multi=True),
    Flag("env-file", value=True, multi=True), Flag("label", short="l", value=True, multi=True),
    Flag("workdir", short="w", value=True), Flag("user", short="u", value=True),
    Flag("entrypoint", value=True), Flag("hostname", short="h", value=True), Flag("restart", value=True),
    Flag("volume", short="v", value=True, multi=True), Flag("mount", value=True, multi=True),
    Flag("tmpfs", value=True, multi=True), Flag("read-only"), Flag("memory", short="m", value=True),
    Flag("memory-swap", value=True), Flag("memory-reservation", value=True), Flag("cpus", value=True),
    Flag("cpu-shares", short="c", value=True), Flag("cpuset-cpus", value=True), Flag("pids-limit", value=True),
    Flag("ulimit", value=True, multi=True), Flag("cap-add", value=True, multi=True),
    Flag("cap-drop", value=True, multi=True), Flag("privileged"), Flag("security-opt", value=True, multi=True),
    Flag("device", value=True, multi=True), Flag("init"), Flag("stop-signal", value=True),
    Flag("stop-timeout", value=True), Flag("health-cmd", value=True), Flag("health-interval", value=True),
    Flag("health-retries", value=True), Flag("health-timeout", value=True),
    Flag("health-start-period", value=True), Flag("no-healthcheck"), Flag("network", value=True),
    Flag("net", value=True), Flag("userns", value=True), Flag("pull", value=True), Flag("platform", value=True),
    Flag("quiet", short="q"), Flag("publish", short="p", value=True, multi=True), Flag("publish-all", short="P"),
    Flag("expose", value=True, multi=True), Flag("ip", value=True), Flag("ip6", value=True),
    Flag("mac-address", value=True), Flag("network-alias", value=True, multi=True),
    Flag("dns", value=True, multi=True), Flag("dns-search", value=True, multi=True),
    Flag("dns-option", value=True, multi=True), Flag("add-host", value=True, multi=True),
    Flag("detach-keys", value=True), Flag("log-driver", value=True), Flag("log-opt", value=True, multi=True),
)  # fmt: skip


def context(g: Parsed) -> Context:
    from ketch.engine.context import Context

    runroot = g.string("runroot") or os.environ.get("KETCH_RUNROOT") or "/run/ketch"
    driver = g.string("storage-driver") or common.engine_config(g).get("storage-driver", "auto")
    return Context(common.root(g), runroot, driver)


# --- options ------------------------------------------------------------------------------------------


def run_options(cmd: Parsed) -> RunOptions:
    """The parsed flags as RunOptions (files read, bare -e VARs looked up)."""
    from ketch.engine import options as o

    if not cmd.args:
        raise InvalidArgument('"ketch run" requires at least 1 argument: IMAGE')
    mounts = [*map(o.parse_volume, cmd.strings("volume")), *map(o.parse_mount, cmd.strings("mount")),
              *map(o.parse_tmpfs, cmd.strings("tmpfs"))]  # fmt: skip
    entrypoint = cmd.flags.get("entrypoint")
    options = o.RunOptions(
        image=cmd.args[0], command=tuple(cmd.args[1:]), name=cmd.string("name"),
        detach=cmd.boolean("detach"), interactive=cmd.boolean("interactive"), tty=cmd.boolean("tty"),
        remove=cmd.boolean("rm"), env=tuple(cmd.strings("env")), env_files=tuple(cmd.strings("env-file")),
        labels=o.parse_labels(cmd.strings("label")), workdir=cmd.string("workdir"), user=cmd.string("user"),
        entrypoint=None if entrypoint is None else tuple(str(entrypoint).split() or [""]),
        hostname=cmd.string("hostname"), restart=cmd.string("restart") or "no", mounts=tuple(mounts),
        read_only=cmd.boolean("read-only"), **_resources(cmd),
        ulimits=tuple(map(o.parse_ulimit, cmd.strings("ulimit"))), cap_add=tuple(cmd.strings("cap-add")),
        cap_drop=tuple(cmd.strings("cap-drop")), privileged=cmd.boolean("privileged"),
        security_opt=tuple(cmd.strings("security-opt")), devices=tuple(map(o.parse_device, cmd.strings("device"))),
        init=cmd.boolean("init"), stop_signal=cmd.string("stop-signal"),
        stop_timeout=cmd.integer("stop-timeout") if cmd.string("stop-timeout") else None,
        health=_health(cmd), no_healthcheck=cmd.boolean("no-healthcheck"),
        network=cmd.string("network") or cmd.string("net") or "bridge", userns=cmd.string("userns"),
        pull=cmd.string("pull") or "missing", platform=cmd.string("platform"), **_networking(cmd),
        log_driver=cmd.string("log-driver"), log_opts=o.parse_log_opts(cmd.strings("log-opt")),
    )  # fmt: skip
    options = o.resolve_files(options)
    o.check(options)
    return options


def _networking(cmd: Parsed) -> dict[str, Any]:
    def many(flag: str) -> tuple[str, ...]:
        return tuple(cmd.strings(flag))

    expose = [e if "/" in e else f"{e}/tcp" for e in cmd.strings("expose")]
    return {
        "publish": many("publish"), "publish_all": cmd.boolean("publish-all"), "expose": tuple(expose),
        "ip": cmd.string("ip"), "ip6": cmd.string("ip6"), "mac_address": cmd.string("mac-address"),
        "aliases": many("network-alias"), "dns": many("dns"), "dns_search": many("dns-search"),
        "dns_options": many("dns-option"), "add_hosts": many("add-host"),
    }  # fmt: skip


def _resources(cmd: Parsed) -> dict[str, Any]:
    from ketch.engine import options as o

    def size(flag: str, unlimited: bool = False) -> int:
        text = cmd.string(flag)
        return o.parse_size(text, flag, unlimited=unlimited) if text else 0

    return {
        "memory": size("memory"), "memory_swap": size("memory-swap", unlimited=True),
        "memory_reservation": size("memory-reservation"),
        "nano_cpus": o.parse_cpus(cmd.string("cpus")) if cmd.string("cpus") else 0,
        "cpu_shares": cmd.integer("cpu-shares"), "cpuset_cpus": cmd.string("cpuset-cpus"),
        "pids_limit": cmd.integer("pids-limit"),
    }  # fmt: skip


def _health(cmd: Parsed) -> Any:
    from ketch.engine import options as o

    if not cmd.string("health-cmd"):
        return None

    def duration(flag: str, default: float) -> float:
        return o.parse_duration(cmd.string(flag), flag) if cmd.string(flag) else default

    return o.Health(
        test=("CMD-SHELL", cmd.string("health-cmd")), interval=duration("health-interval", 30),
        timeout=duration("health-timeout", 30), retries=cmd.integer("health-retries", 3),
        start_period=duration("health-start-period", 0),
    )  # fmt: skip


# --- run, create, start ------------------------------------------------------------------------------


def _create(ctx: Context, options: RunOptions) -> ContainerRecord:
    from ketch.engine.create import create, image_for

    def announce() -> None:
        sys.stderr.write(f"Unable to find image '{options.image}' locally\n")

    image = image_for(ctx, options, announce)
    images = ctx.images()
    config = images.config_json(image).get("config") or {}
    return create(ctx, options, image, config)


@command(*RUN_FLAGS, positional_stops=True, error_code=125)
def create(g: Parsed, cmd: Parsed) -> int:
    ctx = context(g)
    out(_create(ctx, run_options(cmd)).id)
    return 0


@command(*RUN_FLAGS, positional_stops=True, error_code=125)
def run(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import lifecycle

    ctx = context(g)
    options = run_options(cmd)
    record = _create(ctx, options)
    try:
        started = lifecycle.start(ctx, record, attach=not options.detach)
    except KetchError as exc:
        if options.remove:
            lifecycle.remove_container(ctx, record, volumes=True, force=True)
        sys.stderr.write(f"Error: {exc}\n")
        return lifecycle.exit_code_for(exc)
    if options.detach:
        started.sock.close()
        out(record.id)
        return 0
    return _attach(started, options.interactive, options.tty, cmd)


@command(Flag("attach", short="a"), Flag("interactive", short="i"), Flag("detach-keys", value=True))
def start(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import lifecycle

    ctx = context(g)
    if not cmd.args:
        raise InvalidArgument('"ketch start" requires at least 1 argument')
    attach = cmd.boolean("attach")
    if attach and len(cmd.args) > 1:
        raise InvalidArgument("you cannot start and attach multiple containers at once")
    status = 0
    for text in cmd.args:
        try:
            record = ctx.containers().find(text)
            if ctx.containers().state(record.id).running and not attach:
                out(text)
                continue
            started = lifecycle.start(ctx, record, attach=attach)
            if attach:
                return _attach(started, cmd.boolean("interactive"), bool(record.config.get("Tty")), cmd)
            started.sock.close()
            out(text)
        except KetchError as exc:
            sys.stderr.write(f"Error response from daemon: {exc}\n")
            status = 1
    return status


def _attach(started: Any, stdin: bool, tty: bool, cmd: Parsed | None = None) -> int:
    """Stream the container's output (and our stdin) until it exits (its exit code), or until
    the detach keys are typed (0)."""
    from ketch.cli.attach import DEFAULT_DETACH_KEYS, Session

    given = cmd.flags.get("detach-keys") if cmd is not None else None
    keys = given if isinstance(given, str) else DEFAULT_DETACH_KEYS
    return Session(started, stdin, tty, keys).run()


# --- stop, kill, restart, rm, wait --------------------------------------------------------------------


def _each(g: Parsed, cmd: Parsed, verb: str, action: Any, echo: bool = True) -> int:
    """Apply `action(ctx, record)` to each named container, Docker-style: report errors, go on."""
    if not cmd.args:
        raise InvalidArgument(f'"ketch {verb}" requires at least 1 argument')
    ctx = context(g)
    status = 0
    for text in cmd.args:
        try:
            action(ctx, ctx.containers().find(text))
            if echo:
                out(text)
        except KetchError as exc:
            sys.stderr.write(f"Error response from daemon: {exc}\n")
            status = 1
    return status


@command(Flag("time", short="t", value=True), Flag("signal", short="s", value=True))
def stop(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import lifecycle
    from ketch.runtime.signals import parse_signal

    timeout = float(cmd.integer("time")) if cmd.string("time") else None
    sig = parse_signal(cmd.string("signal")) if cmd.string("signal") else 0
    return _each(g, cmd, "stop", lambda ctx, r: lifecycle.stop(ctx, r, timeout, sig))


@command(Flag("time", short="t", value=True))
def restart(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import lifecycle

    timeout = float(cmd.integer("time")) if cmd.string("time") else None

    def again(ctx: Context, record: ContainerRecord) -> None:
        lifecycle.stop(ctx, record, timeout)
        lifecycle.start(ctx, record).sock.close()

    return _each(g, cmd, "restart", again)


@command(Flag("signal", short="s", value=True))
def kill(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import lifecycle
    from ketch.runtime.signals import parse_signal

    sig = parse_signal(cmd.string("signal") or "SIGKILL")
    return _each(g, cmd, "kill", lambda ctx, r: lifecycle.kill(ctx, r, sig))


@command(Flag("force", short="f"), Flag("volumes", short="v"), Flag("link", short="l"))
def rm(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import lifecycle

    force, volumes = cmd.boolean("force"), cmd.boolean("volumes")
    return _each(g, cmd, "rm", lambda ctx, r: lifecycle.remove_container(ctx, r, volumes, force))


@command()
def wait(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import lifecycle

    def show(ctx: Context, record: ContainerRecord) -> None:
        out(str(lifecycle.wait(ctx, record, None)))

    return _each(g, cmd, "wait", show, echo=False)


# --- logs -------------------------------------------------------------------------------------------------


@command(Flag("follow", short="f"), Flag("tail", short="n", value=True), Flag("timestamps", short="t"),
         Flag("since", value=True), Flag("until", value=True), Flag("details"))  # fmt: skip
def logs(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import logs as log

    ctx = context(g)
    if len(cmd.args) != 1:
        raise InvalidArgument('"ketch logs" requires exactly 1 argument')
    store = ctx.containers()
    record = store.find(cmd.args[0])
    if log.log_config_of(record)[0] == "none":
        sys.stderr.write("Error response from daemon: configured logging driver does not support reading\n")
        return 1
    tail_text = cmd.string("tail") or "all"
    tail = -1 if tail_text == "all" else cmd.integer("tail")
    since, until = _when(cmd.string("since")), _when(cmd.string("until"))
    stamps, details = cmd.boolean("timestamps"), cmd.boolean("details")
    reader = log.LogReader(store.path(record.id, f"{record.id}-json.log"))
    try:
        for entry in reader.entries(tail, since, until):
            _show(entry, stamps, details)
        if cmd.boolean("follow"):
            for entry in reader.follow(lambda: store.state(record.id).running, since, until):
                _show(entry, stamps, details)
    finally:
        reader.close()
    return 0


def _when(text: str) -> float:
    """--since/--until: an RFC 3339 time, a Unix timestamp, or a duration before now ("10m")."""
    import time

    from ketch.clock import parse_rfc3339
    from ketch.engine.options import go_duration

    if not text:
        return 0.0
    if "T" in text or (text.count("-") == 2 and ":" not in text[:4]):
        return parse_rfc3339(text if "T" in text else text + "T00:00:00Z")
    try:
        return float(text)
    except ValueError:
        return time.time() - go_duration(text)


def _show(entry: Any, timestamps: bool, details: bool) -> None:
    """One entry as Docker's daemon streams it: [time ][attrs ]line (--details: k=v,k2=v2, maybe empty)."""
    from ketch.engine import logs as log

    line = f"{log.details(entry.attrs)} {entry.log}" if details else entry.log
    target = sys.stdout if entry.stream == "stdout" else sys.stderr
    target.write(f"{log.fixed_time(entry.time)} {line}" if timestamps else line)
    target.flush()


# --- exec -------------------------------------------------------------------------------------------------


@command(Flag("detach", short="d"), Flag("interactive", short="i"), Flag("tty", short="t"),
         Flag("env", short="e", value=True, multi=True), Flag("workdir", short="w", value=True),
         Flag("user", short="u", value=True), Flag("privileged"), Flag("detach-keys", value=True),
         positional_stops=True, error_code=126)  # fmt: skip
def exec_(g: Parsed, cmd: Parsed) -> int:
    from ketch.cli.attach import DEFAULT_DETACH_KEYS, Escape, detach_keys
    from ketch.engine.execute import ExecOptions, execute

    if len(cmd.args) < 2:
        raise InvalidArgument('"ketch exec" requires at least 2 arguments')
    ctx = context(g)
    record = ctx.containers().find(cmd.args[0])
    opts = ExecOptions(
        args=tuple(cmd.args[1:]), env=tuple(cmd.strings("env")), workdir=cmd.string("workdir"),
        user=cmd.string("user"), tty=cmd.boolean("tty"), interactive=cmd.boolean("interactive"),
        detach=cmd.boolean("detach"), privileged=cmd.boolean("privileged"),
    )  # fmt: skip
    given = cmd.flags.get("detach-keys")
    escape = Escape(detach_keys(given if isinstance(given, str) else DEFAULT_DETACH_KEYS))

    def typed(data: bytes) -> tuple[bytes, bool]:
        return escape.feed(data), escape.detached

    return execute(ctx, record, opts, typed)
