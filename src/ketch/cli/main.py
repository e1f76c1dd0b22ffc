"""ketch: the Docker-style front end. Global flags, then one verb; each verb lives in its own module."""

from __future__ import annotations

import sys

from ketch.cli.args import Flag, Parsed, parse
from ketch.errors import KetchError

GLOBAL = (
    Flag(
        "root", value=True, help="persistent state (images, containers); KETCH_ROOT, default /var/lib/ketch"
    ),
    Flag("runroot", value=True, help="runtime state; KETCH_RUNROOT, default /run/ketch"),
    Flag("storage-driver", value=True, help="overlay or vfs (default: overlay when the host supports it)"),
    Flag("debug", short="D", help="show tracebacks"),
    Flag("version", short="v", help="print the version"),
    Flag("help", short="h", help="show this help"),
)

# verb -> (module under ketch.cli, function); modules are imported only for the verb in use
VERBS: dict[str, tuple[str, str]] = {
    "pull": ("images", "pull"),
    "push": ("images", "push"),
    "images": ("images", "ls"),
    "rmi": ("images", "rm"),
    "tag": ("images", "tag"),
    "history": ("images", "history"),
    "save": ("archive", "save"),
    "load": ("archive", "load"),
    "import": ("archive", "import_"),
    "login": ("images", "login"),
    "logout": ("images", "logout"),
    "inspect": ("ps", "inspect"),
    "run": ("containers", "run"),
    "create": ("containers", "create"),
    "start": ("containers", "start"),
    "stop": ("containers", "stop"),
    "restart": ("containers", "restart"),
    "kill": ("containers", "kill"),
    "rm": ("containers", "rm"),
    "wait": ("containers", "wait"),
    "logs": ("containers", "logs"),
    "exec": ("containers", "exec_"),
    "ps": ("ps", "ps"),
    "container ls": ("ps", "ps"),
    "container list": ("ps", "ps"),
    "container ps": ("ps", "ps"),
    "container run": ("containers", "run"),
    "container create": ("containers", "create"),
    "container start": ("containers", "start"),
    "container stop": ("containers", "stop"),
    "container restart": ("containers", "restart"),
    "container kill": ("containers", "kill"),
    "container rm": ("containers", "rm"),
    "container wait": ("containers", "wait"),
    "container logs": ("containers", "logs"),
    "container exec": ("containers", "exec_"),
    "container inspect": ("ps", "inspect_container"),
    "pause": ("manage", "pause"),
    "unpause": ("manage", "unpause"),
    "top": ("manage", "top"),
    "stats": ("manage", "stats"),
    "rename": ("manage", "rename"),
    "update": ("manage", "update"),
    "attach": ("manage", "attach"),
    "container pause": ("manage", "pause"),
    "container unpause": ("manage", "unpause"),
    "container top": ("manage", "top"),
    "container stats": ("manage", "stats"),
    "container rename": ("manage", "rename"),
    "container update": ("manage", "update"),
    "container attach": ("manage", "attach"),
    "container prune": ("manage", "prune"),
    "cp": ("fs", "cp"),
    "diff": ("fs", "diff"),
    "export": ("fs", "export"),
    "commit": ("fs", "commit"),
    "container cp": ("fs", "cp"),
    "container diff": ("fs", "diff"),
    "container export": ("fs", "export"),
    "container commit": ("fs", "commit"),
    "volume create": ("volumes", "create"),
    "volume ls": ("volumes", "ls"),
    "volume list": ("volumes", "ls"),
    "volume inspect": ("volumes", "inspect"),
    "volume rm": ("volumes", "rm"),
    "volume remove": ("volumes", "rm"),
    "volume prune": ("volumes", "prune"),
    "image ls": ("images", "ls"),
    "image list": ("images", "ls"),
    "image pull": ("images", "pull"),
    "image push": ("images", "push"),
    "image rm": ("images", "rm"),
    "image remove": ("images", "rm"),
    "image tag": ("images", "tag"),
    "image inspect": ("images", "inspect"),
    "image history": ("images", "history"),
    "image prune": ("images", "prune"),
    "image save": ("archive", "save"),
    "image load": ("archive", "load"),
    "image import": ("archive", "import_"),
    "system check": ("system", "check"),
    "system reset": ("system", "reset"),
    "build": ("build", "build"),
    "image build": ("build", "build"),
    "builder prune": ("build", "prune"),
    "port": ("networks", "port"),
    "container port": ("networks", "port"),
    "network create": ("networks", "create"),
    "network ls": ("networks", "ls"),
    "network list": ("networks", "ls"),
    "network inspect": ("networks", "inspect"),
    "network rm": ("networks", "rm"),
    "network remove": ("networks", "rm"),
    "network prune": ("networks", "prune"),
    "network connect": ("networks", "connect"),
    "network disconnect": ("networks", "disconnect"),
}
GROUPS = {"image", "system", "container", "volume", "network", "builder"}

HELP = """usage: ketch [OPTIONS] COMMAND

Containers:
  run, create, start, stop, restart, kill, rm, wait, logs, exec, ps, inspect, pause, unpause,
  top, stats, rename, update, attach, cp, diff, export, commit, port
  container ls|run|create|start|stop|restart|kill|rm|wait|logs|exec|inspect|prune|...
Volumes:
  volume create|ls|inspect|rm|prune
Networks:
  network create|ls|inspect|rm|prune|connect|disconnect
Images:
  pull, push, images, rmi, tag, history, inspect, save, load, import, login, logout, build
  image ls|pull|push|rm|tag|inspect|history|prune|save|load|import|build
  builder prune             drop the build cache
System:
  system check [--repair]   verify every blob and image chain
  system reset [-f]         remove all containers, volumes and networks (and their bridges, rules)

The OCI runtime is available as ketch-oci.

Options:
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = False
    try:
        g = parse(argv, GLOBAL, stop_at_positional=True, what="ketch")
        debug = g.boolean("debug")
        if g.boolean("version") or g.args[:1] == ["version"]:
            return _version()
        if g.boolean("help") or not g.args or g.args[0] == "help":
            from ketch.cli.args import usage

            print(HELP + usage(GLOBAL))
            return 0
        return _dispatch(g)
    except KetchError as exc:
        if debug:
            raise
        sys.stderr.write(f"Error: {exc}\n")
        return 125 if isinstance(exc, _Usage) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141
    except OSError as exc:  # the host failed us (disk full, permissions): one line, not a traceback
        if debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"Error: {exc.strerror or exc}{where}\n")
        return 1


class _Usage(KetchError):
    """An unknown command or a bad flag: Docker's CLI exits 125 for these."""


def _dispatch(g: Parsed) -> int:
    verb, rest = g.args[0], g.args[1:]
    if verb in GROUPS:
        if not rest:
            raise _Usage(f"'ketch {verb}' needs a subcommand; see 'ketch --help'")
        verb, rest = f"{verb} {rest[0]}", rest[1:]
    if verb not in VERBS:
        raise _Usage(f"unknown command {verb!r}; see 'ketch --help'")
    module, function = VERBS[verb]
    name = f"ketch.cli.{module}"
    __import__(name)  # not importlib.import_module: the importlib package costs ~0.4 ms to load
    handler = getattr(sys.modules[name], function)
    try:
        cmd = parse(rest, handler.FLAGS, stop_at_positional=handler.STOPS, what=f"ketch {verb}")
    except KetchError as exc:
        raise _Usage(str(exc)) from None
    if cmd.boolean("help"):  # before the verb runs: --help never touches any state
        from ketch.cli.args import usage

        doc = (handler.__doc__ or "").strip().splitlines()
        sys.stdout.write(
            f"usage: ketch {verb} [OPTIONS]" + (f"\n\n{doc[0]}" if doc else "") + "\n\nOptions:\n"
        )
        sys.stdout.write(usage(handler.FLAGS) + "\n")
        return 0
    try:
        result: int = handler(g, cmd)
    except KetchError as exc:
        if handler.ERROR_CODE == 1 or g.boolean("debug"):
            raise
        sys.stderr.write(f"Error: {exc}\n")
        return int(handler.ERROR_CODE)
    return result


def _version() -> int:
    from ketch import __version__

    print(f"ketch version {__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
