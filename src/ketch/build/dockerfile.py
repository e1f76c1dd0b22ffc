"""Dockerfile parsing and word expansion, as BuildKit's Dockerfile frontend does them.

Parsing runs in the two passes BuildKit has (frontend/dockerfile/parser, then instructions):

1. lines -> nodes: parser directives, comments, line continuations (with the escape token),
   leading --flags, JSON (exec) versus shell form, ENV/LABEL/ARG words, ONBUILD's nested line and
   heredoc bodies. Errors here (bad JSON arrays, ENV syntax, unterminated heredocs) are reported
   before any error of the second pass, as Docker reports them.
2. nodes -> instructions: typed records (`RunInstruction`, `CopyInstruction`, ...), flag
   validation per instruction, argument counts, stages (FROM ... AS name) and global ARGs.

Nothing is expanded at parse time: words keep their quotes and `$VAR`s (`Instruction.args`,
`PairsInstruction.pairs`, ...), and the builder expands them with the environment in force at
that step, using `expand` / `expand_words` (a port of BuildKit's shell/lex.go) for the
instructions named in `EXPANDS`. Every error is `InvalidArgument("Dockerfile:LINE: message")`.

The stage graph helpers (`resolve_meta`, `dependencies`, `needed_stages`) expand FROM and
COPY --from with the global ARGs, so `--target` builds only the stages it needs.
"""

from __future__ import annotations

from ketch.errors import InvalidArgument
from ketch.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from re import Pattern
    from typing import TypedDict

    class _Fields(TypedDict):
        """The fields every Instruction has, as built from a node."""

        kind: str
        line: int
        end_line: int
        original: str
        args: tuple[str, ...]
        flags: tuple[tuple[str, str], ...]
        json_form: bool
        heredocs: tuple[Heredoc, ...]


DEFAULT_SHELL = ("/bin/sh", "-c")
PROXY_ARGS = frozenset(
    {"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
     "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"}
)  # fmt: skip
# instructions whose words the builder expands with ARG/ENV values (BuildKit's Expand methods);
# RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK and ONBUILD are left to the shell or a later build
EXPANDS = frozenset(
    {"ADD", "ARG", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}
)
INSTRUCTIONS = frozenset(
    {"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
     "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}
)  # fmt: skip
MOUNT_TYPES = frozenset({"bind", "cache", "tmpfs", "secret", "ssh"})
NETWORK_MODES = frozenset({"default", "none", "host"})
SECURITY_MODES = frozenset({"sandbox", "insecure"})

# flags each instruction accepts: "s" string, "b" boolean, "m" string that may repeat
_FLAGS: dict[str, dict[str, str]] = {
    "FROM": {"platform": "s"},
    "RUN": {"mount": "m", "network": "s", "security": "s"},
    "COPY": {"from": "s", "chown": "s", "chmod": "s", "link": "b", "parents": "b", "exclude": "m"},
    "ADD": {"chown": "s", "chmod": "s", "link": "b", "keep-git-dir": "b", "checksum": "s", "exclude": "m",
            "unpack": "b"},
    "HEALTHCHECK": {"interval": "s", "timeout": "s", "start-period": "s", "start-interval": "s",
                    "retries": "s"},
}  # fmt: skip
_HEREDOC_KINDS = frozenset({"ADD", "COPY", "RUN"})
_DIRECTIVES = ("syntax", "escape", "check")
# unicode.IsSpace (Go), which the parser uses; Python's str.isspace also takes \x1c-\x1f
_SPACE = " \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_HSPACE = "\t\v\f\r "  # the parser's reWhitespace, [\t\v\f\r ]+
_RE_SPACE = " \t\n\f\r"  # \s in Go's RE2
_STAGE_FIRST = "abcdefghijklmnopqrstuvwxyz"
_STAGE_REST = frozenset(_STAGE_FIRST + "0123456789-_.")
_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
          "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}  # fmt: skip
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


# --- the model ---------------------------------------------------------------------------------------


class Heredoc(Record):
    """One here-document: `<<NAME` (fd, chomp `<<-`, expand unless the name is quoted)."""

    name: str
    content: str = ""  # the lines as written, with their newlines; see `body`
    chomp: bool = False
    expand: bool = True
    fd: int = 0

    @property
    def body(self) -> str:
        """The content as used: with `<<-`, leading tabs removed from every line."""
        if not self.chomp:
            return self.content
        return "\n".join(line.lstrip("\t") for line in self.content.split("\n"))


class Arg(Record):
    """One ARG name with its default (None when declared without `=`)."""

    name: str
    default: str | None = None
    line: int = 0


class Health(Record):
    """A HEALTHCHECK as the image config holds it; durations in seconds, 0 meaning "inherit"."""

    test: tuple[str, ...]  # ("NONE",), ("CMD", arg, ...) or ("CMD-SHELL", command)
    interval: float = 0.0
    timeout: float = 0.0
    start_period: float = 0.0
    start_interval: float = 0.0
    retries: int = 0


class Instruction(Record):
    """One instruction; words are raw (quotes and $variables kept) until the builder expands them.

    `args` is Docker's argument list: the JSON array in exec form, else the rest of the line as
    one string (RUN, CMD, ENTRYPOINT, SHELL, USER, WORKDIR, STOPSIGNAL, MAINTAINER), its
    whitespace-separated words (COPY, ADD, VOLUME, EXPOSE, FROM), the quoted words (ARG) or
    key, value, key, value ... (ENV, LABEL; see PairsInstruction.pairs).
    """

    kind: str  # upper case: "RUN"
    line: int  # first line, 1-based
    end_line: int = 0  # last line, including continuations and heredoc bodies
    original: str = ""  # the instruction with continuations joined
    args: tuple[str, ...] = ()
    flags: tuple[tuple[str, str], ...] = ()  # (name, value) in order; booleans are "true"/"false"
    json_form: bool = False
    heredocs: tuple[Heredoc, ...] = ()

    def flag(self, name: str, default: str | None = None) -> str | None:
        """The last value given for --name, or `default`."""
        value = default
        for key, v in self.flags:
            if key == name:
                value = v
        return value

    def flag_values(self, name: str) -> list[str]:
        """Every value given for a repeatable flag (--mount, --exclude), in order."""
        return [v for key, v in self.flags if key == name]


class RunInstruction(Instruction):
    """RUN: `args` is the command (exec form) or the shell line; mounts are raw --mount specs."""

    mounts: tuple[str, ...] = ()  # parse each with parse_mount(spec, env) when running
    network: str = "default"
    security: str = "sandbox"


class CopyInstruction(Instruction):
    """COPY and ADD: sources, inline (heredoc) sources and the destination, unexpanded."""

    sources: tuple[str, ...] = ()
    inline: tuple[Heredoc, ...] = ()  # `COPY <<EOF /dest`: files made from heredocs
    dest: str = ""
    copy_from: str = ""  # COPY --from: a stage name or index, or an image
    chown: str = ""
    chmod: str = ""
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    checksum: str = ""  # ADD only
    keep_git_dir: bool = False  # ADD only
    unpack: bool | None = None  # ADD only; None when not given


class PairsInstruction(Instruction):
    """ENV and LABEL: (key, value) pairs as written; expand each word with `expand`."""

    pairs: tuple[tuple[str, str], ...] = ()
    legacy: bool = False  # the old `ENV key value with spaces` form


class ArgInstruction(Instruction):
    """ARG name[=default] ... (several per line)."""

    declared: tuple[Arg, ...] = ()


class HealthcheckInstruction(Instruction):
    """HEALTHCHECK NONE, or HEALTHCHECK [options] CMD ..."""

    health: Health = Health(("NONE",))


class OnbuildInstruction(Instruction):
    """ONBUILD: the trigger, parsed, and its text as stored in the image config."""

    trigger: Instruction | None = None
    expression: str = ""


class Stage(Record):
    """One FROM and the instructions up to the next FROM."""

    index: int
    name: str  # the AS name, lower-cased; "" when unnamed
    base: str  # the image or earlier stage, as written (may hold global $ARGs)
    platform: str = ""  # FROM --platform, as written
    instructions: tuple[Instruction, ...] = ()
    line: int = 0
    original: str = ""


class Dockerfile(Record):
    """A parsed Dockerfile: parser directives, global (meta) ARGs and the stages."""

    directives: dict[str, str]  # "syntax", "escape", "check" when given
    meta_args: tuple[Arg, ...]
    stages: tuple[Stage, ...]
    escape: str = "\\"
    filename: str = "Dockerfile"
    warnings: tuple[str, ...] = ()


# --- word expansion (BuildKit's shell/lex.go) ----------------------------------------------------------


def expand(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """`word` with quotes removed and $VAR, ${VAR}, ${VAR:-x} ... substituted (ProcessWord)."""
    return _Lexer(word, env, escape).run()[0]


def expand_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """`text` expanded and split on unquoted whitespace (ProcessWords)."""
    return _Lexer(text, env, escape).run()[1]


class _LexError(Exception):
    pass


class _Words:
    """Splits the expansion into words the way lex.go's wordsStruct does."""

    __slots__ = ("buf", "in_word", "size", "words")

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.size = 0  # characters in buf (an empty quoted string starts a word of none)
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch in _SPACE:
            if self.in_word and self.size:
                self._flush()
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.buf.append(text)
        self.size += len(text)
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def _flush(self) -> None:
        self.words.append("".join(self.buf))
        self.buf = []
        self.size = 0

    def result(self) -> list[str]:
        if self.size:
            self._flush()
        return self.words


class _Lexer:
    """One pass over a word: quotes, escapes and $ expansions, as BuildKit's shellWord."""

    __slots__ = ("env", "esc", "n", "pos", "raw_escapes", "raw_quotes", "skip_unset", "src")

    def __init__(
        self, src: str, env: Mapping[str, str], escape: str = "\\", *, raw_quotes: bool = False,
        raw_escapes: bool = False, skip_unset: bool = False,
    ) -> None:  # fmt: skip
        self.src = src
        self.n = len(src)
        self.pos = 0
        self.env = env
        self.esc = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset

    def run(self) -> tuple[str, list[str]]:
        try:
            return self._until("", self.raw_escapes)
        except _LexError as exc:
            raise InvalidArgument(f"failed to process {_quote(self.src)}: {exc}") from None

    def _peek(self) -> str:
        return self.src[self.pos] if self.pos < self.n else ""

    def _next(self) -> str:
        if self.pos >= self.n:
            return ""
        self.pos += 1
        return self.src[self.pos - 1]

    def _until(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """Reads up to `stop` (consumed) or the end: the text and its words."""
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            out: list[str] = []
            words = _Words()
            while self.pos < self.n:
                ch = self.src[self.pos]
                if stop and ch == stop:
                    self.pos += 1
                    return "".join(out), words.result()
                if ch == "$":
                    value = self._dollar()
                    out.append(value)
                    words.add_string(value)
                elif ch == "'":
                    value = self._single_quote()
                    out.append(value)
                    words.add_raw(value)
                elif ch == '"':
                    value = self._double_quote()
                    out.append(value)
                    words.add_raw(value)
                else:
                    self.pos += 1
                    if ch == self.esc:
                        if self.raw_escapes:
                            words.add_raw(ch)
                            out.append(ch)
                        ch = self._next()
                        if not ch:
                            break
                        words.add_raw(ch)
                    else:
                        words.add_char(ch)
                    out.append(ch)
            if stop:
                raise _LexError(f"unexpected end of statement while looking for matching {stop}")
            return "".join(out), words.result()
        finally:
            self.raw_escapes = saved

    def _single_quote(self) -> str:
        start = self.pos + 1
        end = self.src.find("'", start)
        if end < 0:
            raise _LexError("unexpected end of statement while looking for matching single-quote")
        self.pos = end + 1
        return self.src[start - 1 : end + 1] if self.raw_quotes else self.src[start:end]

    def _double_quote(self) -> str:
        out: list[str] = []
        self.pos += 1
        if self.raw_quotes:
            out.append('"')
        while True:
            ch = self._peek()
            if not ch:
                raise _LexError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.pos += 1
                if self.raw_quotes:
                    out.append('"')
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            self.pos += 1
            if ch == self.esc:
                if self.raw_escapes:
                    out.append(ch)
                following = self._peek()
                if not following:
                    continue  # a trailing escape is dropped; the missing quote is reported next
                if following in ('"', "$", self.esc):
                    ch = self._next()
            out.append(ch)

    def _name(self) -> str:
        start = self.pos
        ch = self._peek()
        if ch and ch.isdecimal():
            while self._peek() and self._peek().isdecimal():
                self.pos += 1
            return self.src[start : self.pos]
        if ch and ch in "@*#?-$!0":  # special parameters ($0 is taken as a number above)
            self.pos += 1
            return ch
        while (ch := self._peek()) and (ch.isalpha() or ch.isdecimal() or ch == "_"):
            self.pos += 1
        return self.src[start : self.pos]

    def _lookup(self, name: str) -> str | None:
        return self.env.get(name)

    def _dollar(self) -> str:
        self.pos += 1  # the $
        if self._peek() != "{":
            name = self._name()
            if not name:
                return "$"
            value = self._lookup(name)
            if value is None:
                return "$" + name if self.skip_unset else ""
            return value
        self.pos += 1  # the {
        ch = self._peek()
        if not ch:
            raise _LexError("syntax error: missing '}'")
        if ch in "{}:":
            raise _LexError("syntax error: bad substitution")
        name = self._name()
        ch = self._next()
        if not ch:
            raise _LexError("syntax error: missing '}'")
        if ch == "}":
            value = self._lookup(name)
            if value is None:
                return "${" + name + "}" if self.skip_unset else ""
            return value
        if ch == "/":
            return self._replace(name)
        modifier = ch
        null_is_unset = ch == ":"
        if null_is_unset:
            ch = self._next()
            if not ch:
                raise _LexError("syntax error: missing '}'")
            modifier += ch
        if not null_is_unset and ch not in "+-?#%":
            raise _LexError(f"unsupported modifier ({modifier}) in substitution")
        pattern = ch in "#%"
        if null_is_unset and pattern:
            raise _LexError(f"unsupported modifier ({modifier}) in substitution")
        word = self._word_until_brace(pattern)
        value = self._lookup(name)
        if value is None and self.skip_unset:
            return "${" + name + modifier + word + "}"
        if ch == "-":
            return word if value is None or (null_is_unset and not value) else value
        if ch == "+":
            return "" if value is None or (null_is_unset and not value) else word
        if ch == "?":
            if value is None:
                raise _LexError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and not value:
                raise _LexError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if ch in "#%":
            greedy = word.startswith(ch)
            if greedy:
                word = word[1:]
            value = value or ""
            if ch == "#":
                return _trim_prefix(word, value, greedy)
            return _trim_prefix(_reverse_pattern(word), value[::-1], greedy)[::-1]
        raise _LexError(f"unsupported modifier ({modifier}) in substitution")

    def _word_until_brace(self, raw_escapes: bool) -> str:
        try:
            return self._until("}", raw_escapes)[0]
        except _LexError:
            if self.pos >= self.n:
                raise _LexError("syntax error: missing '}'") from None
            raise

    def _replace(self, name: str) -> str:
        replace_all = self._peek() == "/"
        if replace_all:
            self.pos += 1
        try:
            pattern = self._until("/", True)[0]
        except _LexError:
            if self.pos >= self.n:
                raise _LexError("syntax error: missing '/' in ${}") from None
            raise
        replacement = self._word_until_brace(True)
        value = self._lookup(name)
        if value is None:
            if self.skip_unset:
                return "${" + name + "/" + pattern + "/" + replacement + "}"
            value = ""
        regex = _shell_pattern(pattern, True, False)
        if replace_all:
            return regex.sub(lambda _m: replacement, value)
        return regex.sub(lambda _m: replacement, value, count=1)


def _shell_pattern(pattern: str, greedy: bool, anchored: bool) -> Pattern[str]:
    """A ${VAR#pattern} / ${VAR/pattern/x} wildcard pattern (* and ?, \\ escapes) as a regexp."""
    import re

    out = ["^"] if anchored else []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(".*" if greedy else ".*?")
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            if i < n and pattern[i] in "}/":
                continue  # escaped only to get past ${}'s own parsing
            tok = pattern[i] if i < n else ""
            i += 1
            if not tok or tok not in "*?\\":
                raise _LexError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{tok}'")
            out.append("\\" + tok)
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    match = _shell_pattern(pattern, greedy, True).match(value)
    return value[match.end() :] if match else value


def _reverse_pattern(pattern: str) -> str:
    """The pattern reversed, escape pairs kept in order (a\\*c -> c\\*a), to trim suffixes."""
    out = [""] * len(pattern)
    last = len(pattern) - 1
    i = 0
    while i <= last:
        tok = pattern[i]
        if tok == "\\" and i != last:
            out[last - i - 1] = tok
            out[last - i] = pattern[i + 1]
            i += 2
        else:
            out[last - i] = tok
            i += 1
    return "".join(out)


def _quote(text: str) -> str:
    """Go's %q for the common cases: double quotes, backslash escapes."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return '"' + escaped + '"'


# --- pass 1: lines to nodes (BuildKit's parser package) ----------------------------------------------


class _ParseError(Exception):
    """An error without its location; the caller adds the file name and line."""


class _Node:
    """One instruction as the parser sees it, before the instruction-level checks."""

    __slots__ = ("args", "child", "cmd", "end_line", "flags", "heredocs", "json", "legacy", "line",
                 "original", "pairs")  # fmt: skip

    def __init__(self, cmd: str, original: str, flags: list[str]) -> None:
        self.cmd = cmd
        self.original = original
        self.flags = flags
        self.args: list[str] = []
        self.pairs: list[tuple[str, str]] = []
        self.legacy = False
        self.json = False
        self.child: _Node | None = None
        self.heredocs: list[Heredoc] = []
        self.line = 0
        self.end_line = 0


class _Directives:
    """Parser directives: `# name=value` lines before anything else, each name once."""

    __slots__ = ("done", "escape", "values")

    def __init__(self) -> None:
        self.done = False
        self.escape = "\\"
        self.values: dict[str, str] = {}

    def feed(self, line: str) -> None:
        if self.done:
            return
        item = _directive(line)
        if item is None or item[0] not in _DIRECTIVES:
            self.done = True
            return
        key, value = item
        if key in self.values:
            raise _ParseError(f"only one {key} parser directive can be used")
        if key == "escape" and value not in ("\\", "`"):
            raise _ParseError(f"invalid escape token '{value}' does not match ` or \\")
        self.values[key] = value
        if key == "escape":
            self.escape = value


def _directive(line: str) -> tuple[str, str] | None:
    """("name", "value") for `#name=value` (^#\\s*([a-zA-Z][a-zA-Z0-9]*)\\s*=\\s*(.+?)\\s*$)."""
    if not line.startswith("#"):
        return None
    body = line[1:].lstrip(_SPACE)
    end = 0
    while end < len(body) and body[end].isascii() and (body[end].isalpha() or (end and body[end].isdigit())):
        end += 1
    if not end:
        return None
    rest = body[end:].lstrip(_RE_SPACE)
    if not rest.startswith("="):
        return None
    value = rest[1:].strip(_RE_SPACE)
    return (body[:end].lower(), value) if value else None


def _split_lines(text: str) -> list[str]:
    """The lines with their "\\n" kept (bufio.Scanner with BuildKit's scanLines)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _continuation(line: str, escape: str) -> tuple[str, bool]:
    """(line without a trailing escape token, True when the line ends the instruction)."""
    stripped = line.rstrip(" \t")
    if stripped.endswith(escape):
        body = stripped[:-1]
        if not body or body[-1] != escape:  # an escaped escape token does not continue
            return body, False
    return line, True


def _read_nodes(text: str, filename: str) -> tuple[list[_Node], _Directives, list[str], int]:
    """Pass 1 over the whole file: nodes, directives, warnings and the number of lines."""
    directives = _Directives()
    lines = _split_lines(text)
    nodes: list[_Node] = []
    warnings: list[str] = []
    i, count = 0, len(lines)
    while i < count:
        token = lines[i].rstrip("\r\n").lstrip(_SPACE)
        i += 1
        start = i
        try:
            directives.feed(token)
        except _ParseError as exc:
            raise _located(filename, start, str(exc)) from None
        if token.startswith("#"):
            continue
        joined, done = _continuation(token, directives.escape)
        if done and not joined:
            continue
        parts = [joined]
        empty_continuation = False
        while not done and i < count:
            token = lines[i].rstrip("\r\n")
            i += 1
            if token.lstrip(_SPACE).startswith("#"):
                continue  # comment lines inside a continuation are dropped
            if not token.lstrip(_SPACE):
                empty_continuation = True
                continue
            joined, done = _continuation(token, directives.escape)
            parts.append(joined)
        line = "".join(parts)
        if empty_continuation:
            warnings.append(f"{filename}:{i}: empty continuation line found in: {line}")
        try:
            node = _new_node(line, directives.escape)
            i = _read_heredocs(node, line, lines, i)
        except _ParseError as exc:
            raise _located(filename, start, str(exc)) from None
        node.line = start
        node.end_line = i
        nodes.append(node)
    return nodes, directives, warnings, count


def _read_heredocs(node: _Node, line: str, lines: list[str], i: int) -> int:
    """Reads the bodies of the heredocs `line` opens; returns the index of the next line."""
    target = node.child if node.cmd.lower() == "onbuild" and node.child else node
    if target.cmd.upper() not in _HEREDOC_KINDS or target.json or "<<" not in line:
        return i
    for doc in _heredocs_in(line):
        body: list[str] = []
        while True:
            if i >= len(lines):
                raise _ParseError("unterminated heredoc")
            raw = lines[i]
            i += 1
            candidate = raw.rstrip("\r\n")
            if doc.chomp:
                candidate = candidate.lstrip("\t")
            if candidate == doc.name:
                break
            body.append(raw)
        node.heredocs.append(Heredoc(doc.name, "".join(body), doc.chomp, doc.expand, doc.fd))
    if target is not node:
        target.heredocs = node.heredocs
    return i


def _heredocs_in(line: str) -> list[Heredoc]:
    """The heredocs a line opens (heredocsFromLine): words like <<EOF, <<-'EOF', 3<<EOF."""
    try:
        words = _Lexer(line, {}, "\\", raw_quotes=True, raw_escapes=True, skip_unset=True).run()[1]
    except InvalidArgument:
        return []  # BuildKit ignores a line it cannot split
    docs = []
    for word in words:
        try:
            doc = parse_heredoc(word)
        except InvalidArgument as exc:
            raise _ParseError(str(exc)) from None
        if doc is not None:
            docs.append(doc)
    return docs


def parse_heredoc(word: str) -> Heredoc | None:
    """The heredoc a word opens (^(\\d*)<<(-?)([^<]*)$), or None; quoting the name stops expansion.

    The content is not known from the word alone and is left empty.
    """
    digits = 0
    while digits < len(word) and word[digits].isascii() and word[digits].isdigit():
        digits += 1
    if not word.startswith("<<", digits):
        return None
    rest = word[digits + 2 :]
    chomp = rest.startswith("-")
    if chomp:
        rest = rest[1:]
    if not rest or "<" in rest:
        return None
    words = _Lexer(rest, {}, "\\", skip_unset=True).run()[1]
    if len(words) != 1:
        return None
    raw = _Lexer(rest, {}, "\\", raw_quotes=True, skip_unset=True).run()[1]
    if len(raw) != 1:
        raise InvalidArgument(f"internal lexing of heredoc produced inconsistent results: {rest}")
    quotes = words[0].count("'") + words[0].count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return Heredoc(words[0], chomp=chomp, expand=quotes == raw_quotes, fd=int(word[:digits] or 0))


def _must_heredoc(word: str) -> Heredoc | None:
    """parse_heredoc, with a malformed heredoc word taken as a plain word (MustParseHeredoc)."""
    try:
        return parse_heredoc(word)
    except InvalidArgument:
        return None


def _new_node(line: str, escape: str) -> _Node:
    """newNodeFromLine: the command, its --flags and the arguments parsed per instruction."""
    text = line.strip(_SPACE)
    cut = next((k for k, ch in enumerate(text) if ch in _HSPACE), len(text))
    cmd, rest = text[:cut], text[cut:].lstrip(_HSPACE)
    flags: list[str] = []
    if rest:
        rest, flags = _extract_flags(rest)
        rest = rest.strip(_SPACE)
    node = _Node(cmd, line, flags)
    kind = cmd.lower()
    if kind in ("run", "cmd", "entrypoint", "shell"):
        _maybe_json(node, rest)
    elif kind in ("add", "copy", "volume"):
        if not _json_args(node, rest):
            node.args = _fields(rest)
    elif kind in ("from", "expose"):
        node.args = _fields(rest)
    elif kind in ("env", "label"):
        _name_values(node, rest, kind.upper(), escape)
    elif kind == "arg":
        node.args = _parse_words(rest, escape)
    elif kind in ("maintainer", "stopsignal", "user", "workdir"):
        node.args = [rest] if rest else []
    elif kind == "healthcheck":
        cut = next((k for k, ch in enumerate(rest) if ch in _SPACE), len(rest))
        if cut:
            command = _Node(cmd, line, [])
            _maybe_json(command, rest[cut:].lstrip(_SPACE))
            node.args = [rest[:cut], *command.args]
            node.json = command.json
    elif kind == "onbuild" and rest:
        node.child = _new_node(rest, escape)
        node.args = [node.child.cmd, *node.child.args]
    return node


def _extract_flags(line: str) -> tuple[str, list[str]]:
    """Leading `--name=value` words (quotes and \\ escapes removed) and the rest of the line."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    blank_ok = False
    phase = 0  # 0 between words, 1 in a word, 2 in quotes
    pos, n = 0, len(line)
    while True:
        ch = line[pos] if pos < n else ""
        if phase == 0:
            if pos == n:
                break
            if ch in _SPACE:
                pos += 1
                continue
            if not line.startswith("--", pos):
                return line[pos:], words
            phase = 1
        if pos == n:
            if "".join(word) != "--" and (blank_ok or word):
                words.append("".join(word))
            break
        if phase == 1:
            if ch in _SPACE:
                phase = 0
                if "".join(word) == "--":
                    return line[pos:], words
                if blank_ok or word:
                    words.append("".join(word))
                word = []
                blank_ok = False
            elif ch in "'\"":
                quote = ch
                blank_ok = True
                phase = 2
            else:
                if ch == "\\" and pos + 1 < n:
                    pos += 1
                    word.append(line[pos])
                elif ch != "\\":
                    word.append(ch)
            pos += 1
            continue
        if ch == quote:
            phase = 1
        elif ch == "\\":
            if pos + 1 == n:
                phase = 1
            else:
                pos += 1
                word.append(line[pos])
        else:
            word.append(ch)
        pos += 1
    return "", words


def _fields(rest: str) -> list[str]:
    """parseStringsWhitespaceDelimited: `rest` split on runs of [\\t\\v\\f\\r ]."""
    if not rest:
        return []
    for ch in "\t\v\f\r":
        rest = rest.replace(ch, " ")
    return [word for word in rest.split(" ") if word]


def _json_args(node: _Node, rest: str) -> bool:
    """Sets the args from a JSON array of strings; False when `rest` is not valid JSON (shell form)."""
    rest = rest.lstrip(_SPACE)
    if not rest.startswith("["):
        return False
    import json

    try:
        value = json.loads(rest, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return False
    if not isinstance(value, list):
        return False
    if not all(isinstance(item, str) for item in value):
        raise _ParseError("when using JSON array syntax, arrays must be comprised of strings only")
    node.args = value
    node.json = True
    return True


def _no_constant(name: str) -> object:
    raise ValueError(name)  # NaN and Infinity are not JSON to Go either


def _maybe_json(node: _Node, rest: str) -> None:
    """parseMaybeJSON: the JSON array, or the whole rest of the line as one shell-form argument."""
    if rest and not _json_args(node, rest):
        node.args.append(rest)


def _name_values(node: _Node, rest: str, kind: str, escape: str) -> None:
    """ENV and LABEL: `key=value ...`, or the legacy `key value with spaces`."""
    words = _parse_words(rest, escape)
    if not words:
        return
    if "=" not in words[0]:
        parts = _fields(rest)
        if len(parts) < 2:
            raise _ParseError(f"{kind} must have two arguments")
        key = parts[0]
        value = rest[len(key) :].lstrip(_HSPACE)
        node.pairs = [(key, value)]
        node.legacy = True
        return
    for word in words:
        if "=" not in word:
            raise _ParseError(
                f"Syntax error - can't find = in {_quote(word)}. Must be of the form: name=value"
            )
        key, _, value = word.partition("=")
        node.pairs.append((key, value))


def _parse_words(rest: str, escape: str) -> list[str]:
    """parseWords: split on unquoted whitespace, keeping quotes and escapes in the words."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    blank_ok = False
    phase = 0  # 0 between words, 1 in a word, 2 in quotes
    pos, n = 0, len(rest)
    while True:
        ch = rest[pos] if pos < n else ""
        if phase == 0:
            if pos == n:
                break
            if ch in _SPACE:
                pos += 1
                continue
            phase = 1
        if pos == n:
            if blank_ok or word:
                words.append("".join(word))
            break
        if phase == 1:
            if ch in _SPACE:
                phase = 0
                if blank_ok or word:
                    words.append("".join(word))
                word = []
                blank_ok = False
                pos += 1
                continue
            if ch in "'\"":
                quote = ch
                blank_ok = True
                phase = 2
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue  # an escape token at the very end is dropped
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
            pos += 1
            continue
        if ch == quote:
            phase = 1
        if ch == escape and quote != "'":
            if pos + 1 == n:
                phase = 1
                pos += 1
                continue
            pos += 1
            word.append(ch)
            ch = rest[pos]
        word.append(ch)
        pos += 1
    return words


# --- pass 2: nodes to instructions (BuildKit's instructions package) ---------------------------------


def _located(filename: str, line: int, message: str) -> InvalidArgument:
    return InvalidArgument(f"{filename}:{line}: {message}")


def _parse_flags(kind: str, raw: list[str]) -> tuple[tuple[str, str], ...]:
    """BFlags.Parse: every flag known to `kind`, string flags with a value, booleans true/false."""
    spec = _FLAGS.get(kind, {})
    seen: set[str] = set()
    parsed: list[tuple[str, str]] = []
    for item in raw:
        if not item.startswith("--"):
            raise _ParseError(f"arg should start with -- : {item}")
        name, eq, value = item[2:].partition("=")
        ftype = spec.get(name)
        if ftype is None:
            raise _ParseError(f"unknown flag: {name}")
        if name in seen and ftype != "m":
            raise _ParseError(f"duplicate flag specified: {name}")
        seen.add(name)
        if ftype == "b":
            if eq and not value:
                raise _ParseError(f"missing a value on flag: {name}")
            if value.lower() not in ("", "true", "false"):
                raise _ParseError(f"expecting boolean value for flag {name}, not: {value}")
            value = value.lower() or "true"
        elif not eq:
            raise _ParseError(f"missing a value on flag: {name}")
        parsed.append((name, value))
    return tuple(parsed)


def _build(node: _Node) -> Instruction | tuple[str, str, str]:
    """The typed instruction for a node; FROM gives (base, name, platform).

    Checks run in BuildKit's order (argument counts, then flags, then the rest), so a line
    with several faults reports the one Docker reports.
    """
    kind = node.cmd.upper()
    if kind not in INSTRUCTIONS:
        raise _ParseError(f"unknown instruction: {node.cmd}")
    args = node.args
    if kind == "FROM":
        name = _stage_name(args)
        platform = next((v for k, v in _parse_flags(kind, node.flags) if k == "platform"), "")
        return args[0], name, platform
    if kind == "HEALTHCHECK":
        return _healthcheck(node)
    if kind in ("ADD", "COPY") and len(args) < 2:
        raise _ParseError(
            f"{kind} requires at least two arguments, but only one was provided. Destination could not be determined"
        )
    if kind in ("MAINTAINER", "WORKDIR", "USER", "STOPSIGNAL") and len(args) != 1:
        raise _ParseError(f"{kind} requires exactly one argument")
    if kind in ("EXPOSE", "VOLUME", "ONBUILD", "ARG") and not args:
        raise _ParseError(f"{kind} requires at least one argument")
    flags = _parse_flags(kind, node.flags)
    base = _common(node, flags)
    if kind in ("ENV", "LABEL"):
        if not node.pairs:
            raise _ParseError(f"{kind} requires at least one argument")
        if any(not key for key, _ in node.pairs):
            raise _ParseError(f"{kind} names can not be blank")
        base["args"] = tuple(word for pair in node.pairs for word in pair)
        return PairsInstruction(**base, pairs=tuple(node.pairs), legacy=node.legacy)
    if kind == "ARG":
        return ArgInstruction(**base, declared=_arg_defs(args, node.line))
    if kind in ("ADD", "COPY"):
        return _copy(kind, node, base, flags)
    if kind == "RUN":
        return _run(base, flags)
    if kind == "ONBUILD":
        return _onbuild(node, base)
    if kind == "VOLUME" and any(not arg.strip(_SPACE) for arg in args):
        raise _ParseError("VOLUME specified can not be an empty string")
    if kind == "SHELL":
        if not args:
            raise _ParseError("SHELL requires at least one argument")
        if not node.json:
            raise _ParseError("SHELL requires the arguments to be in JSON form")
    return Instruction(**base)


def _stage_name(args: list[str]) -> str:
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not name or name[0] not in _STAGE_FIRST or any(ch not in _STAGE_REST for ch in name):
            raise _ParseError(
                f"invalid name for build stage: {_quote(args[2])}, name can't start with a number or contain symbols"
            )
        return name
    if len(args) != 1:
        raise _ParseError("FROM requires either one or three arguments")
    return ""


def _arg_defs(args: list[str], line: int) -> tuple[Arg, ...]:
    declared = []
    for word in args:
        name, eq, value = word.partition("=")
        if not name:
            raise _ParseError("ARG names can not be blank")
        declared.append(Arg(name, value if eq else None, line))
    return tuple(declared)


def _copy(kind: str, node: _Node, base: _Fields, flags: tuple[tuple[str, str], ...]) -> CopyInstruction:
    *sources, dest = node.args
    if _must_heredoc(dest) is not None:
        raise _ParseError(f"{kind} cannot accept a heredoc as a destination")
    bodies = {doc.name: doc for doc in node.heredocs}
    paths: list[str] = []
    inline: list[Heredoc] = []
    for src in sources:
        doc = _must_heredoc(src)
        if doc is None:
            paths.append(src)
        else:
            content = bodies[doc.name].content if doc.name in bodies else ""
            inline.append(Heredoc(doc.name, content, doc.chomp, doc.expand, doc.fd))
    values = dict(flags)
    unpack = values.get("unpack")
    return CopyInstruction(
        **base, sources=tuple(paths), inline=tuple(inline), dest=dest, copy_from=values.get("from", ""),
        chown=values.get("chown", ""), chmod=values.get("chmod", ""), link=values.get("link") == "true",
        parents=values.get("parents") == "true", excludes=tuple(v for k, v in flags if k == "exclude"),
        checksum=values.get("checksum", ""), keep_git_dir=values.get("keep-git-dir") == "true",
        unpack=None if unpack is None else unpack == "true",
    )  # fmt: skip


def _run(base: _Fields, flags: tuple[tuple[str, str], ...]) -> RunInstruction:
    values = dict(flags)
    network = values.get("network", "default")
    if network not in NETWORK_MODES:
        raise _ParseError(f"unsupported network mode {_quote(network)}")
    security = values.get("security", "sandbox")
    if security not in SECURITY_MODES:
        raise _ParseError(f"unsupported security mode {_quote(security)}")
    mounts = tuple(v for k, v in flags if k == "mount")
    for spec in mounts:
        try:
            if "$" in spec:  # checked once the variables are known, as BuildKit does
                _check_mount_source(spec)
            else:
                _mount(spec, None, "\\")
        except InvalidArgument as exc:
            raise _ParseError(str(exc)) from None
    return RunInstruction(**base, mounts=mounts, network=network, security=security)


def _common(node: _Node, flags: tuple[tuple[str, str], ...]) -> _Fields:
    """The fields every instruction has."""
    return {
        "kind": node.cmd.upper(), "line": node.line, "end_line": node.end_line, "original": node.original,
        "args": tuple(node.args), "flags": flags, "json_form": node.json, "heredocs": tuple(node.heredocs),
    }  # fmt: skip


def _healthcheck(node: _Node) -> HealthcheckInstruction:
    if not node.args:
        raise _ParseError("HEALTHCHECK requires at least one argument")
    typ = node.args[0].upper()
    args = node.args[1:]
    flags = _parse_flags("HEALTHCHECK", node.flags)
    base = _common(node, flags)
    if typ == "NONE":
        if args:
            raise _ParseError("HEALTHCHECK NONE takes no arguments")
        if flags:
            raise _ParseError("HEALTHCHECK NONE takes no options")
        return HealthcheckInstruction(**base, health=Health(("NONE",)))
    if typ != "CMD":
        raise _ParseError(f"Unknown type {_quote(typ)} in HEALTHCHECK (try CMD)")
    if not args:
        raise _ParseError("Missing command after HEALTHCHECK CMD")
    test = ("CMD", *args) if node.json else ("CMD-SHELL", *args)
    values = dict(flags)
    interval = _interval("interval", values.get("interval", ""))
    timeout = _interval("timeout", values.get("timeout", ""))
    start_period = _interval("start-period", values.get("start-period", ""))
    start_interval = _interval("start-interval", values.get("start-interval", ""))
    retries = 0
    text = values.get("retries", "")
    if text:
        digits = text[1:] if text[:1] in "+-" else text
        if not (digits.isascii() and digits.isdigit()):
            raise _ParseError(f"strconv.ParseInt: parsing {_quote(text)}: invalid syntax")
        retries = int(text)
        if not -(2**31) <= retries < 2**31:
            raise _ParseError(f"strconv.ParseInt: parsing {_quote(text)}: value out of range")
        if retries < 0:
            raise _ParseError(f"--retries cannot be negative ({retries})")
    return HealthcheckInstruction(
        **base, health=Health(test, interval, timeout, start_period, start_interval, retries)
    )


def _interval(name: str, text: str) -> float:
    if not text:
        return 0.0
    try:
        seconds = parse_duration(text)
    except InvalidArgument as exc:
        raise _ParseError(str(exc)) from None
    if seconds and seconds < 1e-3:
        raise _ParseError(f"Interval {_quote(name)} cannot be less than 1ms")
    return seconds


def _onbuild(node: _Node, base: _Fields) -> OnbuildInstruction:
    child = node.child
    if child is None:
        raise _ParseError("ONBUILD requires at least one argument")
    trigger_kind = child.cmd.upper()
    if trigger_kind == "ONBUILD":
        raise _ParseError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger_kind in ("MAINTAINER", "FROM"):
        raise _ParseError(f"{trigger_kind} isn't allowed as an ONBUILD trigger")
    child.line, child.end_line = node.line, node.end_line
    trigger = _build(child)
    if not isinstance(trigger, Instruction):  # FROM, refused above
        raise _ParseError("FROM isn't allowed as an ONBUILD trigger")
    expression = node.original.lstrip(_SPACE)[len("onbuild") :].lstrip(_SPACE)
    for doc in node.heredocs:
        expression += "\n" + doc.content + doc.name
    return OnbuildInstruction(**base, trigger=trigger, expression=expression)


def parse(text: str, filename: str = "Dockerfile") -> Dockerfile:
    """Parses a Dockerfile; errors are InvalidArgument("FILENAME:LINE: message")."""
    nodes, directives, warnings, count = _read_nodes(text, filename)
    if not nodes:
        raise _located(filename, max(count, 1), "file with no instructions")
    meta: list[Arg] = []
    heads: list[tuple[str, str, str, _Node]] = []
    bodies: list[list[Instruction]] = []
    names: set[str] = set()
    for node in nodes:
        try:
            built = _build(node)
        except _ParseError as exc:
            raise _located(filename, node.line, str(exc)) from None
        if isinstance(built, tuple):
            base, name, platform = built
            if name and name in names:
                raise _located(
                    filename, node.line, f"duplicate stage name {_quote(name)}, stage names should be unique"
                )
            names.add(name)
            heads.append((base, name, platform, node))
            bodies.append([])
        elif not heads and isinstance(built, ArgInstruction):
            meta.extend(built.declared)
        elif not heads:
            raise _located(filename, node.line, "no build stage in current context")
        else:
            bodies[-1].append(built)
    if not heads:
        raise _located(filename, nodes[-1].line, "dockerfile contains no stages to build")
    stages = tuple(
        Stage(i, name, base, platform, tuple(body), node.line, node.original.strip(_SPACE))
        for i, ((base, name, platform, node), body) in enumerate(zip(heads, bodies, strict=True))
    )
    return Dockerfile(
        dict(directives.values), tuple(meta), stages, directives.escape, filename, tuple(warnings)
    )


# --- helpers: durations and mounts ------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration ("1m30s", "500ms", "1.5h") in seconds."""
    if not text:
        raise InvalidArgument('time: invalid duration ""')
    rest = text
    sign = 1.0
    if rest[0] in "+-":
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise InvalidArgument(f"time: invalid duration {_quote(text)}")
    total = 0.0
    while rest:
        end = 0
        while end < len(rest) and ((rest[end].isascii() and rest[end].isdigit()) or rest[end] == "."):
            end += 1
        number = rest[:end]
        if not number or number == "." or number.count(".") > 1:
            raise InvalidArgument(f"time: invalid duration {_quote(text)}")
        rest = rest[end:]
        unit_end = 0
        while unit_end < len(rest) and not (rest[unit_end].isdigit() or rest[unit_end] == "."):
            unit_end += 1
        unit = rest[:unit_end]
        if not unit:
            raise InvalidArgument(f"time: missing unit in duration {_quote(text)}")
        if unit not in _UNITS:
            raise InvalidArgument(f"time: unknown unit {_quote(unit)} in duration {_quote(text)}")
        total += float(number) * _UNITS[unit]
        rest = rest[unit_end:]
    return sign * total


def parse_mount(value: str, env: Mapping[str, str] | None = None, escape: str = "\\") -> dict[str, str]:
    """RUN --mount=type=...,target=... as BuildKit reads it; values are expanded with `env` if given.

    The result always has "type" and "readonly" ("true"/"false"); other keys appear when given,
    named canonically (target, source, from, id, sharing, mode, uid, gid, size, env, required).
    """
    return _mount(value, env, escape)


def _check_mount_source(spec: str) -> None:
    """The parse-time check of a mount holding variables: `from` may not use any."""
    for item in _csv_fields(spec):
        key, eq, val = item.partition("=")
        if eq and key.lower() == "from" and "$" in val[:-1]:
            raise InvalidArgument(
                f"'{key.lower()}' doesn't support variable expansion, define alias stage instead"
            )


def _mount_source(spec: str) -> str:
    """The from= of a mount spec ("" when none or unreadable)."""
    try:
        fields = _csv_fields(spec)
    except InvalidArgument:
        return ""
    source = ""
    for item in fields:
        key, eq, val = item.partition("=")
        if eq and key.lower() == "from":
            source = val
    return source


def _mount(value: str, env: Mapping[str, str] | None, escape: str) -> dict[str, str]:
    fields = _csv_fields(value)
    mount: dict[str, str] = {"type": "bind"}
    readonly: bool | None = None
    for item in fields:
        key, eq, val = item.partition("=")
        key = key.lower()
        if not eq:
            if key in ("readonly", "ro"):
                readonly = True
            elif key in ("readwrite", "rw"):
                readonly = False
            elif key == "required":
                if mount["type"] not in ("secret", "ssh"):
                    raise InvalidArgument(f"unexpected key '{key}' for mount type '{mount['type']}'")
                mount["required"] = "true"
            else:
                raise InvalidArgument(f"invalid field '{item}' must be a key=value pair")
            continue
        if env is not None:
            val = expand(val, env, escape)
        readonly = _mount_field(mount, key, val, item, readonly)
    kind = mount["type"]
    if kind not in ("secret", "ssh", "cache"):
        for key in ("mode", "uid", "gid"):
            if key in mount:
                raise InvalidArgument(f"{key} not allowed for {_quote(kind)} type mounts")
    if readonly is None:
        readonly = kind not in ("cache", "tmpfs")
    mount["readonly"] = "true" if readonly else "false"
    if kind == "secret":
        if "from" in mount:
            raise InvalidArgument("secret mount should not have a from")
        if "sharing" in mount:
            raise InvalidArgument("secret mount should not define sharing")
        if not (mount.get("source") or mount.get("target") or mount.get("id")):
            raise InvalidArgument("invalid secret mount. one of source, target required")
        if mount.get("source") and mount.get("id"):
            raise InvalidArgument("both source and id can't be set")
    if "sharing" in mount and kind != "cache":
        raise InvalidArgument(f"invalid cache sharing set for {kind} mount")
    if kind in ("bind", "cache", "tmpfs") and not mount.get("target"):
        raise InvalidArgument(f"mount target is required for {kind} mounts")
    return mount


def _mount_field(mount: dict[str, str], key: str, val: str, item: str, readonly: bool | None) -> bool | None:
    """Stores one key=value of a mount spec; returns the read-only setting so far."""
    if key == "type":
        if val.lower() not in MOUNT_TYPES:
            raise InvalidArgument(f"unsupported mount type {_quote(val)}")
        mount["type"] = val.lower()
    elif key in ("from", "id", "env"):
        mount[key] = val
    elif key in ("source", "src"):
        mount["source"] = val
    elif key in ("target", "dst", "destination"):
        mount["target"] = val
    elif key in ("readonly", "ro", "readwrite", "rw"):
        if val not in _BOOLS:
            raise InvalidArgument(f"invalid value for {key}: {val}")
        readonly = _BOOLS[val] if key in ("readonly", "ro") else not _BOOLS[val]
    elif key == "required":
        if mount["type"] not in ("secret", "ssh"):
            raise InvalidArgument(f"unexpected key '{key}' for mount type '{mount['type']}'")
        if val not in _BOOLS:
            raise InvalidArgument(f"invalid value for {key}: {val}")
        mount["required"] = "true" if _BOOLS[val] else "false"
    elif key == "size":
        if mount["type"] != "tmpfs":
            raise InvalidArgument(f"unexpected key '{key}' for mount type '{mount['type']}'")
        mount["size"] = str(_ram_bytes(val))
    elif key == "sharing":
        if val.lower() not in ("shared", "private", "locked"):
            raise InvalidArgument(f"unsupported sharing value {_quote(val)}")
        mount["sharing"] = val.lower()
    elif key in ("mode", "uid", "gid"):
        digits = "01234567" if key == "mode" else "0123456789"
        if not val or any(ch not in digits for ch in val) or int(val, 8 if key == "mode" else 10) >= 1 << 32:
            raise InvalidArgument(f"invalid value {val} for {key}")
        mount[key] = val
    else:
        raise InvalidArgument(f"unexpected key '{key}' in '{item}'")
    return readonly


def _ram_bytes(text: str) -> int:
    """docker/go-units RAMInBytes: "64m", "1.5g", "512KiB" (binary multiples), "100" bytes."""
    import re

    match = re.fullmatch(r"(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?", text)
    if match is None or match.group(1).count(".") > 1:
        raise InvalidArgument(f"invalid size: {_quote(text)}")
    unit = (match.group(2) or "").lower()
    scale = 1024 ** ("kmgtp".index(unit) + 1) if unit else 1
    return int(float(match.group(1)) * scale)


def _csv_fields(text: str) -> list[str]:
    """One record of Go's encoding/csv: comma-separated, fields optionally in double quotes."""
    if not text:
        raise InvalidArgument("failed to parse csv mounts: EOF")
    fields: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            parts: list[str] = []
            i += 1
            while True:
                end = text.find('"', i)
                if end < 0:
                    raise InvalidArgument(
                        'failed to parse csv mounts: extraneous or missing " in quoted-field'
                    )
                parts.append(text[i:end])
                i = end + 1
                if i < n and text[i] == '"':
                    parts.append('"')
                    i += 1
                    continue
                break
            if i < n and text[i] != ",":
                raise InvalidArgument('failed to parse csv mounts: extraneous or missing " in quoted-field')
            fields.append("".join(parts))
        else:
            end = text.find(",", i)
            end = n if end < 0 else end
            if '"' in text[i:end]:
                raise InvalidArgument('failed to parse csv mounts: bare " in non-quoted-field')
            fields.append(text[i:end])
            i = end
        if i >= n:
            return fields
        i += 1  # the comma
        if i == n:
            fields.append("")
            return fields


# --- the stage graph -----------------------------------------------------------------------------------


def resolve_meta(
    dockerfile: Dockerfile, build_args: Mapping[str, str], defaults: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The global ARG values FROM lines see: each default expanded with the ones before it,
    --build-arg values winning; `defaults` (e.g. TARGETPLATFORM) are available throughout.
    An ARG declared without a value and not given stays unset."""
    env = dict(defaults or {})
    for arg in dockerfile.meta_args:
        if arg.name in build_args:
            env[arg.name] = build_args[arg.name]
        elif arg.default is not None:
            try:
                env[arg.name] = expand(arg.default, env, dockerfile.escape)
            except InvalidArgument as exc:
                raise _located(dockerfile.filename, arg.line, str(exc)) from None
    return env


def stage_index(dockerfile: Dockerfile, name_or_index: str | int) -> int:
    """The index of a stage named (case-insensitively) or numbered so."""
    found = _find_stage(dockerfile, name_or_index)
    if found is None:
        raise InvalidArgument(f"stage {_quote(str(name_or_index))} could not be found")
    return found


def _find_stage(
    dockerfile: Dockerfile, ref: str | int, before: int | None = None, numbers: bool = True
) -> int | None:
    """A stage by name (among the first `before`), or by index when `ref` is a number and
    `numbers` allows; None when `ref` names no stage (it is then an image)."""
    stages = dockerfile.stages if before is None else dockerfile.stages[:before]
    if isinstance(ref, str):
        name = ref.lower()
        for stage in stages:
            if stage.name and stage.name == name:
                return stage.index
        if not (numbers and ref.isascii() and ref.isdigit()):
            return None
        ref = int(ref)
    if not 0 <= ref < len(stages):
        raise InvalidArgument(f"invalid stage index {ref}")
    return ref


def dependencies(stage: Stage, meta: Mapping[str, str] | None = None, escape: str = "\\") -> set[str]:
    """What a stage may build on: its FROM base, COPY --from and RUN --mount from= values.

    FROM and --from are expanded with the global ARGs `meta` (see resolve_meta) when given.
    The result holds image references too ("scratch" excepted); `stage_dependencies` keeps
    only the stages.
    """
    refs = set()
    base = _expand_ref(stage.base, meta, escape)
    if base.lower() != "scratch":
        refs.add(base)
    for inst in stage.instructions:
        refs.update(_instruction_refs(inst, meta, escape))
    return refs


def _instruction_refs(inst: Instruction, meta: Mapping[str, str] | None, escape: str) -> list[str]:
    if isinstance(inst, CopyInstruction) and inst.copy_from:
        return [_expand_ref(inst.copy_from, meta, escape)]
    if isinstance(inst, RunInstruction):
        return [source for source in map(_mount_source, inst.mounts) if source]
    return []


def _expand_ref(ref: str, meta: Mapping[str, str] | None, escape: str) -> str:
    return ref if meta is None else expand(ref, meta, escape)


def stage_dependencies(dockerfile: Dockerfile, index: int, meta: Mapping[str, str] | None = None) -> set[int]:
    """The stages stage `index` builds on: an earlier stage named as FROM base, a stage named
    or numbered by COPY --from, a stage named by RUN --mount from=."""
    stage = dockerfile.stages[index]
    escape = dockerfile.escape
    found: set[int] = set()
    try:
        base = _find_stage(dockerfile, _expand_ref(stage.base, meta, escape), before=index, numbers=False)
    except InvalidArgument as exc:
        raise _located(dockerfile.filename, stage.line, str(exc)) from None
    if base is not None:
        found.add(base)
    for inst in stage.instructions:
        numbers = isinstance(inst, CopyInstruction)
        try:
            for ref in _instruction_refs(inst, meta, escape):
                target = _find_stage(dockerfile, ref, numbers=numbers)
                if target is not None:
                    found.add(target)
        except InvalidArgument as exc:
            raise _located(dockerfile.filename, inst.line, str(exc)) from None
    return found


def needed_stages(
    dockerfile: Dockerfile, target: str | None = None, build_args: Mapping[str, str] | None = None,
    defaults: Mapping[str, str] | None = None,
) -> list[int]:  # fmt: skip
    """The target stage (default: the last) and every stage it depends on, in file order."""
    if target is None:
        top = len(dockerfile.stages) - 1
    else:
        found = next((s.index for s in dockerfile.stages if s.name and s.name == target.lower()), None)
        if found is None:
            raise InvalidArgument(f"target stage {_quote(target)} could not be found")
        top = found
    meta = resolve_meta(dockerfile, build_args or {}, defaults)
    state: dict[int, bool] = {}  # False while visiting, True when done
    needed: list[int] = []

    def visit(index: int) -> None:
        if state.get(index):
            return
        if index in state:
            stage = dockerfile.stages[index]
            label = stage.name or str(stage.index)
            raise _located(dockerfile.filename, stage.line, f"circular dependency detected on stage: {label}")
        state[index] = False
        for dep in sorted(stage_dependencies(dockerfile, index, meta)):
            visit(dep)
        state[index] = True
        needed.append(index)

    visit(top)
    return sorted(needed)
