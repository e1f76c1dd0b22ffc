"""Firewall rules as data, rendered for iptables-restore and applied in one place.

ketch keeps its rules in its own chains, jumped to from the built-in ones:

    nat     POSTROUTING -j KETCH-POSTROUTING                    masquerade, hairpin, localhost
            PREROUTING  -m addrtype --dst-type LOCAL -j KETCH-DNAT   published ports
            OUTPUT      -m addrtype --dst-type LOCAL -j KETCH-DNAT   ... from the host itself
    filter  FORWARD     -j KETCH-FORWARD (first)                accept what ketch's networks need

The whole content of those chains is rendered from the state on disk (networks, and the
endpoints of running containers) and applied with one `iptables-restore --noflush`, which
replaces each chain atomically; a stale rule therefore cannot outlive the next apply. iptables
is used rather than a table of ketch's own in nftables because a DROP anywhere on a hook wins:
Docker sets the FORWARD policy to DROP in iptables' table, so ketch's accepts must live there.
"""

from __future__ import annotations

from ketch.errors import SetupFailed, Unsupported
from ketch.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ketch.network.store import Endpoint, NetworkRecord

BRIDGE_PREFIX = "ketch"  # every ketch bridge's name starts with it (ketch0, ketch-<id>)


class Rule(Record):
    table: str
    chain: str
    args: tuple[str, ...]

    def line(self, op: str = "-A") -> str:
        return " ".join((op, self.chain, *self.args))


def chains(prefix: str) -> dict[str, tuple[str, ...]]:
    """ketch's chains by table. The prefix is KETCH for the default runtime root; another root
    (a test's, a second engine's) gets its own chains, so engines never overwrite each other."""
    return {"nat": (f"{prefix}-POSTROUTING", f"{prefix}-DNAT"), "filter": (f"{prefix}-FORWARD",)}


def jumps(prefix: str) -> tuple[Rule, ...]:
    return (
        Rule("nat", "POSTROUTING", ("-j", f"{prefix}-POSTROUTING")),
        Rule("nat", "PREROUTING", ("-m", "addrtype", "--dst-type", "LOCAL", "-j", f"{prefix}-DNAT")),
        Rule("nat", "OUTPUT", ("-m", "addrtype", "--dst-type", "LOCAL", "-j", f"{prefix}-DNAT")),
        Rule("filter", "FORWARD", ("-j", f"{prefix}-FORWARD")),
    )


def render(
    family: int, networks: Iterable[NetworkRecord], endpoints: Iterable[Endpoint], prefix: str = "KETCH"
) -> list[Rule]:
    """Every rule of ketch's chains for IPv`family`, networks first, then published ports."""
    rules: list[Rule] = []
    nets = {n.id: n for n in networks}
    for net in nets.values():
        subnet = net.subnet(family == 6)
        if subnet is None:
            continue
        br = net.bridge
        nat = f"{prefix}-POSTROUTING"
        if not net.internal:
            rules.append(Rule("nat", nat, ("-s", subnet.subnet, "!", "-o", br, "-j", "MASQUERADE")))
        if family == 4:  # the host's own addresses (127.0.0.1 too: route_localnet) to a published port
            rules.append(
                Rule("nat", nat, ("-o", br, "-m", "addrtype", "--src-type", "LOCAL", "-j", "MASQUERADE"))
            )
        # hairpin: a container reaching a published port on the same bridge
        rules.append(Rule("nat", nat, ("-s", subnet.subnet, "-o", br, "-m", "conntrack", "--ctstate", "DNAT",
                                       "-j", "MASQUERADE")))  # fmt: skip
        fwd = f"{prefix}-FORWARD"
        rules.append(Rule("filter", fwd, ("-i", br, "-o", br, "-j", "ACCEPT")))
        if net.internal:
            rules += [
                Rule("filter", fwd, ("-i", br, "-j", "DROP")),
                Rule("filter", fwd, ("-o", br, "-j", "DROP")),
            ]
            continue
        rules += [
            Rule(
                "filter",
                fwd,
                ("-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
            ),
            Rule("filter", fwd, ("-o", br, "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT")),
            Rule("filter", fwd, ("-i", br, "-o", f"{BRIDGE_PREFIX}+", "-j", "DROP")),  # networks are isolated
            Rule("filter", fwd, ("-i", br, "-j", "ACCEPT")),
        ]
    for ep in endpoints:
        address = ep.ipv6 if family == 6 else ep.ipv4
        if ep.network not in nets or not address:
            continue
        for port in ep.ports:
            if port.host_ip and (":" in port.host_ip) != (family == 6):
                continue
            match = ("-d", port.host_ip) if port.host_ip and port.host_ip not in ("0.0.0.0", "::") else ()
            to = f"[{address}]:{port.container_port}" if family == 6 else f"{address}:{port.container_port}"
            proto = ("-p", port.protocol, "-m", port.protocol, "--dport", str(port.host_port))
            rules.append(
                Rule("nat", f"{prefix}-DNAT", (*match, *proto, "-j", "DNAT", "--to-destination", to))
            )
    return rules


def restore_text(rules: Iterable[Rule], present: str, remove: bool = False, prefix: str = "KETCH") -> str:
    """iptables-restore input that replaces ketch's chains with `rules` and adds the jumps missing
    from `present` (iptables-save output); with `remove`, drops the chains and jumps instead."""
    own = chains(prefix)
    by_table: dict[str, list[str]] = {table: [] for table in own}
    for table, names in own.items():
        by_table[table] += [f":{chain} - [0:0]" for chain in names]  # declaring flushes
    lines = present.splitlines()
    for jump in jumps(prefix):
        there = jump.line() in lines
        if remove and there:
            by_table[jump.table].append(jump.line("-D"))
        elif not remove and not there:
            by_table[jump.table].append(jump.line("-I") if jump.chain == "FORWARD" else jump.line("-A"))
    if remove:
        for table, names in own.items():
            by_table[table] += [f"-X {chain}" for chain in names]
    else:
        for rule in rules:
            by_table[rule.table].append(rule.line())
    out = []
    for table, body in by_table.items():
        out += [f"*{table}", *body, "COMMIT"]
    return "\n".join(out) + "\n"


def apply(
    family: int, networks: list[NetworkRecord], endpoints: list[Endpoint], prefix: str = "KETCH"
) -> None:
    """Make ketch's chains hold exactly what the networks and endpoints need (serialise callers);
    with no networks, remove the chains."""
    present = _save(family)
    if not networks and f":{prefix}-FORWARD " not in present:
        return
    rules = render(family, networks, endpoints, prefix)
    _restore(family, restore_text(rules, present, remove=not networks, prefix=prefix))


def _tool(family: int, name: str) -> str:
    import shutil

    command = ("ip6tables" if family == 6 else "iptables") + name
    path = shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")
    if path is None:
        raise Unsupported(f"bridge networks need {command} (apt-get install iptables)")
    return path


def _save(family: int) -> str:
    import subprocess

    done = subprocess.run([_tool(family, "-save")], capture_output=True, check=False)
    if done.returncode != 0:
        raise SetupFailed(f"iptables-save: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode(errors="replace")


def _restore(family: int, text: str) -> None:
    import subprocess

    done = subprocess.run([_tool(family, "-restore"), "--noflush", "-w"], input=text.encode(),
                          capture_output=True, check=False)  # fmt: skip
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise SetupFailed(f"iptables-restore: {message[0] if message else done.returncode}")
