"""ketch-oci: a runc-compatible command line over ketch.runtime."""

from __future__ import annotations

import os
import sys

from ketch import jsonio
from ketch.cli.args import Flag, Parsed, parse, usage
from ketch.errors import InvalidArgument, KetchError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

DEFAULT_ROOT = "/run/ketch-oci"

GLOBAL = (
    Flag("root", value=True, default=DEFAULT_ROOT, help="state directory"),
    Flag("log", value=True, help="log file (default stderr)"),
    Flag("log-format", value=True, default="text", help="text or json"),
    Flag("debug", help="debug output in the log"),
    Flag("systemd-cgroup", help="not supported: refused"),
    Flag("rootless", value=True, help="accepted: true, false or auto"),
    Flag("criu", value=True, help="not supported"),
    Flag("help", "h", help="show help"),
    Flag("version", "v", help="print the version"),
)
_CREATE = (
    Flag("bundle", "b", value=True, default=".", help="path to the bundle"),
    Flag("console-socket", value=True, help="unix socket that receives the pty master"),
    Flag("pid-file", value=True, help="file to write the init pid to"),
    Flag("no-pivot", help="use MS_MOVE + chroot instead of pivot_root"),
    Flag("no-new-keyring", help="keep the caller's session keyring"),
    Flag("preserve-fds", value=True, help="pass N extra fds (3..3+N-1)"),
)
_EXEC = (
    Flag("process", "p", value=True, help="process.json to run"),
    Flag("console-socket", value=True),
    Flag("pid-file", value=True),
    Flag("cwd", value=True),
    Flag("env", "e", value=True, multi=True),
    Flag("tty", "t"),
    Flag("user", "u", value=True, help="uid[:gid]"),
    Flag("additional-gids", "g", value=True, multi=True),
    Flag("detach", "d"),
    Flag("cap", "c", value=True, multi=True),
    Flag("no-new-privs"),
    Flag("preserve-fds", value=True),
    Flag("process-label", value=True),
    Flag("apparmor", value=True),
    Flag("ignore-paused"),
)
COMMANDS: dict[str, tuple[Flag, ...]] = {
    "create": _CREATE,
    "run": (*_CREATE, Flag("detach", "d"), Flag("keep")),
    "start": (),
    "state": (),
    "kill": (Flag("all", "a"),),
    "delete": (Flag("force", "f"),),
    "exec": _EXEC,
    "ps": (Flag("format", "f", value=True, default="table"),),
    "list": (Flag("format", "f", value=True, default="table"), Flag("quiet", "q")),
    "pause": (),
    "resume": (),
    "update": (
        Flag("resources", "r", value=True, help="linux.resources JSON file ('-' for stdin)"),
        Flag("memory", value=True),
        Flag("memory-swap", value=True),
        Flag("memory-reservation", value=True),
        Flag("cpu-shares", value=True),
        Flag("cpu-quota", value=True),
        Flag("cpu-period", value=True),
        Flag("cpuset-cpus", value=True),
        Flag("cpuset-mems", value=True),
        Flag("pids-limit", value=True),
        Flag("blkio-weight", value=True),
    ),
    "events": (Flag("stats"), Flag("interval", value=True, default="5s")),
    "features": (),
    "spec": (Flag("bundle", "b", value=True, default="."), Flag("rootless")),
}
ALIASES = {"ls": "list", "rm": "delete"}


class Log:
    """runc's --log/--log-format: conmon and podman read errors from this file."""

    def __init__(self, path: str, fmt: str, debug: bool) -> None:
        self.path, self.json, self.debug_on = path, fmt == "json", debug

    def report(self, warnings: list[str]) -> None:
        """Warnings from the library; "debug: ..." ones only show with --debug."""
        for w in warnings:
            if w.startswith("debug: "):
                self.write("debug", w.removeprefix("debug: "))
            else:
                self.write("warning", w)

    def write(self, level: str, msg: str) -> None:
        if level == "debug" and not self.debug_on:
            return
        if self.path:
            import time

            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            line = (
                jsonio.dumps({"level": level, "msg": msg, "time": stamp}) if self.json else f"{level}: {msg}"
            )
            try:
                with open(self.path, "a") as f:
                    f.write(line + "\n")
            except OSError:
                pass
        if level in ("error", "warning") and (level == "error" or not self.path):
            sys.stderr.write(f"ketch-oci: {msg}\n" if level == "error" else f"ketch-oci: warning: {msg}\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    log = Log("", "text", False)
    try:
        g = parse(argv, GLOBAL, stop_at_positional=True, what="ketch-oci")
        log = Log(g.string("log"), g.string("log-format"), g.boolean("debug"))
        if g.boolean("version"):
            return _version()
        if g.boolean("help") or not g.args:
            return _help()
        _refuse_globals(g)
        verb = ALIASES.get(g.args[0], g.args[0])
        if verb not in COMMANDS:
            raise InvalidArgument(f"unknown command {g.args[0]!r}; see ketch-oci --help")
        stop = verb == "exec"
        cmd = parse(g.args[1:], COMMANDS[verb], stop_at_positional=stop, what=verb)
        return VERBS[verb](g.string("root"), cmd, log)
    except KetchError as exc:
        log.write("error", str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


def _refuse_globals(g: Parsed) -> None:
    if g.boolean("systemd-cgroup"):
        raise InvalidArgument("--systemd-cgroup: the systemd cgroup driver is not supported")
    if g.string("criu"):
        raise InvalidArgument("--criu: checkpoint/restore is not supported")
    if g.string("log-format") not in ("text", "json"):
        raise InvalidArgument(f"--log-format: expected text or json, got {g.string('log-format')!r}")


def _version() -> int:
    from ketch import __version__
    from ketch.oci.runtime import OCI_VERSION

    print(f"ketch-oci version {__version__}\nspec: {OCI_VERSION}")
    return 0


def _help() -> int:
    print("usage: ketch-oci [global flags] COMMAND [flags] [ID] ...\n\ncommands: " + ", ".join(COMMANDS))
    print("\nglobal flags:\n" + usage(GLOBAL))
    return 0


def _one_id(cmd: Parsed, verb: str, extra: int = 0) -> str:
    if not cmd.args:
        raise InvalidArgument(f"{verb}: a container id is required")
    if len(cmd.args) > 1 + extra:
        raise InvalidArgument(f"{verb}: unexpected arguments: {' '.join(cmd.args[1 + extra :])}")
    return cmd.args[0]


def _runtime(root: str) -> Any:
    from ketch.runtime.container import Runtime

    return Runtime(root)


# --- verbs -----------------------------------------------------------------------------------


def _create_opts(cmd: Parsed) -> Any:
    from ketch.runtime.plan import CreateOptions

    return CreateOptions(
        no_pivot=cmd.boolean("no-pivot"), new_keyring=not cmd.boolean("no-new-keyring"),
        preserve_fds=cmd.integer("preserve-fds"),
    )  # fmt: skip


def cmd_create(root: str, cmd: Parsed, log: Log) -> int:
    from ketch.runtime import lifecycle

    cid = _one_id(cmd, "create")
    warnings: list[str] = []
    io = lifecycle.Stdio(cmd.string("console-socket"), cmd.string("pid-file"))
    lifecycle.create(_runtime(root), cid, cmd.string("bundle"), _create_opts(cmd), io, warnings)
    log.report(warnings)
    return 0


def cmd_run(root: str, cmd: Parsed, log: Log) -> int:
    from ketch.runtime import lifecycle

    cid = _one_id(cmd, "run")
    rt = _runtime(root)
    warnings: list[str] = []
    io = lifecycle.Stdio(cmd.string("console-socket"), cmd.string("pid-file"))
    detach = cmd.boolean("detach")
    console, pty_end = None, None
    if not detach:
        lifecycle.become_subreaper()
        if not io.console_socket and _wants_terminal(cmd.string("bundle")):
            import socket

            console, pty_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ctr = lifecycle.create(rt, cid, cmd.string("bundle"), _create_opts(cmd), io, warnings, console)
    log.report(warnings)
    ctr.start()
    if detach:
        return 0
    try:
        if pty_end is not None:
            from ketch.runtime.channel import recv_fd

            code = lifecycle.proxy_terminal(recv_fd(pty_end), ctr.record.pid)
        else:
            code = lifecycle.wait_exit(ctr.record.pid)
    finally:
        if not cmd.boolean("keep"):
            ctr.delete(force=True)
    return code


def _wants_terminal(bundle: str) -> bool:
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            return bool(jsonio.loads(f.read()).get("process", {}).get("terminal"))
    except (OSError, ValueError, AttributeError):
        return False


def _locked(root: str, cmd: Parsed, verb: str, action: Callable[[Any], None]) -> int:
    """Load the container under its lock and apply one transition."""
    rt = _runtime(root)
    cid = _one_id(cmd, verb)
    with rt.lock(cid):
        action(rt.load(cid))
    return 0


def cmd_start(root: str, cmd: Parsed, log: Log) -> int:
    return _locked(root, cmd, "start", lambda c: c.start())


def cmd_state(root: str, cmd: Parsed, log: Log) -> int:
    print(jsonio.dumps(_runtime(root).load(_one_id(cmd, "state")).state(), indent=2))
    return 0


def cmd_kill(root: str, cmd: Parsed, log: Log) -> int:
    from ketch.runtime.signals import parse_signal

    cid = _one_id(cmd, "kill", extra=1)
    sig = parse_signal(cmd.args[1] if len(cmd.args) > 1 else "SIGTERM")
    _runtime(root).load(cid).signal(sig, all_processes=cmd.boolean("all"))
    return 0


def cmd_delete(root: str, cmd: Parsed, log: Log) -> int:
    from ketch.errors import NotFound

    rt = _runtime(root)
    cid = _one_id(cmd, "delete")
    force = cmd.boolean("force")
    try:
        ctr = rt.load(cid)
    except NotFound:
        if force and os.path.isdir(os.path.join(root, cid)):
            rt.force_delete_partial(cid)
            return 0
        raise
    with rt.lock(cid):
        ctr.delete(force=force)
    return 0


def cmd_exec(root: str, cmd: Parsed, log: Log) -> int:
    from ketch.runtime import lifecycle

    rt = _runtime(root)
    if not cmd.args:
        raise InvalidArgument("exec: a container id is required")
    ctr = rt.load(cmd.args[0])
    proc = _exec_process(ctr, cmd)
    detach = cmd.boolean("detach")
    console, pty_end = None, None
    if not detach:
        lifecycle.become_subreaper()
        if proc.terminal and not cmd.string("console-socket"):
            import socket

            console, pty_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    warnings: list[str] = []
    io = lifecycle.Stdio(cmd.string("console-socket"), cmd.string("pid-file"))
    pid = lifecycle.exec_process(ctr, proc, io, cmd.integer("preserve-fds"), warnings, console)
    log.report(warnings)
    if detach:
        return 0
    if pty_end is not None:
        from ketch.runtime.channel import recv_fd

        return int(lifecycle.proxy_terminal(recv_fd(pty_end), pid))
    return int(lifecycle.wait_exit(pid))


def _exec_process(ctr: Any, cmd: Parsed) -> Any:
    """The process to exec: --process JSON, or the container's process with args and flags applied."""
    from ketch.oci.runtime import Capabilities, Process, User
    from ketch.record import replace

    if cmd.string("process"):
        try:
            with open(cmd.string("process"), "rb") as f:
                return Process.from_json(jsonio.loads(f.read()))
        except OSError as exc:
            raise InvalidArgument(f"--process {cmd.string('process')}: {exc.strerror}") from exc
        except ValueError as exc:
            raise InvalidArgument(f"--process {cmd.string('process')}: not valid JSON: {exc}") from exc
    if len(cmd.args) < 2:
        raise InvalidArgument("exec: a command to run is required (or --process)")
    base = ctr.spec.process
    if base is None:
        raise InvalidArgument("exec: the container has no process to take defaults from")
    user = base.user
    if cmd.string("user"):
        uid, _, gid = cmd.string("user").partition(":")
        try:
            user = User(int(uid), int(gid or 0), base.user.umask, ())
        except ValueError as exc:
            raise InvalidArgument(f"--user: expected uid[:gid], got {cmd.string('user')!r}") from exc
    if cmd.strings("additional-gids"):
        user = replace(user, additional_gids=tuple(int(g) for g in cmd.strings("additional-gids")))
    caps = base.capabilities
    if cmd.strings("cap") and caps is not None:
        add = tuple(cmd.strings("cap"))
        caps = Capabilities(*(tuple(getattr(caps, k)) + add for k in ("bounding", "effective", "inheritable",
                                                                       "permitted", "ambient")))  # fmt: skip
    return replace(
        base,
        args=tuple(cmd.args[1:]),
        env=base.env + tuple(cmd.strings("env")),
        cwd=cmd.string("cwd") or base.cwd,
        user=user,
        terminal=cmd.boolean("tty"),
        capabilities=caps,
        no_new_privileges=base.no_new_privileges or cmd.boolean("no-new-privs"),
    )


def cmd_ps(root: str, cmd: Parsed, log: Log) -> int:
    ctr = _runtime(root).load(_one_id(cmd, "ps", extra=99))
    pids = ctr.processes()
    if cmd.string("format") == "json":
        print(jsonio.dumps(pids))
        return 0
    import subprocess

    out = subprocess.run(["ps", *(cmd.args[1:] or ["-ef"])], capture_output=True, text=True, check=False)
    lines = out.stdout.splitlines()
    if not lines:
        raise InvalidArgument(f"ps: {out.stderr.strip()}")
    col = lines[0].split().index("PID")
    print(lines[0])
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in pids:
            print(line)
    return 0


def cmd_list(root: str, cmd: Parsed, log: Log) -> int:
    containers = _runtime(root).list()
    if cmd.boolean("quiet"):
        print("\n".join(c.id for c in containers) if containers else "", end="\n" if containers else "")
        return 0
    states = [c.state() for c in containers]
    if cmd.string("format") == "json":
        print(jsonio.dumps(states))
        return 0
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [
        (s["id"], str(s.get("pid", 0)), s["status"], s["bundle"], s["created"], s["owner"]) for s in states
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print("   ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_pause(root: str, cmd: Parsed, log: Log) -> int:
    return _locked(root, cmd, "pause", lambda c: c.pause())


def cmd_resume(root: str, cmd: Parsed, log: Log) -> int:
    return _locked(root, cmd, "resume", lambda c: c.resume())


_UPDATE_FLAGS = (
    ("memory", "memory", "limit"), ("memory-swap", "memory", "swap"), ("memory-reservation", "memory", "reservation"),
    ("cpu-shares", "cpu", "shares"), ("cpu-quota", "cpu", "quota"), ("cpu-period", "cpu", "period"),
    ("pids-limit", "pids", "limit"), ("blkio-weight", "blockIO", "weight"),
)  # fmt: skip


def _size(text: str, flag: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    raw = text.strip().lower().rstrip("b")
    scale = units.get(raw[-1:], 1)
    try:
        return int(raw[:-1] if scale != 1 else raw) * scale
    except ValueError as exc:
        raise InvalidArgument(
            f"--{flag}: expected a number (k, m, g suffixes allowed), got {text!r}"
        ) from exc


def _update_resources(cmd: Parsed) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if cmd.string("resources"):
        source = cmd.string("resources")
        try:
            if source == "-":
                raw = sys.stdin.read()
            else:
                with open(source) as f:
                    raw = f.read()
            resources = jsonio.loads(raw)
        except OSError as exc:
            raise InvalidArgument(f"--resources {source}: {exc.strerror}") from exc
        except ValueError as exc:
            raise InvalidArgument(f"--resources {source}: not valid JSON: {exc}") from exc
        if not isinstance(resources, dict):
            raise InvalidArgument(f"--resources {source}: expected a JSON object")
    for flag, section, key in _UPDATE_FLAGS:
        if cmd.string(flag):
            resources.setdefault(section, {})[key] = _size(cmd.string(flag), flag)
    for flag in ("cpuset-cpus", "cpuset-mems"):
        if cmd.string(flag):
            resources.setdefault("cpu", {})[flag.split("-")[1]] = cmd.string(flag)
    return resources


def cmd_update(root: str, cmd: Parsed, log: Log) -> int:
    resources = _update_resources(cmd)

    def update(ctr: Any) -> None:
        for warning in ctr.update(resources):
            log.write("warning", warning)

    return _locked(root, cmd, "update", update)


def _duration(raw: str, flag: str) -> float:
    """Go-style durations as runc takes them: 500ms, 5s, 1m (seconds when bare)."""
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if raw.endswith(suffix):
            raw, factor = raw[: -len(suffix)], scale
            break
    else:
        factor = 1.0
    try:
        value = float(raw) * factor
    except ValueError as exc:
        raise InvalidArgument(f"--{flag}: expected a duration like 5s or 500ms, got {raw!r}") from exc
    if value <= 0:
        raise InvalidArgument(f"--{flag}: must be positive")
    return value


def cmd_events(root: str, cmd: Parsed, log: Log) -> int:
    """--stats: one stats document. Otherwise stats every --interval and an "oom" event when the
    OOM killer strikes, until the container stops (runc's events)."""
    import time

    ctr = _runtime(root).load(_one_id(cmd, "events"))
    if cmd.boolean("stats"):
        print(jsonio.dumps(ctr.stats()))
        return 0
    interval = _duration(cmd.string("interval"), "interval")
    ooms = ctr.cgroup.oom_kills()
    while ctr.status() != "stopped":
        if ctr.cgroup.oom_kills() > ooms:
            ooms = ctr.cgroup.oom_kills()
            print(jsonio.dumps({"type": "oom", "id": ctr.id}), flush=True)
        print(jsonio.dumps(ctr.stats()), flush=True)
        time.sleep(interval)
    return 0


def cmd_features(root: str, cmd: Parsed, log: Log) -> int:
    from ketch.runtime.specgen import features

    print(jsonio.dumps(features(), indent=2))
    return 0


def cmd_spec(root: str, cmd: Parsed, log: Log) -> int:
    from ketch.errors import AlreadyExists
    from ketch.runtime.specgen import default_spec

    path = os.path.join(cmd.string("bundle"), "config.json")
    if os.path.exists(path):
        raise AlreadyExists(f"File {path} exists. Remove it first")
    with open(path, "w") as f:
        f.write(jsonio.dumps(default_spec(cmd.boolean("rootless")), indent="\t"))
    return 0


VERBS: dict[str, Callable[[str, Parsed, Log], int]] = {
    "create": cmd_create,
    "run": cmd_run,
    "start": cmd_start,
    "state": cmd_state,
    "kill": cmd_kill,
    "delete": cmd_delete,
    "exec": cmd_exec,
    "ps": cmd_ps,
    "list": cmd_list,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "update": cmd_update,
    "events": cmd_events,
    "features": cmd_features,
    "spec": cmd_spec,
}

if __name__ == "__main__":
    sys.exit(main())
