"""`ketch build` against docker's classic builder, docker's BuildKit and `podman build`, side by side in one run.

    .venv/bin/python bench/build_run.py [--runs N] [--tools ketch,legacy,buildkit,podman]
                                        [--podman-runtime PATH]

The build: one small Dockerfile (FROM the busybox image, three RUN, a COPY of a 24-file, ~60 KB
context with a .dockerignore, WORKDIR, ENV, CMD), `--network none` for every engine (dockerd runs
without a bridge, and no step needs a network). The image is engine_run.py's: Debian's
busybox-static (scripts/busybox-bundle) imported into ketch, `ketch save`d and loaded into docker and
podman, so all of them build FROM the very same image (the Dockerfile takes it as `ARG BASE`, each
engine naming it its own way). Two measures, each build timed from the CLI's start to its exit
with `-q`:

1. cold: the previous result and the build cache are removed first (untimed: ketch `rmi` +
   `builder prune -f`; docker legacy `rmi`, which takes the untagged parents that are its cache;
   BuildKit `rmi` + `builder prune -af`; podman `rmi` + `image prune -f`), then `build --no-cache`. Only the base image is left, as after a fresh pull: ketch's equivalent of
   docker's `--no-cache` on a daemon that keeps its store, rather than a fresh ketch root (which
   would also re-import the base image, which docker and podman are not asked to do).
2. cached: right after each engine's cold build, the same build again without `--no-cache`: every
   step cached. The run checks that it hits the cache (the cached build gives the cold build's
   image ID, and the warm-up's verbose output shows each engine's cache marker).

One warm-up round, then N rounds (default 5); each round runs every engine's cold build, then
every engine's cached build, the order rotating from round to round so machine noise hits them
alike. Medians in milliseconds, and the ratios ketch / BuildKit (cold, target <= 1.0) and ketch /
docker legacy (cached, target <= 1.0), with podman for reference.

dockerd (Debian's docker.io 20.10) and its containerd are started by hand on private sockets, data
and exec roots (--iptables=false --bridge=none), with a private DOCKER_CONFIG (BuildKit's client
writes a node ID there). BuildKit needs a client that has it: a 20.10 docker CLI (built in) or one
with the buildx plugin; `/usr/local/bin/docker` 28.x on this host has no buildx, so Debian's
`/usr/bin/docker` is picked. podman gets a private --root, --runroot, --tmpdir and TMPDIR,
--cgroup-manager cgroupfs and the default --isolation (oci); its runtime is ketch-oci (runc and
crun fail on this host's RLIMIT_NOFILE, see engine_run.py). Everything lives in a short temp dir
under /tmp and is removed at the end, even on failure, with the docker/buildkit cgroup that dockerd
makes for BuildKit and does not remove. Needs root.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from daemons import cgroups
from engine_run import IMAGE, KETCH, KETCH_OCI, Bench, Failed, load, run

TOOLS = ("ketch", "legacy", "buildkit", "podman")
LABEL = {"ketch": "ketch", "legacy": "docker legacy", "buildkit": "docker BuildKit", "podman": "podman"}
CACHE_MARK = {"ketch": "Using cache", "legacy": "Using cache", "buildkit": "CACHED", "podman": "Using cache"}
OUT = "bench/built"  # the result's name (tagged :ENGINE: legacy and BuildKit share a daemon)

DOCKERFILE = """\
ARG BASE
FROM ${BASE}
RUN mkdir -p /app/data && echo built > /app/data/stamp && ls / > /app/data/root
COPY . /app/src/
RUN cat /app/src/lib/*.txt > /app/all.txt && wc -l < /app/all.txt > /app/count && rm -r /app/src/notes
RUN ln -s /app/all.txt /app/latest && rm /app/data/root && touch /app/done
WORKDIR /app
ENV APP_HOME=/app
CMD ["cat", "/app/count"]
"""


def write_context(directory: Path) -> int:
    """The build context: 24 small files in four directories, a .dockerignore, the Dockerfile; its bytes."""
    (directory / "lib").mkdir(parents=True)
    (directory / "notes").mkdir()
    (directory / "assets").mkdir()
    (directory / "skip").mkdir()
    for i in range(16):
        text = "".join(f"module {i} line {n}: {'x' * ((i + n) % 60)}\n" for n in range(40))
        (directory / "lib" / f"m{i:02}.txt").write_text(text)
    for i in range(4):
        (directory / "notes" / f"n{i}.md").write_text(f"# note {i}\n" * 50)
    (directory / "assets" / "blob.bin").write_bytes(bytes(range(256)) * 64)  # 16 KiB
    (directory / "assets" / "run.sh").write_text("#!/bin/sh\necho run\n")
    os.chmod(directory / "assets" / "run.sh", 0o755)
    (directory / "skip" / "big.log").write_text("excluded\n" * 1000)
    (directory / "README").write_text("a small context\n")
    (directory / ".dockerignore").write_text("skip\n*.log\nDockerfile\n")
    (directory / "Dockerfile").write_text(DOCKERFILE)
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def docker_client() -> str | None:
    """A docker CLI that drives both builders: before 23.0 BuildKit is built in, later it needs buildx."""
    for path in dict.fromkeys(p for p in (shutil.which("docker"), "/usr/bin/docker") if p):
        if not os.access(path, os.X_OK):
            continue
        major = re.search(r"version (\d+)\.", run([path, "--version"], check=False).stdout)
        if major and int(major.group(1)) < 23:
            return path
        if run([path, "buildx", "version"], check=False).returncode == 0:
            return path
    return None


class Builder:
    """One engine's build command, its base image's name, and how it forgets a result and its cache."""

    def __init__(self, name: str, cli: list[str], base: str, env: dict[str, str]) -> None:
        self.name, self.cli, self.base, self.env = name, cli, base, env

    def build(self, context: Path, cold: bool, quiet: bool = True) -> tuple[float, str]:
        """Seconds for one build, and its output: the image ID with -q, else stdout and stderr."""
        argv = [*self.cli, "build", *(["-q"] if quiet else []), *(["--no-cache"] if cold else []),
                "--network", "none", "--build-arg", f"BASE={self.base}", "-t", self.tag, str(context)]  # fmt: skip
        if self.name == "buildkit" and not quiet:
            argv.insert(len(self.cli) + 1, "--progress=plain")
        start = time.perf_counter()
        out, err = timed_run(argv, self.env)
        return time.perf_counter() - start, out if quiet else out + err

    @property
    def tag(self) -> str:
        return f"{OUT}:{self.name}"

    def forget(self) -> None:
        """Untimed, before a cold build: the previous result and the build cache."""
        # docker's rmi takes the untagged parents too: the classic builder's cache
        run_env([*self.cli, "rmi", "-f", self.tag], self.env, check=False)
        if self.name == "ketch":
            run_env([*self.cli, "builder", "prune", "-f"], self.env)
        elif self.name == "buildkit":  # BuildKit's own cache (not the classic builder's images)
            run_env([*self.cli, "builder", "prune", "-af"], self.env)
        elif self.name == "podman":
            for _ in range(10):  # each prune can leave the parents of what it removed dangling
                if not run_env([*self.cli, "image", "prune", "-f"], self.env).stdout.strip():
                    break

    def images(self) -> int:
        """How many images the engine holds (intermediate ones too)."""
        return len(run_env([*self.cli, "images", "-aq"], self.env).stdout.split())


def run_env(argv: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=300
    )
    if check and proc.returncode != 0:
        raise Failed(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def timed_run(argv: list[str], env: dict[str, str], timeout: float = 300) -> tuple[str, str]:
    """A build's stdout and stderr; a build that hangs is sent SIGABRT (ketch's faulthandler then prints its threads)."""
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env) as proc:  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            try:
                out, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            raise Failed(f"{' '.join(argv)} hung for {timeout:.0f}s:\n{err}") from None
    if proc.returncode != 0:
        raise Failed(f"{' '.join(argv)} failed ({proc.returncode}): {err.strip()}")
    return out.strip(), err


def builders(bench: Bench, tools: list[str], work: Path) -> dict[str, Builder]:
    out: dict[str, Builder] = {}
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    for name in tools:
        if name == "ketch" and "ketch" in bench.engines:
            out[name] = Builder(name, bench.engines["ketch"].base, IMAGE, env)
        elif name in ("legacy", "buildkit") and "docker" in bench.engines:
            client = docker_client()
            if client is None:
                print(f"{LABEL[name]}: no docker CLI can use BuildKit here (20.10, or buildx), left out")
                continue
            host = bench.engines["docker"].base[2]
            docker_env = dict(env, DOCKER_BUILDKIT="1" if name == "buildkit" else "0")
            out[name] = Builder(name, [client, "-H", host], f"{IMAGE}:latest", docker_env)
        elif name == "podman" and "podman" in bench.engines:
            (work / "p" / "tmp").mkdir(parents=True, exist_ok=True)
            podman_env = dict(env, TMPDIR=str(work / "p" / "tmp"))  # buildah's scratch files, not /var/tmp
            out[name] = Builder(name, bench.engines["podman"].base, f"localhost/{IMAGE}:latest", podman_env)
    return out


def check_cache(engines: dict[str, Builder], context: Path) -> dict[str, str]:
    """Drop the engines whose build fails; show that a rebuild hits each engine's cache. name -> why dropped."""
    failed = {}
    for name, b in list(engines.items()):
        try:
            b.forget()
            b.build(context, cold=True)
            _, out = b.build(context, cold=False, quiet=False)
        except Failed as err:
            failed[name] = str(err)
            del engines[name]
            continue
        hits = out.count(CACHE_MARK[name])
        print(f"  {LABEL[name]:<16} cached rebuild: {hits} x {CACHE_MARK[name]!r} in its output")
    return failed


def measure(engines: dict[str, Builder], context: Path, runs: int) -> dict[str, dict[str, list[float]]]:
    names = list(engines)
    samples: dict[str, dict[str, list[float]]] = {
        "cold": {n: [] for n in names},
        "cached": {n: [] for n in names},
    }
    same: dict[str, list[bool]] = {n: [] for n in names}
    stores = {("dockerd" if n in ("legacy", "buildkit") else n): b for n, b in engines.items()}
    held: dict[str, list[int]] = {n: [] for n in stores}
    for i in range(runs + 1):  # round 0 warms up
        k = i % len(names)
        order = names[k:] + names[:k]
        cold_ids = {}
        for name in order:
            engines[name].forget()
            seconds, out = engines[name].build(context, cold=True)
            cold_ids[name] = out.splitlines()[-1]
            if i:
                samples["cold"][name].append(seconds * 1000)
        for name in order:
            seconds, out = engines[name].build(context, cold=False)
            same[name].append(_id(out.splitlines()[-1]) == _id(cold_ids[name]))
            if i:
                samples["cached"][name].append(seconds * 1000)
        for store, b in stores.items():
            held[store].append(b.images())
    print("images held after each round (intermediate ones too): "
          + ", ".join(f"{n} {' '.join(map(str, counts))}" for n, counts in held.items()))  # fmt: skip
    for name, hits in same.items():
        if not all(hits):
            print(
                f"  note: {LABEL[name]}'s cached rebuild gave a new image ID in {hits.count(False)} of {len(hits)} rounds"
            )
    return samples


def _id(text: str) -> str:
    return text.removeprefix("sha256:")[:12]


def report(samples: dict[str, dict[str, list[float]]]) -> None:
    titles = {"cold": "cold build (--no-cache, no earlier result or build cache)", "cached": "cached rebuild"}
    targets = {"cold": "buildkit", "cached": "legacy"}
    for n, phase in enumerate(("cold", "cached"), 1):
        runs = len(next(iter(samples[phase].values())))
        print(f"\n{n}. {titles[phase]}: milliseconds, median of {runs} rounds (after 1 warm-up)")
        med = {name: statistics.median(v) for name, v in samples[phase].items()}
        for name, value in med.items():
            print(
                f"  {LABEL[name]:<16} {value:7.0f}   runs: {' '.join(f'{x:.0f}' for x in samples[phase][name])}"
            )
        if "ketch" not in med:
            continue
        parts = []
        for peer in ("buildkit", "legacy", "podman"):
            if peer in med:
                mark = "  (target <= 1.0)" if peer == targets[phase] else ""
                parts.append(f"ketch / {LABEL[peer]} = {med['ketch'] / med[peer]:.2f}{mark}")
        print("  " + "\n  ".join(parts))


def versions(engines: dict[str, Builder], podman_runtime: str) -> list[str]:
    out = []
    for name, b in engines.items():
        if name == "ketch":
            out.append(run([KETCH, "--version"], check=False).stdout.strip())
        elif name in ("legacy", "buildkit") and not any(line.startswith("dockerd") for line in out):
            server = run_env(
                [*b.cli, "version", "--format", "{{.Server.Version}}"], b.env, check=False
            ).stdout
            client = run_env([b.cli[0], "--version"], b.env, check=False).stdout.strip()
            out.append(f"dockerd {server.strip()} (client {b.cli[0]}: {client})")
        elif name == "podman":
            out.append(
                run(["podman", "--version"], check=False).stdout.strip() + f" (runtime {podman_runtime})"
            )
    return out


def report_podman_cgroups(before: set[str]) -> None:
    """podman's new cgroups (libpod_parent/) are only reported: other podmans may use them."""
    if podman := sorted(cgroups(("libpod_parent",)) - before):
        print(f"cleanup: new cgroups under libpod_parent (not removed): {', '.join(podman)}", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"any of {','.join(TOOLS)} (default: all)")
    ap.add_argument("--podman-runtime", default=KETCH_OCI, help="podman's --runtime (default: ketch-oci)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/build_run.py needs root")
    tools = [t for t in args.tools.split(",") if t]
    if unknown := set(tools) - set(TOOLS):
        raise SystemExit(f"unknown tools: {', '.join(sorted(unknown))} (known: {', '.join(TOOLS)})")
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the cleanup runs
    work = Path(tempfile.mkdtemp(prefix="kbb", dir="/tmp"))  # short: socket paths and podman's runroot
    os.environ["DOCKER_CONFIG"] = str(work / "docker-config")  # every docker CLI, not ~/.docker
    engines_wanted = ["ketch"] + (["docker"] if {"legacy", "buildkit"} & set(tools) else [])
    engines_wanted += ["podman"] if "podman" in tools else []
    bench = Bench(work, engines_wanted, args.podman_runtime)
    podman_cgroups_before = cgroups(("libpod_parent",))  # docker's: Bench removes them
    try:
        (work / "docker-config").mkdir()
        (work / "docker-config" / "config.json").write_text('{"auths": {}}\n')  # podman reads it too
        bench.start()
        failed = bench.preflight()
        for name, why in failed.items():
            print(f"{name}: cannot run a container here, left out: {why}")
        context = work / "ctx"
        size = write_context(context)
        engines = builders(bench, tools, work)
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {load()}; {os.cpu_count()} CPUs")
        print("; ".join(versions(engines, args.podman_runtime)))
        files = sum(1 for p in context.rglob("*") if p.is_file())
        print(f"context: {files} files, {size / 1024:.0f} KiB (.dockerignore drops skip/ and *.log); "
              f"base image {IMAGE}; --network none; builds with -q")  # fmt: skip
        print("the Dockerfile:\n  " + DOCKERFILE.strip().replace("\n", "\n  "))
        print("the commands (cold adds --no-cache):")
        for name, b in engines.items():
            env = " ".join(f"{k}={b.env[k]}" for k in ("DOCKER_BUILDKIT", "TMPDIR") if k in b.env)
            argv = [
                *b.cli,
                "build",
                "-q",
                "--network",
                "none",
                "--build-arg",
                f"BASE={b.base}",
                "-t",
                b.tag,
                "CTX",
            ]
            print(f"  {LABEL[name]:<16} {env + ' ' if env else ''}{' '.join(argv)}")
        print("cache check (a cold build, then a verbose rebuild):")
        for name, why in check_cache(engines, context).items():
            print(f"{LABEL[name]}: cannot build here, left out: {why}")
        if not engines:
            return 1
        samples = measure(engines, context, args.runs)
        report(samples)
        print(f"at the end: {load()}")
    except (Failed, TimeoutError, subprocess.TimeoutExpired) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        bench.stop()
        report_podman_cgroups(podman_cgroups_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
