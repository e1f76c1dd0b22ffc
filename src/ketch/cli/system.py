"""System verbs: check."""

from __future__ import annotations

from ketch.cli import common
from ketch.cli.args import Flag, Parsed
from ketch.cli.common import command, out


@command(Flag("repair", help="remove what is broken"), Flag("quiet", short="q"))
def check(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine.check import check as run_check

    report = run_check(common.images(g), cmd.boolean("repair"))
    for p in report.problems:
        action = "removed" if report.repaired else "broken"
        out(f"{action}: {p.kind} {p.what}: {p.why}")
    if report.partials:
        done = "removed" if report.repaired else "kept for resuming"
        out(f"{len(report.partials)} interrupted download(s) {done}")
    if not cmd.boolean("quiet"):
        state = "clean" if not report.problems else f"{len(report.problems)} problem(s)"
        out(f"checked {report.blobs} blobs and {report.images} images: {state}")
    return 0 if not report.problems or report.repaired else 1
