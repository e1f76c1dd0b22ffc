"""A small command-line parser for runc-style CLIs: global flags, a verb, its flags, positionals.

argparse costs several milliseconds to import and build; this covers what runc's CLI needs
(--flag value, --flag=value, short aliases, repeated flags, `--` and flags after positionals).
"""

from __future__ import annotations

from ketch.errors import InvalidArgument
from ketch.record import Record, field


class Flag(Record):
    name: str  # long name without dashes
    short: str = ""
    value: bool = False  # takes a value
    multi: bool = False  # may repeat; collects a list
    default: object = None
    help: str = ""


class Parsed(Record, frozen=False):
    flags: dict[str, object] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)

    def string(self, name: str) -> str:
        value = self.flags.get(name)
        return value if isinstance(value, str) else ""

    def boolean(self, name: str) -> bool:
        return self.flags.get(name) is True

    def strings(self, name: str) -> list[str]:
        value = self.flags.get(name)
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    def integer(self, name: str, default: int = 0) -> int:
        raw = self.string(name)
        if not raw:
            return default
        try:
            return int(raw)
        except ValueError as exc:
            raise InvalidArgument(f"--{name}: expected a number, got {raw!r}") from exc


def parse(
    argv: list[str], flags: tuple[Flag, ...], stop_at_positional: bool = False, what: str = "command"
) -> Parsed:
    """Parse argv; with stop_at_positional the first positional ends flag parsing (global flags, exec)."""
    by_long = {f.name: f for f in flags}
    by_short = {f.short: f for f in flags if f.short}
    out = Parsed({f.name: ([] if f.multi else f.default) for f in flags})
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            out.args.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            out.args.append(arg)
            if stop_at_positional:
                out.args.extend(argv[i:])
                break
            continue
        name, eq, inline = arg.lstrip("-").partition("=")
        flag = by_long.get(name) if arg.startswith("--") else by_short.get(name)
        if flag is None and not arg.startswith("--") and len(name) > 1 and all(c in by_short for c in name):
            # bundled short flags, getopt style: -dt; a flag taking a value may only come last (-de X)
            *booleans, last = (by_short[c] for c in name)
            if any(f.value for f in booleans):
                raise InvalidArgument(f"{what}: in {arg}, only the last flag may take a value")
            for f in booleans:
                out.flags[f.name] = True
            flag, arg = last, "-" + last.short
            if not flag.value:
                out.flags[flag.name] = True
                continue
        if flag is None:
            raise InvalidArgument(f"{what}: unknown flag {arg.split('=')[0]}")
        value: str | bool
        if flag.value:
            if eq:
                value = inline
            elif i < len(argv):
                value, i = argv[i], i + 1
            else:
                raise InvalidArgument(f"{what}: flag --{flag.name} needs a value")
        else:
            value = True if not eq else inline.lower() not in ("false", "0", "no")
        if flag.multi:
            collected = out.flags[flag.name]
            assert isinstance(collected, list)
            collected.append(value)
        else:
            out.flags[flag.name] = value
    return out


def usage(flags: tuple[Flag, ...]) -> str:
    lines = []
    for f in flags:
        names = f"--{f.name}" + (f", -{f.short}" if f.short else "") + (" value" if f.value else "")
        lines.append(f"   {names:<32} {f.help}")
    return "\n".join(lines)
