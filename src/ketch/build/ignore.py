""".dockerignore rules, as moby/patternmatcher and BuildKit's context walker apply them.

Reading (ignorefile.ReadAll): a line starting with `#` is a comment; lines are trimmed and blank
ones skipped; `!` marks an exception; each pattern is cleaned like Go's filepath.Clean and a
leading `/` dropped (patterns are relative to the context root).

Matching (PatternMatcher.MatchesOrParentMatches): the rules are tried in order and the last one
that matches the path, or one of its parent directories, wins, so excluding a directory excludes
everything below it unless a later `!` rule re-includes part of it. `*` and `?` do not cross
`/`, `**` matches any number of directories, `[...]` is a character class and `\\` escapes.
Like moby, a pattern is compared as plain text when it can be (exact, `dir/**` prefix, `**/name`
suffix) and compiled to a regular expression only otherwise; `re` is imported only then.

Walking (fsutil): an excluded directory is skipped unless some `!` rule may match below it; the
excluded parents of a re-included path are reported before it.
"""

from __future__ import annotations

import os

from ketch.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from re import Pattern

_SPACE = " \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def clean(path: str) -> str:
    """Go's path.Clean: no empty, "." or resolvable ".." elements; "." for an empty result."""
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    joined = "/".join(parts)
    if rooted:
        return "/" + joined
    return joined or "."


def read_patterns(text: str) -> list[str]:
    """The patterns of a .dockerignore file, cleaned, with `!` kept in front of exceptions."""
    if text.startswith("\ufeff"):
        text = text[1:]
    patterns = []
    for line in text.split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if line.startswith("#"):
            continue
        pattern = line.strip(_SPACE)
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip(_SPACE)
        if pattern:
            pattern = clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns


class _Rule:
    """One pattern: matched as exact text, a prefix, a suffix or a regular expression."""

    __slots__ = ("exclusion", "kind", "regex", "text")

    def __init__(self, text: str, exclusion: bool) -> None:
        self.text = text
        self.exclusion = exclusion
        self.regex: Pattern[str] | None = None
        self.kind, source = _translate(text)
        if self.kind == "regex":
            import re

            self.regex = re.compile(source)

    def matches(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regex is not None
        return self.regex.fullmatch(path) is not None


def _translate(pattern: str) -> tuple[str, str]:
    """(kind, regular expression source) for a cleaned pattern, as patternmatcher's compile().

    A syntax error (an unterminated class, a trailing `\\`, ...) is InvalidArgument, as Go's
    filepath.Match reports it.
    """
    out: list[str] = []
    kind = "exact"
    i, n, step = 0, len(pattern), 0
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1  # "**/" is treated as "**"
                if i >= n:  # trailing "**" matches everything below, as in .gitignore
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        out.append(".*")
                        kind = "regex"
                else:
                    out.append("(?:.*/)?")
                    kind = "regex"
                if step == 0:
                    kind = "suffix"
            else:
                out.append("[^/]*")
                kind = "regex"
        elif ch == "?":
            out.append("[^/]")
            kind = "regex"
        elif ch == "\\":
            if i >= n:
                raise _bad(pattern)
            out.append(_escape(pattern[i]))
            i += 1
            kind = "regex"
        elif ch == "[":
            text, i = _char_class(pattern, i)
            out.append(text)
            kind = "regex"
        else:
            out.append(_escape(ch))
        step += 1
    return kind, "".join(out)


def _char_class(pattern: str, i: int) -> tuple[str, int]:
    """A `[...]` class starting after the `[`, checked by Go's filepath.Match rules."""
    negated = pattern.startswith("^", i)
    if negated:
        i += 1
    items: list[str] = []
    while True:
        if pattern.startswith("]", i) and items:
            return "[" + ("^" if negated else "") + "".join(items) + "]", i + 1
        lo, i = _class_char(pattern, i)
        hi = lo
        if pattern.startswith("-", i):
            hi, i = _class_char(pattern, i + 1)
        if lo > hi:
            raise _bad(pattern)
        items.append(_escape(lo) if lo == hi else _escape(lo) + "-" + _escape(hi))


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """One possibly escaped character of a class (Go's getEsc)."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise _bad(pattern)
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise _bad(pattern)
    if i + 1 >= len(pattern):
        raise _bad(pattern)  # the class is never closed
    return pattern[i], i + 1


def _escape(ch: str) -> str:
    return "\\" + ch if not (ch.isalnum() or ch == "_" or ch == "/" or ord(ch) > 127) else ch


def _bad(pattern: str) -> InvalidArgument:
    return InvalidArgument(f'invalid .dockerignore pattern "{pattern}": syntax error in pattern')


def _without_trailing_glob(pattern: str) -> str:
    for suffix in ("/**", "/*"):
        if pattern.endswith(suffix):
            pattern = pattern[: -len(suffix)]
    return pattern


def _has_wildcards(pattern: str) -> bool:
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 1
        elif pattern[i] in "*?[":
            return True
        i += 1
    return False


class IgnoreRules:
    """The rules of one .dockerignore file; paths are relative to the context root, `/`-separated."""

    __slots__ = ("has_exclusions", "only_simple_exclusions", "rules")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        rules: list[_Rule] = []
        for raw in patterns:
            pattern = raw.strip(_SPACE)
            if not pattern:
                continue
            exclusion = pattern.startswith("!")
            if exclusion:
                if len(pattern) == 1:
                    raise InvalidArgument('illegal exclusion pattern: "!"')
                pattern = pattern[1:]
            rules.append(_Rule(clean(pattern), exclusion))
        self.rules = tuple(rules)
        exceptions = [rule.text for rule in rules if rule.exclusion]
        self.has_exclusions = bool(exceptions)
        # with only plain-path exceptions, an excluded directory is entered only on their way
        self.only_simple_exclusions = not any(_has_wildcards(_without_trailing_glob(p)) for p in exceptions)

    @classmethod
    def parse(cls, text: str) -> IgnoreRules:
        """The rules of a .dockerignore file's text."""
        return cls(read_patterns(text))

    @property
    def patterns(self) -> list[str]:
        """The cleaned patterns, exceptions with their `!`."""
        return [("!" if rule.exclusion else "") + rule.text for rule in self.rules]

    def excluded(self, path: str) -> bool:
        """Whether the last rule matching `path` or one of its parents excludes it."""
        path = clean(path).lstrip("/") or "."
        if path == ".":
            return False  # the context root itself is never excluded
        parents = []
        cut = path.find("/")
        while cut >= 0:
            parents.append(path[:cut])
            cut = path.find("/", cut + 1)
        matched = False
        for rule in self.rules:
            if rule.exclusion != matched:
                continue  # only an exception can undo a match, only an exclusion make one
            if rule.matches(path) or any(rule.matches(parent) for parent in parents):
                matched = not rule.exclusion
        return matched

    def may_contain_included(self, dir_path: str) -> bool:
        """Whether a walk must still enter an excluded directory: some `!` rule may match below it."""
        if not self.has_exclusions:
            return False
        if not self.only_simple_exclusions:
            return True
        prefix = clean(dir_path).lstrip("/") + "/"
        return any(
            (_without_trailing_glob(rule.text) + "/").startswith(prefix)
            for rule in self.rules
            if rule.exclusion
        )

    def walk(self, root: str) -> Iterator[str]:
        """The included paths under `root` (files, directories, symlinks, never followed), in
        lexical order, each directory before its contents; excluded parents of an included
        path come just before it."""
        yield from self._walk(root, "", [])

    def _walk(self, directory: str, rel_dir: str, pending: list[str]) -> Iterator[str]:
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except PermissionError:
            if pending and pending[-1] == rel_dir:
                return  # an unreadable directory that is excluded anyway
            raise
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if self.excluded(rel):
                if is_dir and self.may_contain_included(rel):
                    pending.append(rel)
                    yield from self._walk(entry.path, rel, pending)
                    if pending and pending[-1] == rel:
                        pending.pop()
                continue
            if pending:
                yield from pending
                pending.clear()
            yield rel
            if is_dir:
                yield from self._walk(entry.path, rel, pending)
