"""`ketch run` against `docker run` and `podman run` on one local busybox image, side by side in one run.

    .venv/bin/python bench/engine_run.py [--runs N] [--containers N] [--tools ketch,docker,podman]
                                         [--podman-runtime PATH]

The image: Debian's busybox-static (scripts/busybox-bundle), imported into ketch as in
scripts/demo, then `ketch save`d as a docker-archive and loaded into docker and podman, so all
three run the very same image (the same image ID). Three measures:

1. `run --rm --network none IMAGE true`: one warm-up round, then N rounds; each round runs every
   engine once, the order rotating from round to round, so machine noise hits them alike.
   Medians in milliseconds and ketch / min(docker, podman).
2. `run -d --network none IMAGE sleep 1000`, M times per engine (default 50), interleaved (one
   container per engine in turn); the total seconds per engine. They are removed untimed at the end.
3. With those M x 3 containers running: the memory of each engine's per-container helpers beyond
   the container's own processes, as the sum of their PSS (/proc/PID/smaps_rollup) divided by M,
   and their USS (private pages): ketch's monitors (the processes forked from the supervisor,
   which keep its cmdline), docker's containerd-shim-runc-v2, podman's conmon. The supervisor,
   and dockerd + containerd, are reported apart.

dockerd (Debian's docker.io) and its containerd are started by hand on private sockets, data
and exec roots (--iptables=false --bridge=none). podman gets a private --root, --runroot and
--tmpdir and --cgroup-manager cgroupfs. Its runtime is ketch-oci by default: on this host
runc and crun fail (`setrlimit RLIMIT_NOFILE: Operation not permitted`: podman asks for a hard
RLIMIT_NOFILE above the host's and root lacks CAP_SYS_RESOURCE); ketch-oci clamps the limit
with a warning. Everything lives in a short temp dir under /tmp and is removed at the end, even
on failure. Needs root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemons import cgroups, remove_cgroups, start_docker

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KETCH = str(BIN / "ketch")
KETCH_OCI = str(BIN / "ketch-oci")
IMAGE = "bench/busybox"
TOOLS = ("ketch", "docker", "podman")


class Failed(Exception):
    """A command failed; the message carries its stderr."""


def run(argv: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise Failed(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def timed(argv: list[str]) -> tuple[float, str]:
    """Seconds for one command, and its stdout."""
    start = time.perf_counter()
    proc = run(argv)
    return time.perf_counter() - start, proc.stdout.strip()


# -- processes and memory ------------------------------------------------------------------------


def processes() -> dict[int, list[str]]:
    """pid -> argv of every process (those that vanish while read are skipped)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if raw:
                out[int(entry)] = raw.rstrip(b"\0").decode(errors="replace").split("\0")
    return out


def memory(pid: int) -> tuple[int, int]:
    """(PSS, USS) in kB from /proc/PID/smaps_rollup; (0, 0) if the process is gone."""
    fields: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, rest = line.partition(":")
            fields[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return 0, 0
    return fields.get("Pss", 0), fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)


def kill_pids(pids: list[int], what: str) -> None:
    """SIGTERM, then SIGKILL, processes this benchmark started (found by their unique paths)."""
    if not pids:
        return
    print(f"cleanup: stopping {what}: {pids}", file=sys.stderr)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.1)


# -- the engines ---------------------------------------------------------------------------------


@dataclass
class Engine:
    name: str
    base: list[str]  # the CLI with its global options
    ref: str  # the image, as this engine names it
    rm_flags: list[str]
    started: list[str] = field(default_factory=list)  # ids of the detached containers

    def run_rm(self) -> float:
        return timed([*self.base, "run", "--rm", "--network", "none", self.ref, "true"])[0]

    def run_detached(self) -> float:
        elapsed, cid = timed([*self.base, "run", "-d", "--network", "none", self.ref, "sleep", "1000"])
        self.started.append(cid.splitlines()[-1])
        return elapsed

    def image_id(self) -> str:
        inspect = [*self.base, "inspect", "--format", "{{.Id}}", self.ref]
        if self.name != "ketch":
            inspect.insert(len(self.base), "image")
        out = run(inspect).stdout.strip()
        return out if out.startswith("sha256:") else f"sha256:{out}"

    def remove_all(self) -> None:
        ids = run([*self.base, "ps", "-aq"], check=False).stdout.split()
        if ids:
            run([*self.base, "rm", *self.rm_flags, *ids], timeout=300, check=False)
        self.started.clear()


class Bench:
    """The private daemons and storage of every engine, and their cleanup."""

    def __init__(self, work: Path, tools: list[str], podman_runtime: str) -> None:
        self.work, self.tools = work, tools
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.engines: dict[str, Engine] = {}
        self.ketch_root, self.ketch_run = work / "k/root", work / "k/run"
        self.ctr_sock = work / "d/c.sock"
        self.podman_root = work / "p/root"
        self.podman_runtime = podman_runtime
        self.docker_cgroups_before = cgroups()

    # setup

    def start(self) -> None:
        bundle = self.work / "bundle"
        env = dict(os.environ, KETCH_OCI=KETCH_OCI)
        subprocess.run([str(REPO / "scripts/busybox-bundle"), str(bundle), "true"], check=True, env=env,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        rootfs_tar, archive = self.work / "busybox.tar", self.work / "busybox-docker.tar"
        run(["tar", "-C", str(bundle / "rootfs"), "-cf", str(rootfs_tar), "."])
        # ketch imports the rootfs (always: it also makes the docker-archive the others load)
        ketch = Engine("ketch", [KETCH, "--root", str(self.ketch_root), "--runroot", str(self.ketch_run)],
                       IMAGE, ["-f"])  # fmt: skip
        change = "ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin"
        run([*ketch.base, "import", "--change", change, str(rootfs_tar), IMAGE])
        run([*ketch.base, "save", "-o", str(archive), IMAGE])
        if "ketch" in self.tools:
            self.engines["ketch"] = ketch
        if "docker" in self.tools:
            docker = Engine("docker", ["docker", "-H", self.start_docker()], f"{IMAGE}:latest", ["-f"])
            run([*docker.base, "load", "-i", str(archive)])
            self.engines["docker"] = docker
        if "podman" in self.tools:
            p = self.work / "p"
            podman = Engine("podman", ["podman", "--root", str(self.podman_root), "--runroot", str(p / "run"),
                                       "--tmpdir", str(p / "tmp"), "--cgroup-manager", "cgroupfs",
                                       "--runtime", self.podman_runtime],
                            f"localhost/{IMAGE}:latest", ["-f", "-t", "0"])  # fmt: skip
            run([*podman.base, "load", "-i", str(archive)])
            self.engines["podman"] = podman

    def start_docker(self) -> str:
        return start_docker(self.ctr_sock.parent, self._spawn)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.work / f"{name}.log", "w")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)

    def preflight(self) -> dict[str, str]:
        """Drop the engines that cannot run a container here; name -> why."""
        failed = {}
        for name, engine in list(self.engines.items()):
            try:
                engine.run_rm()
            except (Failed, subprocess.TimeoutExpired) as err:
                failed[name] = str(err)
                del self.engines[name]
        return failed

    # the per-container helpers

    def supervisor_pid(self) -> int | None:
        try:
            return int((self.ketch_run / "supervisor.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def helpers(self, name: str) -> tuple[list[int], dict[str, list[int]]]:
        """(the per-container helper pids, the engine's daemons by name) of one engine."""
        procs = processes()
        if name == "ketch":
            mark = ["-m", "ketch.engine.supervisor", str(self.ketch_root), str(self.ketch_run)]
            sup = self.supervisor_pid()
            forked = [p for p, argv in procs.items() if argv[1:5] == mark]
            return [p for p in forked if p != sup], {"supervisor": [sup] if sup in forked else []}
        if name == "docker":
            address = str(self.ctr_sock)
            shims = [p for p, argv in procs.items()
                     if argv[0].endswith("containerd-shim-runc-v2") and address in argv]  # fmt: skip
            return shims, {n: [self.procs[n].pid] for n in ("dockerd", "containerd") if n in self.procs}
        root = str(self.podman_root)
        conmons = [
            p for p, argv in procs.items() if Path(argv[0]).name == "conmon" and any(root in a for a in argv)
        ]
        return conmons, {}

    # cleanup

    def stop(self) -> None:
        for engine in self.engines.values():
            try:
                engine.remove_all()
            except Exception as err:  # keep cleaning up
                print(f"cleanup: {engine.name}: {err}", file=sys.stderr)
        ketch_base = [KETCH, "--root", str(self.ketch_root), "--runroot", str(self.ketch_run)]
        if "ketch" not in self.engines and self.ketch_root.exists():
            Engine("ketch", ketch_base, IMAGE, ["-f"]).remove_all()
        sup = self.supervisor_pid()
        if sup is not None and Path(f"/proc/{sup}").exists():
            kill_pids([sup], "the ketch supervisor")
        kill_pids(self.helpers("ketch")[0], "leftover ketch monitors")
        if self.podman_root.exists():
            p = self.work / "p"
            run(["podman", "--root", str(self.podman_root), "--runroot", str(p / "run"), "--tmpdir", str(p / "tmp"),
                 "--cgroup-manager", "cgroupfs", "--runtime", self.podman_runtime, "system", "reset", "-f"],
                timeout=300, check=False)  # fmt: skip
            kill_pids(self.helpers("podman")[0], "leftover conmon")
        for name in ("dockerd", "containerd"):
            if proc := self.procs.get(name):
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.procs:
            kill_pids(self.helpers("docker")[0], "leftover containerd-shim-runc-v2")
            remove_cgroups(self.docker_cgroups_before)
        unmount_under(self.work)
        shutil.rmtree(self.work, ignore_errors=True)


def unmount_under(path: Path) -> None:
    prefix = str(path) + "/"
    for _ in range(3):  # mounts can be stacked
        points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        points = [p for p in points if p.startswith(prefix) or p == str(path)]
        if not points:
            return
        for point in sorted(set(points), key=len, reverse=True):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)


# -- the measures --------------------------------------------------------------------------------


def measure_run_rm(engines: dict[str, Engine], runs: int) -> dict[str, list[float]]:
    names = list(engines)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for i in range(runs + 1):  # round 0 warms up
        k = i % len(names)
        for name in names[k:] + names[:k]:
            ms = engines[name].run_rm() * 1000
            if i:
                samples[name].append(ms)
    return samples


def measure_detached(engines: dict[str, Engine], count: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {n: [] for n in engines}
    names = list(engines)
    for i in range(count):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(engines[name].run_detached())
    return samples


def measure_memory(bench: Bench, count: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in bench.engines:
        helpers, daemons = bench.helpers(name)
        mem = [memory(p) for p in helpers]
        out[name] = {
            "helpers": len(helpers),
            "pss": sum(m[0] for m in mem) / count / 1024,
            "uss": sum(m[1] for m in mem) / count / 1024,
            "daemons": {d: sum(memory(p)[0] for p in pids) / 1024 for d, pids in daemons.items()},
        }
    return out


# -- the report ----------------------------------------------------------------------------------


HELPER = {"ketch": "monitor", "docker": "containerd-shim-runc-v2", "podman": "conmon"}


def ratios(med: dict[str, float], target: str) -> str:
    if "ketch" not in med or len(med) == 1:
        return ""
    parts = [f"ketch/{p} = {med['ketch'] / med[p]:.2f}" for p in ("docker", "podman") if p in med]
    peers = [med[p] for p in ("docker", "podman") if p in med]
    if len(peers) == 2:
        parts.append(f"ketch/min(docker,podman) = {med['ketch'] / min(peers):.2f}")
    return "  " + "   ".join(parts) + (f"   (target {target})" if parts else "")


def report(
    rm: dict[str, list[float]], detached: dict[str, list[float]], mem: dict[str, dict[str, Any]], count: int
) -> None:
    runs = len(next(iter(rm.values())))
    print(f"\n1. run --rm --network none IMAGE true: milliseconds, median of {runs} rounds (after 1 warm-up)")
    med = {n: statistics.median(v) for n, v in rm.items()}
    for name, value in med.items():
        print(f"  {name:<8} {value:7.0f}   runs: {' '.join(f'{x:.0f}' for x in rm[name])}")
    if line := ratios(med, "ketch <= 0.25x the faster"):
        print(line)

    print(f"\n2. {count} x run -d --network none IMAGE sleep 1000, one after another: seconds")
    total = {n: sum(v) for n, v in detached.items()}
    for name, value in total.items():
        ms = [x * 1000 for x in detached[name]]
        tenth = max(1, len(ms) // 5)
        print(f"  {name:<8} total {value:6.2f}   ms per container: median {statistics.median(ms):4.0f}, "
              f"first {tenth} {statistics.median(ms[:tenth]):4.0f}, last {tenth} {statistics.median(ms[-tenth:]):4.0f}, "
              f"max {max(ms):4.0f}")  # fmt: skip
    if line := ratios(total, "ketch <= 0.35x podman"):
        print(line)

    print(
        f"\n3. memory with the {count} containers of each engine running: MB per container (helpers' sum / {count})"
    )
    print(f"  {'engine':<8} {'helper':<24} {'found':>5} {'PSS':>7} {'USS':>7}   daemons (PSS, MB)")
    for name, m in mem.items():
        daemons = ", ".join(f"{d} {v:.1f}" for d, v in m["daemons"].items()) or "none"
        print(f"  {name:<8} {HELPER[name]:<24} {m['helpers']:>5} {m['pss']:7.2f} {m['uss']:7.2f}   {daemons}")
    if "ketch" in mem:
        for peer, target in (("docker", "<= 1 (target)"), ("podman", "<= 1 (stretch)")):
            if peer in mem and mem[peer]["pss"]:
                print(
                    f"  ketch/{peer} PSS per container = {mem['ketch']['pss'] / mem[peer]['pss']:.2f}   {target}"
                )


def versions(engines: dict[str, Engine], podman_runtime: str) -> str:
    out = []
    for name, engine in engines.items():
        if name == "ketch":
            v = run([KETCH, "--version"], check=False).stdout.strip()
        elif name == "docker":
            v = (
                "dockerd "
                + run(
                    [*engine.base, "version", "--format", "{{.Server.Version}}"], check=False
                ).stdout.strip()
            )
        else:
            v = run(["podman", "--version"], check=False).stdout.strip() + f" (runtime {podman_runtime})"
        out.append(v)
    return "; ".join(out)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="rounds of run --rm (default 10)")
    ap.add_argument("--containers", type=int, default=50, help="detached containers per engine (default 50)")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--podman-runtime", default=KETCH_OCI, help="podman's --runtime (default: ketch-oci)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/engine_run.py needs root")
    tools = [t for t in args.tools.split(",") if t]
    if unknown := set(tools) - set(TOOLS):
        raise SystemExit(f"unknown tools: {', '.join(sorted(unknown))}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the cleanup runs
    work = Path(tempfile.mkdtemp(prefix="keb", dir="/tmp"))  # short: socket paths and podman's runroot
    bench = Bench(work, tools, args.podman_runtime)
    try:
        bench.start()
        failed = bench.preflight()
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {load()}; {os.cpu_count()} CPUs")
        print(versions(bench.engines, args.podman_runtime))
        ids = {n: e.image_id() for n, e in bench.engines.items()}
        same = "the same ID in all" if len(set(ids.values())) == 1 else f"IDs differ: {ids}"
        print(f"image {IMAGE}: {next(iter(ids.values()), '?')[:19]} ({same})")
        for name, why in failed.items():
            print(f"{name}: cannot run a container here, left out: {why}")
        if not bench.engines:
            return 1
        rm = measure_run_rm(bench.engines, args.runs)
        detached = measure_detached(bench.engines, args.containers)
        time.sleep(1)  # let the last helpers settle
        mem = measure_memory(bench, args.containers)
        report(rm, detached, mem, args.containers)
        print(f"\nat the end: {load()}")
    except (Failed, TimeoutError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        bench.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
