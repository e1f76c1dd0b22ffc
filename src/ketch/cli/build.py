"""`build` (Docker's classic builder output) and `builder prune`."""

from __future__ import annotations

import os
import sys

from ketch.build.builder import Progress
from ketch.cli import common
from ketch.cli.args import Flag, Parsed
from ketch.cli.common import command, out
from ketch.errors import InvalidArgument, Unsupported

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.build.builder import BuildOptions


@command(Flag("file", short="f", value=True), Flag("tag", short="t", value=True, multi=True),
         Flag("target", value=True), Flag("no-cache"), Flag("pull"), Flag("build-arg", value=True, multi=True),
         Flag("label", value=True, multi=True), Flag("iidfile", value=True), Flag("quiet", short="q"),
         Flag("progress", value=True), Flag("network", value=True), Flag("platform", value=True),
         Flag("rm"), Flag("force-rm"))  # fmt: skip
def build(g: Parsed, cmd: Parsed) -> int:
    from ketch.build.builder import Builder
    from ketch.cli.containers import context

    if len(cmd.args) != 1:
        raise InvalidArgument('"ketch build" requires exactly 1 argument')
    _check_platform(cmd.string("platform"))
    progress = cmd.string("progress") or "auto"
    if progress not in ("auto", "plain", "tty", "quiet"):
        raise InvalidArgument(f"invalid progress mode {progress!r}: auto, plain, tty or quiet")
    quiet = cmd.boolean("quiet") or progress == "quiet"
    import contextlib

    live = progress == "tty" or (progress == "auto" and not quiet and sys.stdout.isatty())
    view = _LiveView() if live and not quiet else _classic(quiet)
    with contextlib.ExitStack() as stack:  # a temporary directory only for a tarball on stdin
        options = _options(cmd, stack, quiet)
        try:
            image_id = Builder(context(g), options, view).build()
        finally:
            if isinstance(view, _LiveView):
                view.close()
    short = image_id.removeprefix("sha256:")[:12]
    if quiet:
        out(image_id)
    else:
        out(f"Successfully built {short}")
        for tag in options.tags:
            out(f"Successfully tagged {tag}")
    if cmd.string("iidfile"):
        from ketch.files import atomic_write

        atomic_write(cmd.string("iidfile"), image_id.encode(), 0o644, durable=False)
    return 0


def _classic(quiet: bool) -> Progress:
    """Docker's classic builder output on stdout as it comes (nothing with -q)."""

    def write(text: str) -> None:
        if not quiet:
            sys.stdout.write(text)
            sys.stdout.flush()

    return Progress(write)


class _LiveView(Progress):
    """--progress tty: one line per step, redrawn in place, with a timer and the last lines of
    the running step's output; a failed step's whole output stays on screen."""

    TAIL = 6

    def __init__(self) -> None:
        import time

        super().__init__(lambda text: None)  # every event is drawn by the methods below
        self.clock = time.monotonic
        self.start = self.clock()
        self.steps: list[list[Any]] = []  # [text, started, ended or None, "cached"|""]
        self.total = 0
        self.lines: list[str] = []  # the running step's output
        self.drawn = 0

    def step(self, number: int, total: int, text: str) -> None:
        self._finish()
        self.total = total
        self.steps.append([f"[{number}/{total}] {text}", self.clock(), None, ""])
        self.lines = []
        self._draw()

    def cached(self) -> None:
        if self.steps:
            self.steps[-1][3] = "CACHED "
        self._draw()

    def running(self, container: str) -> None:
        self._draw()

    def output(self, text: str) -> None:
        self.lines += text.splitlines()
        self._draw()

    def removed(self, container: str) -> None:
        pass

    def result(self, image_id: str) -> None:
        self._finish()
        self._draw()

    def warning(self, text: str) -> None:
        self.lines.append(f"WARNING: {text}")
        self._draw()

    def close(self) -> None:
        """Leave the view; a step that did not finish keeps its whole output on screen."""
        if self.steps and self.steps[-1][2] is None and self.lines:
            sys.stdout.write("\n".join(self.lines) + "\n")
        sys.stdout.flush()

    def _finish(self) -> None:
        if self.steps and self.steps[-1][2] is None:
            self.steps[-1][2] = self.clock()
            self.lines = []

    def _draw(self) -> None:
        import shutil

        width = shutil.get_terminal_size((100, 24)).columns
        done = sum(1 for s in self.steps if s[2] is not None)
        rows = [f"[+] Building {self.clock() - self.start:.1f}s ({done}/{self.total})"]
        for text, started, ended, cached in self.steps:
            took = f"{(ended or self.clock()) - started:.1f}s"
            label = f" => {cached}{text}"
            rows.append(label[: width - len(took) - 2].ljust(width - len(took) - 1) + took)
        if self.steps and self.steps[-1][2] is None:
            rows += [f" => => {line}"[: width - 1] for line in self.lines[-self.TAIL :]]
        up = f"\x1b[{self.drawn}A" if self.drawn else ""
        sys.stdout.write(up + "\x1b[J" + "\n".join(rows) + "\n")
        sys.stdout.flush()
        self.drawn = len(rows)


def _check_platform(platform: str) -> None:
    if not platform:
        return
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    if platform not in (f"linux/{machine}", machine):
        raise Unsupported(f"cannot build for {platform} on a linux/{machine} host (no emulation)")


def _options(cmd: Parsed, stack: Any, quiet: bool) -> BuildOptions:
    """The context directory and the Dockerfile's text, from PATH, `-` (a tar or a Dockerfile on stdin)."""
    from ketch.build.builder import BuildOptions
    from ketch.engine.options import parse_labels

    where, file = cmd.args[0], cmd.string("file")
    if where.startswith(("http://", "https://", "git@", "github.com/")):
        raise Unsupported("remote build contexts (URLs, git) are not supported: pass a directory or -")
    if where == "-":
        data = sys.stdin.buffer.read()
        if _is_tar(data):
            import tempfile

            directory = _unpack_context(
                data, stack.enter_context(tempfile.TemporaryDirectory(prefix="ketch-build-"))
            )
            text = _read(os.path.join(directory, file or "Dockerfile"), file or "Dockerfile")
        else:
            directory, text = "", data.decode()
    else:
        if not os.path.isdir(where):
            raise InvalidArgument(f"unable to prepare context: path {where!r} not found")
        directory = os.path.abspath(where)
        if file == "-":
            text = sys.stdin.read()
        else:
            text = _read(file or os.path.join(directory, "Dockerfile"), file or "Dockerfile")
    return BuildOptions(
        context=directory, dockerfile=text, filename=os.path.basename(file) if file and file != "-" else "Dockerfile",
        tags=tuple(cmd.strings("tag")), target=cmd.string("target"), build_args=_build_args(cmd.strings("build-arg")),
        labels=parse_labels(cmd.strings("label")), no_cache=cmd.boolean("no-cache"), pull=cmd.boolean("pull"),
        network=cmd.string("network") or "default", quiet=quiet,
    )  # fmt: skip


def _read(path: str, shown: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise InvalidArgument(f"unable to prepare context: the Dockerfile {shown} was not found") from None


def _build_args(items: list[str]) -> dict[str, str]:
    """--build-arg KEY=VALUE, or KEY taking its value from our environment (skipped when unset)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if sep:
            out[key] = value
        elif key in os.environ:
            out[key] = os.environ[key]
    return out


def _is_tar(data: bytes) -> bool:
    return data[:2] == b"\x1f\x8b" or data[257:262] == b"ustar"


def _unpack_context(data: bytes, scratch: str) -> str:
    """A context tarball from stdin, unpacked with the safe unpacker (never outside `scratch`)."""
    import io

    from ketch.image.compression import decompressed
    from ketch.image.layers import apply_layer

    directory = os.path.join(scratch, "context")
    os.mkdir(directory)
    apply_layer(decompressed(io.BytesIO(data)), directory, overlay=False)
    return directory


@command(Flag("force", short="f"), Flag("all", short="a"), Flag("filter", value=True, multi=True))
def prune(g: Parsed, cmd: Parsed) -> int:
    """`builder prune`: the build cache and the untagged step images only it kept."""
    from ketch.build.builder import prune_cache
    from ketch.cli.containers import context

    if cmd.strings("filter"):
        raise InvalidArgument("builder prune --filter is not supported")
    if not cmd.boolean("force") and not common.confirm("WARNING! This will remove all build cache."):
        return 0
    entries, removed = prune_cache(context(g))
    if removed:
        out("Deleted build cache objects:\n" + "\n".join(removed))
    out(f"Total: {entries} cache entries, {len(removed)} images")
    return 0
