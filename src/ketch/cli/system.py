"""System verbs: check, reset."""

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


@command(Flag("force", short="f"))
def reset(g: Parsed, cmd: Parsed) -> int:
    """Remove every container, volume and user network, and what they made on the host: bridges,
    firewall chains, the DNS server and the supervisor. Images stay (`image prune -a` removes them)."""
    from ketch.cli.containers import context
    from ketch.engine import lifecycle, networks, supervisor, volumes

    warning = "WARNING! This will remove all containers, volumes and networks."
    if not cmd.boolean("force") and not common.confirm(warning):
        return 0
    ctx = context(g)
    for record in ctx.containers().all():
        lifecycle.remove_container(ctx, record, volumes=True, force=True)
    volumes.prune(ctx, all_=True)
    networks.prune(ctx, set())
    networks.teardown_all(ctx)
    supervisor.stop(ctx)
    return 0
