"""ketch's networking against docker's and podman's, and against a bare veth, side by side in one run.

    .venv/bin/python bench/network_run.py [--runs N] [--tools ketch,docker,podman] [--megabytes M]
                                          [--repeat K] [--skip-throughput] [--skip-run]
                                          [--podman-runtime PATH]

The image is engine_run.py's: Debian's busybox-static imported into ketch, `ketch save`d and
loaded into docker and podman, so all three run the same image. Two measures:

1. `run --rm IMAGE true` with each engine's default bridge networking (no --network): ketch's
   `bridge` (its own Linux bridge, ketch<6 hex> for a private runroot), docker's docker0, podman's
   netavark `podman` network (podman0). One warm-up round, then N rounds (default 20), the order of
   the engines rotating from round to round. Medians in ms and ketch / min(docker, podman).
2. Throughput: one TCP stream of M MiB (default 1024, 1 GiB) with iperf3, K times per case (default
   3), the cases interleaved, the same client options everywhere (`iperf3 -c ADDRESS -p PORT
   -n {M}M -P 1 -J`, the server `iperf3 -s -1 -p PORT`):
   - raw veth: two network namespaces made here (`ip netns add`), joined by a veth pair on
     10.254.254.0/30; server and client run with `ip netns exec`;
   - ketch container -> container on a user network (`ketch network create`), the client
     reaching the server by its name (ketch's DNS);
   - host -> a port published with `-p HOSTPORT:5000` on ketch's default bridge, to 127.0.0.1
     and to the host's address on its default route.
   The figure is the receiver's: end.sum_received.bits_per_second of the client's JSON (the
   server's count and time, which iperf3 hands back to the client). Medians in Gbit/s (10^9
   bits/s), and published / raw and container-to-container / raw. The containers run the host's
   iperf3, bind-mounted read-only with the directories of its loader and libraries (as `ldd`
   names them) at the same paths into the busybox image. With -n the receiver stops counting
   and timing when the client's end of test reaches it, so the last bytes still in the socket
   buffers go uncounted (0.3 to 2.2% of 1 GiB in the first runs here; `counted` in the output is
   the least share in a case's runs): a run is invalid if iperf3 reports an error, if the client
   sent less than M MiB, or if the receiver counted less than M MiB minus the largest send and
   receive buffers (net.ipv4.tcp_wmem and tcp_rmem).
   Without iperf3 on the host, busybox nc instead, said so in the output: M MiB of zeros,
   `dd | busybox nc` to `busybox nc -l | wc -c`, timed with `busybox adjtimex` (the host's clock,
   in microseconds, in and out of containers alike) from before the sender starts to when `wc -c`
   has counted everything, which must be the M MiB sent; the receiver's stdin is a FIFO held open,
   so its nc never half-closes the connection early. busybox nc copies 1 KiB per read and write,
   with a select() each: those rates are bound by its system calls, not by the path.

dockerd and its containerd are private (bench/daemons.py) but get their networking: docker0 with
--bip 172.31.250.1/24 and iptables. podman gets private --root/--runroot/--tmpdir,
--cgroup-manager cgroupfs and --runtime ketch-oci (runc and crun fail here on RLIMIT_NOFILE; see
engine_run.py), and its default netavark network. docker is left out if docker0 or DOCKER chains
exist already: they would be someone else's.

At the end, even on failure or Ctrl-C, everything made here is removed: containers, networks,
bridges, firewall chains and the DNS server of ketch's engine (`ketch system reset -f`); dockerd
and containerd, then docker0 and the DOCKER chains and rules they leave behind, and the FORWARD
policy dockerd sets to DROP is put back; podman's containers (`podman system reset -f`), then what
netavark leaves: podman0 if it was not there before, NETAVARK chains and rules, and netns-* entries
no process uses; the two namespaces and their veths; temp dirs and the mounts under them. Only
rules and chains that appeared during the run are touched. What is still there is reported.
Needs root. Exits 1 if a transfer was invalid or a step failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from daemons import start_docker, wait_for
from engine_run import (
    IMAGE,
    KETCH,
    KETCH_OCI,
    TOOLS,
    Bench,
    Engine,
    Failed,
    kill_pids,
    load,
    measure_run_rm,
    processes,
    ratios,
    run,
    timed,
    unmount_under,
    versions,
)

DOCKER_BIP, DOCKER_SUBNET, DOCKER_BRIDGE = "172.31.250.1/24", "172.31.250.0/24", "docker0"
PODMAN_SUBNET, PODMAN_BRIDGE = "10.88.0.0/16", "podman0"  # netavark's default network
PEERS = {  # what each peer leaves on the host: (bridge, subnet, prefix of its iptables chains)
    "docker": (DOCKER_BRIDGE, DOCKER_SUBNET, "DOCKER"),
    "podman": (PODMAN_BRIDGE, PODMAN_SUBNET, "NETAVARK"),
}
PODMAN_NETWORKS = Path("/run/containers/networks")  # rootful podman's, whatever its --runroot: ipam.db
RAW_ADDRESSES = ("10.254.254.1", "10.254.254.2")  # receiver, sender; a /30
PORT = 5000  # the receivers' port
NETWORK = "kbnet"  # ketch's user network
RECEIVER = "kbrecv"
MiB = 1 << 20

# The fallback without iperf3. busybox everywhere: on the host `nc` may be another netcat. The
# receiver's stdin is a FIFO opened read-write: no data, no EOF (an EOF on stdin would make nc shut
# the connection down for writing, and the sender then stops early). It counts what it got, then
# notes the time.
RECEIVE = (
    "busybox mkfifo {fifo} && busybox nc -l -p {port} <>{fifo} | busybox wc -c; "
    "busybox adjtimex | busybox grep tv_"
)
SEND = (
    "busybox adjtimex | busybox grep tv_; "
    "busybox dd if=/dev/zero bs=1M count={mb} 2>/dev/null | busybox nc -w 2 {address} {port}"
)


# -- the host's state: links, namespaces, iptables ----------------------------------------------


@dataclass
class Firewall:
    """One family's iptables: chains and rules as (table, chain) and (table, "-A ..." line)."""

    chains: set[tuple[str, str]]
    rules: set[tuple[str, str]]
    policies: dict[tuple[str, str], str]


def iptables(family: int) -> str:
    return "ip6tables" if family == 6 else "iptables"


def firewall(family: int) -> Firewall:
    fw = Firewall(set(), set(), {})
    table = ""
    for line in run([f"{iptables(family)}-save"]).stdout.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chain, policy = line[1:].split()[:2]
            fw.chains.add((table, chain))
            if policy != "-":
                fw.policies[(table, chain)] = policy
        elif line.startswith("-A "):
            fw.rules.add((table, line))
    return fw


@dataclass
class HostState:
    links: set[str]
    netns: set[str]
    firewalls: dict[int, Firewall]
    podman_files: set[str]  # in PODMAN_NETWORKS


def host_state() -> HostState:
    netns = {line.split()[0] for line in run(["ip", "netns", "list"]).stdout.splitlines() if line.strip()}
    podman = set(os.listdir(PODMAN_NETWORKS)) if PODMAN_NETWORKS.is_dir() else set()
    return HostState(set(os.listdir("/sys/class/net")), netns, {f: firewall(f) for f in (4, 6)}, podman)


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def remove_rules(before: dict[int, Firewall], prefixes: tuple[str, ...], marks: set[str]) -> list[str]:
    """Delete the chains named with `prefixes` and the rules that jump to them or name one of
    `marks` (devices, subnets), among those that appeared since `before`; what was removed."""
    removed = []
    for family, old in before.items():
        now = firewall(family)
        own = {(t, c) for t, c in now.chains - old.chains if c.startswith(prefixes)}
        names = {c for _, c in own} | marks
        stale = [
            (t, line)
            for t, line in sorted(now.rules - old.rules)
            if (t, line.split()[1]) not in own and names & set(shlex.split(line))
        ]
        text = []
        for table in sorted({t for t, _ in own} | {t for t, _ in stale}):
            text += [f"*{table}", *(f":{c} - [0:0]" for t, c in sorted(own) if t == table)]  # flushes them
            text += ["-D" + line[2:] for t, line in stale if t == table]
            text += [f"-X {c}" for t, c in sorted(own) if t == table]
            text.append("COMMIT")
        if text:
            subprocess.run([f"{iptables(family)}-restore", "--noflush", "-w"], input="\n".join(text) + "\n",
                           text=True, check=True, capture_output=True)  # fmt: skip
            removed += [f"{iptables(family)} {t} chain {c}" for t, c in sorted(own)]
            removed += [f"{iptables(family)} {t} rule {line}" for t, line in stale]
        # dockerd sets FORWARD's policy to DROP
        policy = old.policies.get(("filter", "FORWARD"))
        if policy and now.policies.get(("filter", "FORWARD")) != policy:
            run([iptables(family), "-w", "-P", "FORWARD", policy])
            removed.append(f"{iptables(family)} FORWARD policy back to {policy}")
    return removed


def netns_users() -> set[tuple[int, int]]:
    """(device, inode) of every process's network namespace."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            out.add((st.st_dev, st.st_ino))
    return out


# -- the raw veth pair ---------------------------------------------------------------------------


class RawPair:
    """Two network namespaces joined by a veth pair: the receiver's end first."""

    def __init__(self) -> None:
        tag = os.getpid()
        self.netns = (f"kbn{tag}r", f"kbn{tag}s")
        self.veths = (f"kbv{tag}r", f"kbv{tag}s")
        self.made = False

    def create(self) -> None:
        self.made = True
        for ns in self.netns:
            run(["ip", "netns", "add", ns])
        (rns, sns), (rdev, sdev) = self.netns, self.veths
        run(["ip", "link", "add", rdev, "netns", rns, "type", "veth", "peer", "name", sdev, "netns", sns])
        for ns, dev, address in zip(self.netns, self.veths, RAW_ADDRESSES, strict=True):
            run(["ip", "-n", ns, "addr", "add", f"{address}/30", "dev", dev])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def remove(self) -> None:
        if not self.made:
            return
        for ns in self.netns:  # the veth ends go with them
            run(["ip", "netns", "del", ns], check=False)
        for dev in self.veths:
            if link_exists(dev):
                run(["ip", "link", "del", dev], check=False)


# -- the engines and their cleanup ---------------------------------------------------------------


class Bridged(Engine):
    """An engine whose `run --rm` uses its default (bridge) network."""

    def run_rm(self) -> float:
        return timed([*self.base, "run", "--rm", self.ref, "true"])[0]


class NetBench(Bench):
    """engine_run's Bench with the engines' networking on, and the host's networking cleaned up."""

    def __init__(self, work: Path, tools: list[str], podman_runtime: str) -> None:
        super().__init__(work, tools, podman_runtime)
        self.before = host_state()
        self.left_out: dict[str, str] = {}  # engine -> why
        self.started: set[str] = set()  # the peers whose networking must be cleaned up
        self.spawned: list[subprocess.Popen[str]] = []  # the shells of the transfers
        self.pair = RawPair()
        self.bridges: set[str] = set()  # ketch's, as they get made
        self.fifos = 0

    @property
    def ketch(self) -> list[str]:
        return [KETCH, "--root", str(self.ketch_root), "--runroot", str(self.ketch_run)]

    def ketch_tag(self) -> str:
        """How ketch names this runroot's default bridge and chains (ketch.engine.networks._tag)."""
        return hashlib.sha256(os.path.realpath(self.ketch_run).encode()).hexdigest()[:6]

    def start(self) -> None:
        theirs = [c for fw in self.before.firewalls.values() for _, c in fw.chains if c.startswith("DOCKER")]
        if "docker" in self.tools and (DOCKER_BRIDGE in self.before.links or theirs):
            self.left_out["docker"] = (
                f"{DOCKER_BRIDGE} or DOCKER chains exist already; they are not this run's"
            )
            self.tools = [t for t in self.tools if t != "docker"]
        self.started = {t for t in self.tools if t in ("docker", "podman")}
        super().start()
        self.engines = {n: Bridged(e.name, e.base, e.ref, e.rm_flags) for n, e in self.engines.items()}
        self.bridges.add(f"ketch{self.ketch_tag()}")

    def start_docker(self) -> str:
        return start_docker(self.ctr_sock.parent, self._spawn, bridge_ip=DOCKER_BIP)

    def fifo(self) -> Path:
        self.fifos += 1
        return self.work / f"fifo{self.fifos}"

    def stop(self) -> None:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("the transfers' shells", self.kill_transfers),
            ("the raw namespaces", self.pair.remove),
            ("ketch system reset", self.reset_ketch),
            ("the engines", super().stop),  # containers, daemons, podman system reset, mounts, temp dir
            ("docker's and podman's networking", self.remove_peer_networking),
            ("leftover processes", self.sweep),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as err:  # keep cleaning up
                print(f"cleanup: {what}: {err}", file=sys.stderr)
        for what in self.leftovers():
            print(f"cleanup: STILL THERE: {what}", file=sys.stderr)

    def kill_transfers(self) -> None:
        for proc in self.spawned:
            kill_group(proc)

    def reset_ketch(self) -> None:
        """Containers, networks, bridges, chains, the DNS server and the supervisor of ketch's engine."""
        if self.ketch_root.exists():
            run([*self.ketch, "system", "reset", "-f"], timeout=300)

    def sweep(self) -> None:
        """Any process still naming the temp dir (a monitor, a shim, a conmon, a DNS server)."""
        me = os.getpid()
        mine = [p for p, argv in processes().items() if p != me and any(str(self.work) in a for a in argv)]
        if mine:
            kill_pids(mine, "leftover processes of this run")
            unmount_under(self.work)
        shutil.rmtree(self.work, ignore_errors=True)

    def remove_peer_networking(self) -> None:
        """What dockerd and podman leave behind once they are stopped: bridges, iptables, podman's
        netns entries and IPAM database; only what appeared during this run."""
        for what in self.peer_leftovers():
            print(f"cleanup: removed {what}", file=sys.stderr)

    def peer_leftovers(self) -> list[str]:
        removed: list[str] = []
        prefixes, marks = [], set()
        for name in sorted(self.started):
            bridge, subnet, prefix = PEERS[name]
            prefixes.append(prefix)
            marks |= {bridge, subnet}
            if link_exists(bridge) and bridge not in self.before.links:
                run(["ip", "link", "del", bridge], check=False)
                removed.append(f"link {bridge}")
        if prefixes:
            removed += remove_rules(self.before.firewalls, tuple(prefixes), marks)
        if "podman" in self.started:
            used = netns_users()
            for ns in host_state().netns - self.before.netns:
                path = Path("/run/netns") / ns
                if ns.startswith("netns-") and path.exists():
                    st = path.stat()
                    if (st.st_dev, st.st_ino) not in used:
                        run(["ip", "netns", "del", ns], check=False)
                        removed.append(f"netns {ns}")
            for name in host_state().podman_files - self.before.podman_files:
                path = PODMAN_NETWORKS / name
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(str(path))
        return removed

    def leftovers(self) -> list[str]:
        now = host_state()
        ours = set(self.pair.veths) | self.bridges | {PEERS[n][0] for n in self.started}
        out = [f"link {x}" for x in sorted((now.links - self.before.links) & ours)]
        new_netns = now.netns - self.before.netns
        out += [f"netns {x}" for x in sorted(new_netns & set(self.pair.netns))]
        if "podman" in self.started:
            out += [f"netns {x}" for x in sorted(new_netns) if x.startswith("netns-")]
            out += [str(PODMAN_NETWORKS / x) for x in sorted(now.podman_files - self.before.podman_files)]
        prefixes = (f"KETCH{self.ketch_tag()}-", *(PEERS[n][2] for n in self.started))
        for family, old in self.before.firewalls.items():
            fw = firewall(family)
            out += [
                f"{iptables(family)} {t} chain {c}"
                for t, c in sorted(fw.chains - old.chains)
                if c.startswith(prefixes)
            ]
            if fw.policies.get(("filter", "FORWARD")) != old.policies.get(("filter", "FORWARD")):
                out.append(f"{iptables(family)} FORWARD policy {fw.policies.get(('filter', 'FORWARD'))}")
        if self.work.exists():
            out.append(f"dir {self.work}")
        return out


# -- throughput ----------------------------------------------------------------------------------


@dataclass
class Transfer:
    received: int = 0  # bytes, as the receiver counted them
    bits_per_second: float = 0.0  # the receiver's
    error: str = ""


class Meter:
    """How a transfer is made and read: the argv of the receiver (a server listening on a port)
    and of the sender, run on the host, in a namespace or in a container of the busybox image with
    `mounts` added to its `ketch run`."""

    mounts: list[str]

    def __init__(self, megabytes: int) -> None:
        self.megabytes, self.mounts = megabytes, []

    def receive(self, port: int, fifo: str) -> list[str]:  # fifo: a path of its own, if it needs one
        raise NotImplementedError

    def send(self, address: str, port: int | str) -> list[str]:
        raise NotImplementedError

    def result(self, sent: subprocess.CompletedProcess[str], received: str) -> Transfer:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class Iperf3(Meter):
    def __init__(self, megabytes: int, binary: str) -> None:
        super().__init__(megabytes)
        self.binary = binary
        self.mounts = library_mounts(binary)
        self.slack = socket_buffers()

    def receive(self, port: int, fifo: str) -> list[str]:
        return [self.binary, "-s", "-1", "-p", str(port)]

    def send(self, address: str, port: int | str) -> list[str]:
        return [self.binary, "-c", address, "-p", str(port), "-n", f"{self.megabytes}M", "-P", "1", "-J"]

    def describe(self) -> str:
        version = run([self.binary, "--version"], check=False).stdout.split("\n")[0]
        client = shlex.join(self.send("ADDRESS", "PORT"))
        return (
            f"{version}:\n  client `{client}`, server `{shlex.join(self.receive(PORT, ''))}`;"
            f"\n  in the containers: {' '.join(self.mounts)}"
        )

    def result(self, sent: subprocess.CompletedProcess[str], received: str) -> Transfer:
        try:
            out = json.loads(sent.stdout)
        except ValueError:
            out = {"error": "no JSON"}
        if "error" in out or sent.returncode != 0:
            why = f"iperf3 client exited {sent.returncode}: {out.get('error') or sent.stderr.strip()[-300:]}"
            return Transfer(error=f"{why}; server: {received.strip()[-300:]!r}")
        end, size = out["end"], self.megabytes * MiB
        t = Transfer(end["sum_received"]["bytes"], end["sum_received"]["bits_per_second"])
        if end["sum_sent"]["bytes"] < size:
            t.error = f"sent {end['sum_sent']['bytes']} of {size} bytes"
        elif t.received < size - self.slack:
            t.error = f"received {t.received} of {size} bytes: more missing than the socket buffers hold"
        return t


class Netcat(Meter):
    def receive(self, port: int, fifo: str) -> list[str]:
        return ["busybox", "sh", "-c", RECEIVE.format(fifo=fifo, port=port)]

    def send(self, address: str, port: int | str) -> list[str]:
        return ["busybox", "sh", "-c", SEND.format(mb=self.megabytes, address=address, port=port)]

    def describe(self) -> str:
        return (
            "busybox nc, dd | nc to nc -l | wc -c:\n  iperf3 is NOT installed, so these rates are"
            " bound by busybox nc's 1 KiB copies, not by the paths"
        )

    def result(self, sent: subprocess.CompletedProcess[str], received: str) -> Transfer:
        counts = [int(line) for line in received.split() if line.isdigit()]
        start, end = clock(sent.stdout), clock(received)
        t = Transfer(counts[0] if counts else 0)
        if sent.returncode != 0:
            t.error = f"sender exited {sent.returncode}: {sent.stderr.strip()[-300:]}"
        elif t.received != self.megabytes * MiB:
            t.error = f"received {t.received} of {self.megabytes * MiB} bytes"
        elif start is None or end is None or end <= start:
            t.error = f"no times: sender {sent.stdout!r}, receiver {received!r}"
        else:
            t.bits_per_second = t.received * 8 / (end - start)
        return t


def clock(text: str) -> float | None:
    """The time `busybox adjtimex` printed, in seconds."""
    found = dict(re.findall(r"time\.tv_(sec|usec):\s*(\d+)", text))
    return int(found["sec"]) + int(found["usec"]) / 1e6 if len(found) == 2 else None


def library_mounts(binary: str) -> list[str]:
    """`ketch run` flags that make a dynamically linked program of the host's run in the busybox
    image: the program and the directories of its loader and libraries, read-only at the paths
    `ldd` names (their targets, if those paths are symlinks, as /lib is under merged /usr)."""
    dirs = {os.path.dirname(m) for m in re.findall(r"(/\S+) \(0x", run(["ldd", binary]).stdout)}
    pairs = [(os.path.realpath(binary), binary), *((os.path.realpath(d), d) for d in sorted(dirs))]
    return [flag for source, dest in pairs for flag in ("-v", f"{source}:{dest}:ro")]


def socket_buffers() -> int:
    """The largest TCP send buffer plus the largest receive buffer, in bytes: at most what a
    transfer's receiver can leave uncounted when the end of test reaches it."""
    return sum(int(Path(f"/proc/sys/net/ipv4/tcp_{x}mem").read_text().split()[2]) for x in ("w", "r"))


def listening(pid: int, port: int) -> bool:
    """Whether a TCP socket in the network namespace of `pid` listens on `port`."""
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for fields in (line.split() for line in lines):
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
                return True
    return False


def transfer_timeout(megabytes: int) -> float:
    return 60 + megabytes / 2  # at least 2 MB/s


def spawn(bench: NetBench, argv: list[str]) -> subprocess.Popen[str]:
    """A shell of this benchmark's in a session of its own, so that its children (nc, dd, wc) can
    be killed with it: on interruption, on failure, at cleanup."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    bench.spawned.append(proc)
    return proc


def kill_group(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:  # while the leader is not reaped, its group id cannot be anyone else's
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def finish(bench: NetBench, proc: subprocess.Popen[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Wait for a spawned shell (its group is killed if that fails or is interrupted)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc)
        bench.spawned.remove(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def raw_veth(bench: NetBench, meter: Meter) -> Transfer:
    (rns, sns), fifo = bench.pair.netns, bench.fifo()
    recv = spawn(bench, ["ip", "netns", "exec", rns, *meter.receive(PORT, str(fifo))])
    try:
        wait_for(lambda: listening(recv.pid, PORT) or recv.poll() is not None, "the raw receiver", 10)
        if recv.poll() is not None:
            raise Failed(f"the raw receiver exited: {finish(bench, recv, 5).stderr.strip()}")
        send = ["ip", "netns", "exec", sns, *meter.send(RAW_ADDRESSES[0], PORT)]
        sent = finish(bench, spawn(bench, send), transfer_timeout(meter.megabytes))
        if sent.returncode != 0:
            kill_group(recv)
        return meter.result(sent, finish(bench, recv, 30).stdout)
    finally:
        if recv in bench.spawned:
            kill_group(recv)
            bench.spawned.remove(recv)
        fifo.unlink(missing_ok=True)


def to_container(
    bench: NetBench, meter: Meter, where: list[str], sender: list[str], address: str, port: int
) -> Transfer:
    """A receiver container run with `where` (its network, its ports); the sender is
    `sender + meter.send(...)`: a container run, or nothing for the host."""
    k = bench.ketch
    run([*k, "run", "-d", "--name", RECEIVER, *where, *meter.mounts, IMAGE, *meter.receive(PORT, "/tmp/f")])
    try:
        pid = int(run([*k, "inspect", "--format", "{{.State.Pid}}", RECEIVER]).stdout.strip() or 0)
        try:
            wait_for(lambda: listening(pid, PORT), "the receiver container", 10)
        except TimeoutError:
            logs = run([*k, "logs", RECEIVER], check=False)
            raise Failed(f"the receiver container does not listen: {logs.stdout} {logs.stderr}") from None
        send = [*sender, *meter.send(address, port)]
        sent = finish(bench, spawn(bench, send), transfer_timeout(meter.megabytes))
        if sent.returncode != 0:
            run([*k, "kill", RECEIVER], check=False)
        run([*k, "wait", RECEIVER], timeout=60)
        return meter.result(sent, run([*k, "logs", RECEIVER]).stdout)
    finally:
        run([*k, "rm", "-f", RECEIVER], check=False)


def container_to_container(bench: NetBench, meter: Meter) -> Transfer:
    sender = [*bench.ketch, "run", "--rm", "--network", NETWORK, *meter.mounts, IMAGE]
    return to_container(bench, meter, ["--network", NETWORK], sender, RECEIVER, PORT)


def host_address() -> str | None:
    """The host's IPv4 address on the device of its default route."""
    routes = json.loads(run(["ip", "-j", "-4", "route", "show", "default"]).stdout or "[]")
    if not routes or "dev" not in routes[0]:
        return None
    links = json.loads(
        run(["ip", "-j", "-4", "addr", "show", "dev", routes[0]["dev"], "scope", "global"]).stdout
    )
    addresses = [a["local"] for link in links for a in link.get("addr_info", [])]
    return addresses[0] if addresses else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


@dataclass
class Case:
    label: str
    measure: Callable[[NetBench, Meter], Transfer]
    ratio: str = ""  # its name in the ratios to raw; "" for raw
    target: str = ""
    runs: list[Transfer] = field(default_factory=list)


def measure_throughput(bench: NetBench, meter: Meter, repeat: int) -> list[Case]:
    bench.pair.create()
    run([*bench.ketch, "network", "create", NETWORK])
    inspect = json.loads(run([*bench.ketch, "network", "inspect", NETWORK]).stdout)
    bench.bridges.add(inspect[0]["Options"]["com.docker.network.bridge.name"])
    hostport = free_port()
    publish = ["-p", f"{hostport}:{PORT}"]

    def published(address: str) -> Callable[[NetBench, Meter], Transfer]:
        return lambda b, m: to_container(b, m, publish, [], address, hostport)

    cases = [
        Case("raw veth, netns -> netns", raw_veth),
        Case("ketch container -> container", container_to_container, "container-to-container"),
        Case("host -> ketch -p, 127.0.0.1", published("127.0.0.1"), "published 127.0.0.1", ">= 0.8"),
    ]
    if address := host_address():
        cases.append(
            Case(f"host -> ketch -p, {address}", published(address), f"published {address}", ">= 0.8")
        )
    for i in range(repeat):
        k = i % len(cases)
        for case in cases[k:] + cases[:k]:
            case.runs.append(case.measure(bench, meter))
    return cases


# -- the report ----------------------------------------------------------------------------------


def report_run(rm: dict[str, list[float]]) -> None:
    runs = len(next(iter(rm.values())))
    print(f"\n1. run --rm IMAGE true on the default bridge: ms, median of {runs} rounds (after 1 warm-up)")
    med = {n: statistics.median(v) for n, v in rm.items()}
    for name, value in med.items():
        print(f"  {name:<8} {value:7.0f}   runs: {' '.join(f'{x:.0f}' for x in rm[name])}")
    if line := ratios(med, "ketch <= 0.25x the faster"):
        print(line)


def report_throughput(cases: list[Case], meter: Meter, repeat: int) -> bool:
    """The table; whether every run was valid."""
    print(f"\n2. throughput, {meter.megabytes} MiB per transfer, one TCP stream, {meter.describe()}")
    print(f"  the receiver's Gbit/s (10^9 bits/s), median of {repeat}; counted: the least share of the")
    print(f"  {meter.megabytes} MiB the receiver counted in a run")
    med: dict[str, float] = {}
    for case in cases:
        good = [t for t in case.runs if not t.error]
        if good:
            med[case.label] = statistics.median(t.bits_per_second / 1e9 for t in good)
            runs = " ".join(f"{t.bits_per_second / 1e9:.2f}" for t in good)
            counted = min(t.received for t in good) / (meter.megabytes * MiB)
            print(f"  {case.label:<32} {med[case.label]:6.2f}   runs: {runs}   counted: {counted:.2%}")
        else:
            print(f"  {case.label:<32} INVALID (no valid run)")
        for t in case.runs:
            if t.error:
                print(f"  {'':<32} INVALID run: {t.error}")
    valid = all(not t.error for case in cases for t in case.runs)
    raw = med.get(cases[0].label)
    if not raw:
        print("  no ratios: the raw veth measure is invalid")
        return False
    for case in cases[1:]:
        if case.label in med:
            target = f"   (target {case.target})" if case.target else ""
            print(f"  {case.ratio} / raw = {med[case.label] / raw:.2f}{target}")
    return valid


def tool_versions(bench: NetBench, runtime: str) -> str:
    out = [versions(bench.engines, runtime)] if bench.engines else []
    if "ketch" not in bench.engines:
        out.append(run([KETCH, "--version"], check=False).stdout.strip())
    if "podman" in bench.engines:
        backend = run(
            [*bench.engines["podman"].base, "info", "--format", "{{.Host.NetworkBackend}}"], check=False
        )
        netavark = run(["/usr/lib/podman/netavark", "--version"], check=False).stdout.strip()
        out.append(f"podman network backend {backend.stdout.strip() or '?'} ({netavark or 'netavark ?'})")
    out.append(run(["busybox"], check=False).stdout.splitlines()[0].split(" multi-call")[0])
    return "; ".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="rounds of run --rm (default 20)")
    ap.add_argument("--tools", default=",".join(TOOLS), help="engines of measure 1 (default: all three)")
    ap.add_argument("--megabytes", type=int, default=1024, help="MiB per transfer (default 1024)")
    ap.add_argument("--repeat", type=int, default=3, help="transfers per case (default 3)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-run", action="store_true")
    ap.add_argument("--podman-runtime", default=KETCH_OCI, help="podman's --runtime (default: ketch-oci)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/network_run.py needs root")
    tools = [t for t in args.tools.split(",") if t]
    if unknown := set(tools) - set(TOOLS):
        raise SystemExit(f"unknown tools: {', '.join(sorted(unknown))}")
    if args.skip_run:
        tools = ["ketch"]  # throughput only needs ketch
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the cleanup runs
    work = Path(tempfile.mkdtemp(prefix="knb", dir="/tmp"))  # short: socket paths and podman's runroot
    bench = NetBench(work, tools, args.podman_runtime)
    try:
        bench.start()
        failed = bench.left_out | {  # preflight: one bridged run --rm each
            name: f"cannot run a bridged container here: {why}" for name, why in bench.preflight().items()
        }
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {load()}; {os.cpu_count()} CPUs")
        print(tool_versions(bench, args.podman_runtime))
        for name, why in failed.items():
            print(f"{name}: left out: {why}")
        if not args.skip_run and bench.engines:
            ids = {n: e.image_id() for n, e in bench.engines.items()}
            same = "the same ID in all" if len(set(ids.values())) == 1 else f"IDs differ: {ids}"
            print(f"image {IMAGE}: {next(iter(ids.values()))[:19]} ({same})")
            report_run(measure_run_rm(bench.engines, args.runs))
        valid = True
        if not args.skip_throughput:
            iperf3 = shutil.which("iperf3")
            meter = Iperf3(args.megabytes, iperf3) if iperf3 else Netcat(args.megabytes)
            cases = measure_throughput(bench, meter, args.repeat)
            valid = report_throughput(cases, meter, args.repeat)
        print(f"\nat the end: {load()}")
        if not valid:
            return 1
    except (Failed, TimeoutError, subprocess.TimeoutExpired) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        bench.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
