"""ketch-oci against runc and crun on one busybox bundle (args `true`), side by side in one run.

    .venv/bin/python bench/oci_run.py [--runs N] [--runtimes ketch-oci,runc,crun]

Each round runs every runtime once, in turn, so machine noise hits them alike; the table gives
medians of `run` and of `create`, `start`, `delete` measured separately, and ratios to the
peers. crun refuses a hybrid cgroup host, so on such a host the whole benchmark re-executes
itself in a private mount namespace where /sys/fs/cgroup/unified is unmounted (every runtime
then sees the same v1 host). Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UNIFIED = "/sys/fs/cgroup/unified"


def find_runtime(name: str) -> str | None:
    if name == "ketch-oci":
        candidate = Path(sys.executable).parent / "ketch-oci"
        return str(candidate) if candidate.exists() else shutil.which(name)
    return shutil.which(name)


def hybrid_host() -> bool:
    return os.path.ismount(UNIFIED)


def reexec_without_unified() -> None:
    """Run this script again in a private mount namespace without the cgroup2 mount."""
    script = f'umount {UNIFIED} && exec "$@"'
    cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", sys.executable, *sys.argv]
    os.execvp("unshare", cmd)


def make_bundle(where: Path) -> Path:
    bundle = where / "bundle"
    env = dict(os.environ, KETCH_OCI=find_runtime("ketch-oci") or "ketch-oci")
    subprocess.run([str(REPO / "scripts/busybox-bundle"), str(bundle), "true"], check=True, env=env,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return bundle


SETTLE = 0.1  # seconds of quiet before each timed command (--settle)


def timed(cmd: list[str]) -> float:
    """Milliseconds for one command; stderr goes to a file, as a created container keeps its stdio.

    Each starts after SETTLE of quiet: the kernel's cgroup attach lock cools down within a few
    RCU grace periods, and a command that ran right after another runtime's cgroup moves would
    find it warm (10-20 ms cheaper here), so back-to-back timings depend on who ran before."""
    time.sleep(SETTLE)
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, check=False
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed: {err.read().decode().strip()}")
    return elapsed * 1000


def one_round(rt: str, root: str, bundle: Path, n: int) -> dict[str, float]:
    base = [rt, "--root", root]
    cid = f"bench{n}"
    out = {"run": timed([*base, "run", "--bundle", str(bundle), cid + "r"])}
    out["create"] = timed([*base, "create", "--bundle", str(bundle), cid])
    out["start"] = timed([*base, "start", cid])
    deadline = time.monotonic() + 10
    while (
        json.loads(subprocess.run([*base, "state", cid], capture_output=True, check=True).stdout)["status"]
        != "stopped"
    ):
        if time.monotonic() > deadline:
            raise SystemExit(f"{rt}: container {cid} did not stop")
        time.sleep(0.001)
    out["delete"] = timed([*base, "delete", cid])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--runtimes", default="ketch-oci,runc,crun")
    ap.add_argument("--json", action="store_true", help="print the medians as JSON")
    ap.add_argument("--settle", type=float, default=SETTLE * 1000, help="ms of quiet before each command")
    args = ap.parse_args()
    globals()["SETTLE"] = args.settle / 1000
    if os.geteuid() != 0:
        raise SystemExit("bench/oci_run.py needs root")
    wanted = [r for r in args.runtimes.split(",") if r]
    if "crun" in wanted and hybrid_host() and find_runtime("crun"):
        reexec_without_unified()
    runtimes = {name: path for name in wanted if (path := find_runtime(name))}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src")], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    # state roots on /run (tmpfs, as runc's and ketch-oci's defaults are); the bundle on /tmp
    with (
        tempfile.TemporaryDirectory(prefix="ketch-bench-") as tmp,
        tempfile.TemporaryDirectory(prefix="ketch-bench-", dir="/run") as run_root,
    ):
        bundle = make_bundle(Path(tmp))
        samples: dict[str, dict[str, list[float]]] = {n: {} for n in runtimes}
        for i in range(args.runs + 2):
            for name, path in runtimes.items():
                result = one_round(path, f"{run_root}/state-{name}", bundle, i)
                if i >= 2:  # two warm-up rounds
                    for key, ms in result.items():
                        samples[name].setdefault(key, []).append(ms)
    medians = {n: {k: statistics.median(v) for k, v in s.items()} for n, s in samples.items()}
    report(medians, args.runs)
    if args.json:
        print(json.dumps(medians, indent=2))
    return 0


def report(medians: dict[str, dict[str, float]], runs: int) -> None:
    cgroups = "v1 (cgroup2 unmounted for crun)" if not os.path.ismount(UNIFIED) else "hybrid"
    print(f"median of {runs} rounds, milliseconds; cgroups: {cgroups}")
    keys = ("run", "create", "start", "delete")
    print(f"{'runtime':<12}" + "".join(f"{k:>10}" for k in keys))
    for name, m in medians.items():
        print(f"{name:<12}" + "".join(f"{m[k]:>10.1f}" for k in keys))
    ketch = medians.get("ketch-oci")
    for peer in ("runc", "crun"):
        if ketch and peer in medians:
            ratios = "  ".join(f"{k} {ketch[k] / medians[peer][k]:.2f}" for k in keys)
            print(f"ketch-oci/{peer}: {ratios}")


if __name__ == "__main__":
    sys.exit(main())
