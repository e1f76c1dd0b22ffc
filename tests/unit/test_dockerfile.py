"""Unit tests for ketch.build.dockerfile: the Dockerfile parser, word expansion and the stage graph.

Expected values follow BuildKit's frontend (parser/parser_test.go, parser_heredoc_test.go,
instructions/parse_test.go, shell/lex_test.go with its envVarTest and wordsTest tables).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ketch.build.dockerfile import (
    DEFAULT_SHELL,
    EXPANDS,
    PROXY_ARGS,
    Arg,
    ArgInstruction,
    CopyInstruction,
    Dockerfile,
    Health,
    HealthcheckInstruction,
    Heredoc,
    Instruction,
    OnbuildInstruction,
    PairsInstruction,
    RunInstruction,
    dependencies,
    expand,
    expand_words,
    needed_stages,
    parse,
    parse_duration,
    parse_heredoc,
    parse_mount,
    resolve_meta,
    stage_dependencies,
    stage_index,
)
from ketch.errors import InvalidArgument

CORPUS = Path(__file__).parent / "dockerfiles"


def only(text: str) -> Instruction:
    """The single instruction after `FROM x` in a one-stage Dockerfile."""
    df = parse("FROM x\n" + text)
    assert len(df.stages) == 1
    (inst,) = df.stages[0].instructions
    return inst


def error(text: str, filename: str = "Dockerfile") -> str:
    with pytest.raises(InvalidArgument) as info:
        parse(text, filename)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- constants --------------------------------------------------------------------------------------


def test_constants() -> None:
    assert DEFAULT_SHELL == ("/bin/sh", "-c")
    assert {"HTTP_PROXY", "https_proxy", "NO_PROXY", "all_proxy"} <= PROXY_ARGS
    assert len(PROXY_ARGS) == 10
    assert {
        "ADD",
        "COPY",
        "ENV",
        "EXPOSE",
        "FROM",
        "LABEL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    } <= EXPANDS
    assert "ARG" in EXPANDS
    assert not {"RUN", "CMD", "ENTRYPOINT", "SHELL", "HEALTHCHECK", "ONBUILD", "MAINTAINER"} & EXPANDS


# --- parser directives ---------------------------------------------------------------------------------

DIRECTIVES = [
    ("# syntax=docker/dockerfile:1\nFROM x\n", {"syntax": "docker/dockerfile:1"}, "\\"),
    ("#syntax = docker/dockerfile:1.7  \nFROM x\n", {"syntax": "docker/dockerfile:1.7"}, "\\"),
    (
        "# SYNTAX=a\n# Escape=`\n# check=skip=all\nFROM x\n",
        {"syntax": "a", "escape": "`", "check": "skip=all"},
        "`",
    ),
    ("   # escape=`\nFROM x\n", {"escape": "`"}, "`"),
    ("# escape=\\\nFROM x\n", {"escape": "\\"}, "\\"),
    # anything else ends the directives: a comment, a blank line, an instruction, an unknown name
    ("# hello\n# escape=`\nFROM x\n", {}, "\\"),
    ("\n# escape=`\nFROM x\n", {}, "\\"),
    ("FROM x\n# escape=`\n", {}, "\\"),
    ("# unknown=1\n# escape=`\nFROM x\n", {}, "\\"),
    ("# escape\nFROM x\n", {}, "\\"),
    ("#escape=\nFROM x\n", {}, "\\"),
]


@pytest.mark.parametrize(("text", "directives", "escape"), DIRECTIVES)
def test_directives(text: str, directives: dict[str, str], escape: str) -> None:
    df = parse(text)
    assert df.directives == directives
    assert df.escape == escape


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# escape=`\n# escape=\\\nFROM x\n", "Dockerfile:2: only one escape parser directive can be used"),
        ("# syntax=a\n# SYNTAX=b\nFROM x\n", "Dockerfile:2: only one syntax parser directive can be used"),
        ("# escape=x\nFROM x\n", "Dockerfile:1: invalid escape token 'x' does not match ` or \\"),
    ],
)
def test_directive_errors(text: str, message: str) -> None:
    assert error(text) == message


def test_backtick_escape_continues_lines_and_backslash_is_literal() -> None:
    df = parse("# escape=`\nFROM x\nRUN echo a `\n  b\nRUN dir c:\\ \\\nWORKDIR c:\\a\n")
    run1, run2, workdir = df.stages[0].instructions
    assert run1.args == ("echo a   b",)
    assert run2.args == ("dir c:\\ \\",)  # a backslash does not continue a line any more
    assert workdir.args == ("c:\\a",)


# --- lines: comments, blank lines, continuations -----------------------------------------------------

LINES = [
    ("RUN echo a \\\n  b", ("echo a   b",)),
    ("RUN echo a\\\nb", ("echo ab",)),
    ("RUN echo a \\   \n  b", ("echo a   b",)),  # whitespace after the escape token
    ("RUN a \\\n# a comment\n  b", ("a   b",)),  # comments inside a continuation are dropped
    ("RUN a \\\n    # indented comment\n  b", ("a   b",)),
    ("RUN a \\\n\n  b", ("a   b",)),  # so are empty lines (with a warning)
    ("RUN a \\\n   \t\n  b", ("a   b",)),
    ("RUN a \\\n\\\n  b", ("a   b",)),  # a line holding only the escape token continues
    ("RUN echo \\\\", ("echo \\\\",)),  # an escaped escape token does not continue
    ("RUN echo # not a comment", ("echo # not a comment",)),
    ("RUN a \\", ("a",)),  # a continuation at the end of the file
    ("   RUN    spaced   out   ", ("spaced   out",)),
    ("RUN a \\\nb \\\nc", ("a b c",)),
]


@pytest.mark.parametrize(("text", "args"), LINES)
def test_line_continuations(text: str, args: tuple[str, ...]) -> None:
    assert only(text).args == args


def test_comments_and_blank_lines_between_instructions() -> None:
    df = parse("# c1\n\nFROM x\n   # c2\n\n\t\nRUN a\n#RUN b\n")
    (run,) = df.stages[0].instructions
    assert (run.line, run.args) == (7, ("a",))


def test_line_numbers_span_continuations() -> None:
    df = parse("FROM x\nRUN a \\\n  b \\\n  c\nENV A=1\n")
    run, env = df.stages[0].instructions
    assert (run.line, run.end_line) == (2, 4)
    assert (env.line, env.end_line) == (5, 5)
    assert run.original == "RUN a   b   c"


def test_empty_continuation_line_warns() -> None:
    df = parse("FROM x\nRUN a \\\n\n  b\n")
    assert len(df.warnings) == 1
    assert "empty continuation line" in df.warnings[0]


def test_crlf_and_bom() -> None:
    df = parse((CORPUS / "crlf.Dockerfile").read_text())
    (run,) = df.stages[0].instructions
    assert run.args == ("echo one     two",)
    df = parse("\ufeffFROM x\r\nRUN y\r\n")
    assert df.stages[0].base == "x"
    assert df.stages[0].instructions[0].args == ("y",)


@pytest.mark.parametrize("keyword", ["run", "Run", "rUN"])
def test_instructions_are_case_insensitive(keyword: str) -> None:
    df = parse(f"from alpine as Build\n{keyword} echo hi\n")
    assert df.stages[0].name == "build"
    inst = df.stages[0].instructions[0]
    assert isinstance(inst, RunInstruction)
    assert inst.kind == "RUN"


# --- flags ---------------------------------------------------------------------------------------------

FLAGS = [
    ("COPY --from=build --chown=1:2 --chmod=0644 a b", (("from", "build"), ("chown", "1:2"), ("chmod", "0644"))),
    ("COPY --link a b", (("link", "true"),)),
    ("COPY --link=false --parents=TRUE a b", (("link", "false"), ("parents", "true"))),
    ("COPY --exclude=*.md --exclude=*.txt a b", (("exclude", "*.md"), ("exclude", "*.txt"))),
    ('COPY --chown="a b" a b', (("chown", "a b"),)),
    ("COPY --chown='x:y' a b", (("chown", "x:y"),)),
    ("COPY --chown=a\\ b a b", (("chown", "a b"),)),
    ("ADD --checksum=sha256:00 --keep-git-dir --unpack=false a b", (("checksum", "sha256:00"),
                                                                   ("keep-git-dir", "true"), ("unpack", "false"))),
    ("RUN --mount=type=cache,target=/a --mount=type=tmpfs,target=/t true",
     (("mount", "type=cache,target=/a"), ("mount", "type=tmpfs,target=/t"))),
    ("RUN --network=none --security=insecure true", (("network", "none"), ("security", "insecure"))),
    ('RUN --mount="type=bind,target=/a b" true', (("mount", "type=bind,target=/a b"),)),
    ("RUN --network=host -- --not-a-flag", (("network", "host"),)),
    ("HEALTHCHECK --interval=5s --timeout=1s --start-period=2s --start-interval=1s --retries=2 CMD x",
     (("interval", "5s"), ("timeout", "1s"), ("start-period", "2s"), ("start-interval", "1s"), ("retries", "2"))),
]  # fmt: skip


@pytest.mark.parametrize(("text", "flags"), FLAGS)
def test_flags(text: str, flags: tuple[tuple[str, str], ...]) -> None:
    inst = only(text)
    assert inst.flags == flags
    for name, value in flags:
        assert inst.flag(name) is not None
        assert value in inst.flag_values(name)
    assert inst.flag("nope") is None
    assert inst.flag("nope", "d") == "d"


def test_flags_end_at_first_word_not_starting_with_dashes() -> None:
    run = only("RUN --network=none echo --mount=x")
    assert run.args == ("echo --mount=x",)
    run = only("RUN --network=host -- --not-a-flag")
    assert run.args == ("--not-a-flag",)


def test_from_platform_flag() -> None:
    df = parse("FROM --platform=$BUILDPLATFORM golang AS b\n")
    assert df.stages[0].platform == "$BUILDPLATFORM"
    assert df.stages[0].base == "golang"


FLAG_ERRORS = [
    ("COPY --checksum=x a b", "unknown flag: checksum"),
    ("ADD --from=x a b", "unknown flag: from"),
    ("ADD --parents a b", "unknown flag: parents"),
    ("RUN --link true", "unknown flag: link"),
    ("WORKDIR --x=1 /a", "unknown flag: x"),
    ("ENV --x=1 A=1", "unknown flag: x"),
    ("STOPSIGNAL --x=1 SIGTERM", "unknown flag: x"),
    ("HEALTHCHECK --interval=1s NONE", "HEALTHCHECK NONE takes no options"),
    ("COPY --from=a --from=b x y", "duplicate flag specified: from"),
    ("COPY --link --link x y", "duplicate flag specified: link"),
    ("COPY --link=maybe a b", "expecting boolean value for flag link, not: maybe"),
    ("COPY --link= a b", "missing a value on flag: link"),
    ("COPY --from a b c", "missing a value on flag: from"),
    ("RUN --network=bridge true", 'unsupported network mode "bridge"'),
    ("RUN --security=privileged true", 'unsupported security mode "privileged"'),
]


@pytest.mark.parametrize(("text", "message"), FLAG_ERRORS)
def test_flag_errors(text: str, message: str) -> None:
    assert error("FROM x\n" + text) == f"Dockerfile:2: {message}"


def test_from_flag_errors() -> None:
    assert error("FROM --plat=x alpine") == "Dockerfile:1: unknown flag: plat"


# --- exec (JSON) form versus shell form ------------------------------------------------------------------

FORMS = [
    ('CMD ["a", "b c"]', ("a", "b c"), True),
    ("CMD [foo", ("[foo",), False),
    ('CMD ["a" "b"]', ('["a" "b"]',), False),
    ('CMD ["a"] trailing', ('["a"] trailing',), False),
    ("CMD ['a']", ("['a']",), False),
    ('CMD {"a": 1}', ('{"a": 1}',), False),
    ("CMD []", (), True),
    ("CMD", (), False),
    ('CMD  [ "spaced" ]  ', ("spaced",), True),
    ('CMD ["\\u00e9\\n"]', ("\u00e9\n",), True),
    ('CMD ["a\\\\b"]', ("a\\b",), True),
    ('RUN ["/bin/sh", "-c", "echo $HOME"]', ("/bin/sh", "-c", "echo $HOME"), True),
    ("RUN echo $HOME && ls", ("echo $HOME && ls",), False),
    ('ENTRYPOINT ["/app", "--flag"]', ("/app", "--flag"), True),
    ("ENTRYPOINT /app --flag", ("/app --flag",), False),
    ('SHELL ["powershell", "-Command"]', ("powershell", "-Command"), True),
    ('COPY ["a b", "c d", "/dest/"]', ("a b", "c d", "/dest/"), True),
    ("COPY a b /dest/", ("a", "b", "/dest/"), False),
    ("COPY [a /dest/", ("[a", "/dest/"), False),
    ('VOLUME ["/data", "/logs"]', ("/data", "/logs"), True),
    ("VOLUME /data /logs", ("/data", "/logs"), False),
    ('ADD ["http://x/y", "/z"]', ("http://x/y", "/z"), True),
    ("CMD [NaN]", ("[NaN]",), False),
]


@pytest.mark.parametrize(("text", "args", "json_form"), FORMS)
def test_exec_and_shell_forms(text: str, args: tuple[str, ...], json_form: bool) -> None:
    inst = only(text)
    assert inst.args == args
    assert inst.json_form is json_form


def test_copy_sources_and_dest() -> None:
    copy = only('COPY ["a b", "c", "/dest dir/"]')
    assert isinstance(copy, CopyInstruction)
    assert copy.sources == ("a b", "c")
    assert copy.dest == "/dest dir/"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('CMD ["a", 1]', "when using JSON array syntax, arrays must be comprised of strings only"),
        ('RUN ["a", null]', "when using JSON array syntax, arrays must be comprised of strings only"),
        ('COPY ["a", ["b"]]', "when using JSON array syntax, arrays must be comprised of strings only"),
        ("SHELL /bin/sh -c", "SHELL requires the arguments to be in JSON form"),
        ("SHELL []", "SHELL requires at least one argument"),
        ("SHELL", "SHELL requires at least one argument"),
    ],
)
def test_form_errors(text: str, message: str) -> None:
    assert error("FROM x\n" + text) == f"Dockerfile:2: {message}"


# --- ENV and LABEL ---------------------------------------------------------------------------------------

PAIRS = [
    # (instruction, raw pairs, pairs expanded with {"HOME": "/root"})
    ("ENV A=1", (("A", "1"),), [("A", "1")]),
    ("ENV A=1 B=2", (("A", "1"), ("B", "2")), [("A", "1"), ("B", "2")]),
    ('ENV A="hello world"', (("A", '"hello world"'),), [("A", "hello world")]),
    ("ENV A='$HOME' B=\"$HOME\" C=$HOME", (("A", "'$HOME'"), ("B", '"$HOME"'), ("C", "$HOME")),
     [("A", "$HOME"), ("B", "/root"), ("C", "/root")]),
    ("ENV A=a\\ b", (("A", "a\\ b"),), [("A", "a b")]),
    ('ENV A="a \\"q\\" b"', (("A", '"a \\"q\\" b"'),), [("A", 'a "q" b')]),
    ("ENV A=\\$HOME", (("A", "\\$HOME"),), [("A", "$HOME")]),
    ("ENV A=", (("A", ""),), [("A", "")]),
    ('ENV A=""', (("A", '""'),), [("A", "")]),
    ("ENV A=x=y", (("A", "x=y"),), [("A", "x=y")]),
    ("ENV A=${MISSING:-default}", (("A", "${MISSING:-default}"),), [("A", "default")]),
    ("ENV A=1 \\\n    B=2", (("A", "1"), ("B", "2")), [("A", "1"), ("B", "2")]),
    ("ENV KEY value with spaces", (("KEY", "value with spaces"),), [("KEY", "value with spaces")]),
    ('ENV KEY "quoted value"', (("KEY", '"quoted value"'),), [("KEY", "quoted value")]),
    ("ENV KEY\t$HOME/x", (("KEY", "$HOME/x"),), [("KEY", "/root/x")]),
    ('LABEL "com.example.vendor"="ACME Inc" version=1.0',
     (('"com.example.vendor"', '"ACME Inc"'), ("version", "1.0")),
     [("com.example.vendor", "ACME Inc"), ("version", "1.0")]),
    ('LABEL multi.label="a" \\\n      other="b c"', (("multi.label", '"a"'), ("other", '"b c"')),
     [("multi.label", "a"), ("other", "b c")]),
    ("LABEL description This is legacy", (("description", "This is legacy"),), [("description", "This is legacy")]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "raw", "expanded"), PAIRS)
def test_env_and_label_pairs(
    text: str, raw: tuple[tuple[str, str], ...], expanded: list[tuple[str, str]]
) -> None:
    inst = only(text)
    assert isinstance(inst, PairsInstruction)
    assert inst.pairs == raw
    assert inst.legacy is (text.split()[1].find("=") < 0)
    assert inst.args == tuple(word for pair in raw for word in pair)
    env = {"HOME": "/root"}
    assert [(expand(k, env), expand(v, env)) for k, v in inst.pairs] == expanded


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ENV", "ENV requires at least one argument"),
        ("ENV KEY", "ENV must have two arguments"),
        ("LABEL KEY", "LABEL must have two arguments"),
        ("ENV A=1 B", 'Syntax error - can\'t find = in "B". Must be of the form: name=value'),
        ("LABEL a=1 b c=2", 'Syntax error - can\'t find = in "b". Must be of the form: name=value'),
        ("ENV =x", "ENV names can not be blank"),
        ("LABEL", "LABEL requires at least one argument"),
    ],
)
def test_env_and_label_errors(text: str, message: str) -> None:
    assert error("FROM x\n" + text) == f"Dockerfile:2: {message}"


# --- ARG ---------------------------------------------------------------------------------------------------


def test_args_before_from_are_global() -> None:
    df = parse('ARG A=1 B\nARG C="x y"\nFROM img\nARG D=$A E\n')
    assert df.meta_args == (Arg("A", "1", 1), Arg("B", None, 1), Arg("C", '"x y"', 2))
    (arg,) = df.stages[0].instructions
    assert isinstance(arg, ArgInstruction)
    assert arg.declared == (Arg("D", "$A", 4), Arg("E", None, 4))
    assert arg.args == ("D=$A", "E")


@pytest.mark.parametrize(
    ("text", "message"),
    [("ARG", "ARG requires at least one argument"), ("ARG =x", "ARG names can not be blank")],
)
def test_arg_errors(text: str, message: str) -> None:
    assert error("FROM x\n" + text) == f"Dockerfile:2: {message}"
    assert error(text + "\nFROM x") == f"Dockerfile:1: {message}"


# --- heredocs -------------------------------------------------------------------------------------------

HEREDOCS = [
    ("RUN <<EMPTY\nEMPTY", [Heredoc("EMPTY", "")]),
    ("RUN 3<<EMPTY2\nEMPTY2", [Heredoc("EMPTY2", "", fd=3)]),
    ('RUN "<<NOHEREDOC"', []),
    ("RUN '<<NOHEREDOC'", []),
    ("RUN <<INDENT\n\tfoo\n\tbar\nINDENT", [Heredoc("INDENT", "\tfoo\n\tbar\n")]),
    ("RUN <<-UNINDENT\n\tbaz\n\tquux\nUNINDENT", [Heredoc("UNINDENT", "\tbaz\n\tquux\n", chomp=True)]),
    ("RUN <<-UNINDENT2\n\tbaz\n\tquux\n\tUNINDENT2", [Heredoc("UNINDENT2", "\tbaz\n\tquux\n", chomp=True)]),
    ("RUN <<-EXPAND\n\texpand $NAME\nEXPAND", [Heredoc("EXPAND", "\texpand $NAME\n", chomp=True)]),
    ("RUN <<-'NOEXPAND'\n\tdon't expand $NAME\nNOEXPAND",
     [Heredoc("NOEXPAND", "\tdon't expand $NAME\n", chomp=True, expand=False)]),
    ('RUN <<"DQ"\n$X\nDQ', [Heredoc("DQ", "$X\n", expand=False)]),
    ("RUN <<E'O'F\nx\nEOF", [Heredoc("EOF", "x\n", expand=False)]),
    ("RUN <<COMMENT\n# internal comment\necho foo bar # trailing comment\nCOMMENT",
     [Heredoc("COMMENT", "# internal comment\necho foo bar # trailing comment\n")]),
    ("RUN --mount=type=cache,target=/foo <<MOUNT\necho hello\nMOUNT", [Heredoc("MOUNT", "echo hello\n")]),
    ("RUN <<A <<B\na\nA\nb\nB", [Heredoc("A", "a\n"), Heredoc("B", "b\n")]),
    ("RUN cat <<A > /a && cat <<B > /b\na\nA\nb\nB", [Heredoc("A", "a\n"), Heredoc("B", "b\n")]),
    ("COPY <<FILE1 <<FILE2 /dest\ncontent 1\nFILE1\ncontent 2\nFILE2",
     [Heredoc("FILE1", "content 1\n"), Heredoc("FILE2", "content 2\n")]),
    ("COPY <<X <<Y /dest\nY\nX\nX\nY", [Heredoc("X", "Y\n"), Heredoc("Y", "X\n")]),
    ("ADD <<EOF /dest\n  keep   spacing  \n\nEOF", [Heredoc("EOF", "  keep   spacing  \n\n")]),
    ("RUN <<EOF\nline \\\nEOF", [Heredoc("EOF", "line \\\n")]),  # no continuations inside
    ('RUN ["<<EOF"]', []),  # not in exec form
    ("RUN cat<<EOF", []),  # the word must start with << (or a file descriptor)
]  # fmt: skip


@pytest.mark.parametrize(("text", "heredocs"), HEREDOCS)
def test_heredocs(text: str, heredocs: list[Heredoc]) -> None:
    inst = only(text)
    assert list(inst.heredocs) == heredocs


def test_heredoc_lines_and_following_instruction() -> None:
    df = parse("FROM x\nRUN <<EOF\na\nb\nEOF\nENV A=1\n")
    run, env = df.stages[0].instructions
    assert (run.line, run.end_line) == (2, 5)
    assert env.line == 6


def test_heredoc_body_chomps_tabs_only_with_dash() -> None:
    assert Heredoc("E", "\tx\n\t\ty\n  z\n", chomp=True).body == "x\ny\n  z\n"
    assert Heredoc("E", "\tx\n", chomp=False).body == "\tx\n"


def test_heredoc_crlf_terminator() -> None:
    (run,) = parse("FROM x\r\nRUN <<EOF\r\nline\r\nEOF\r\n").stages[0].instructions
    assert run.heredocs == (Heredoc("EOF", "line\r\n"),)


def test_copy_heredoc_sources() -> None:
    copy = only('COPY --chmod=0755 <<a.sh <<-"b.sh" plain.txt /dir/\necho $A\na.sh\n\techo b\n\tb.sh')
    assert isinstance(copy, CopyInstruction)
    assert copy.sources == ("plain.txt",)
    assert copy.dest == "/dir/"
    assert copy.inline == (
        Heredoc("a.sh", "echo $A\n"),
        Heredoc("b.sh", "\techo b\n", chomp=True, expand=False),
    )
    assert copy.inline[1].body == "echo b\n"


def test_heredoc_corpus() -> None:
    df = parse((CORPUS / "heredocs.Dockerfile").read_text())
    runs = df.stages[0].instructions
    assert [i.kind for i in runs] == ["RUN", "RUN", "RUN", "COPY", "RUN"]
    assert runs[0].heredocs[0].content == "apt-get update\napt-get install -y curl\n"
    assert runs[1].args == ("<<-EOT bash",)
    assert runs[1].heredocs[0].body == 'set -eu\necho "indented with tabs"\n'
    assert runs[2].heredocs[0].expand is False
    copy = runs[3]
    assert isinstance(copy, CopyInstruction)
    assert [(d.name, d.expand) for d in copy.inline] == [("config.ini", True), ("run.sh", False)]
    assert runs[4].heredocs[0].fd == 3


@pytest.mark.parametrize("word", ["<<EOF", "<<'EOF'", '<<"EOF"', "<<-EOF", "<<-'EOF'", '<<-"EOF"'])
def test_parse_heredoc_valid(word: str) -> None:
    doc = parse_heredoc(word)
    assert doc is not None
    assert doc.name == "EOF"
    assert doc.chomp is ("-" in word)
    assert doc.expand is ("'" not in word and '"' not in word)


@pytest.mark.parametrize("word", ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "x<<EOF", "<<a b"])
def test_parse_heredoc_not_heredoc(word: str) -> None:
    assert parse_heredoc(word) is None


@pytest.mark.parametrize("word", ["<<'EOF", '<<"EOF', "<<EOF'", '<<EOF"'])
def test_parse_heredoc_invalid(word: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_heredoc(word)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM x\nRUN <<EOF\necho", "Dockerfile:2: unterminated heredoc"),
        ("FROM x\nRUN <<A <<B\na\nA\nb", "Dockerfile:2: unterminated heredoc"),
        ("FROM x\nRUN <<-EOF\n  EOF", "Dockerfile:2: unterminated heredoc"),  # only tabs are stripped
        ("FROM x\nCOPY a <<EOF\nx\nEOF", "Dockerfile:2: COPY cannot accept a heredoc as a destination"),
        # USER takes no heredoc, so its "body" is read as instructions
        ("FROM x\nUSER <<INVALID\nINVALID", "Dockerfile:3: unknown instruction: INVALID"),
    ],
)
def test_heredoc_errors(text: str, message: str) -> None:
    assert error(text) == message


# --- ONBUILD -----------------------------------------------------------------------------------------------


def test_onbuild() -> None:
    inst = only("ONBUILD RUN --mount=type=cache,target=/c make")
    assert isinstance(inst, OnbuildInstruction)
    assert inst.args == ("RUN", "make")
    assert isinstance(inst.trigger, RunInstruction)
    assert inst.trigger.mounts == ("type=cache,target=/c",)
    assert inst.expression == "RUN --mount=type=cache,target=/c make"
    copy = only("onbuild   COPY --from=base a /b")
    assert isinstance(copy, OnbuildInstruction)
    assert isinstance(copy.trigger, CopyInstruction)
    assert copy.trigger.copy_from == "base"
    assert copy.expression == "COPY --from=base a /b"


def test_onbuild_heredoc() -> None:
    inst = only("ONBUILD RUN <<EOF\necho hi\nEOF")
    assert isinstance(inst, OnbuildInstruction)
    assert inst.heredocs == (Heredoc("EOF", "echo hi\n"),)
    assert inst.trigger is not None
    assert inst.trigger.heredocs == inst.heredocs
    assert inst.expression == "RUN <<EOF\necho hi\nEOF"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ONBUILD", "ONBUILD requires at least one argument"),
        ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
        ("ONBUILD onbuild RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
        ("ONBUILD FROM alpine", "FROM isn't allowed as an ONBUILD trigger"),
        ("ONBUILD MAINTAINER me", "MAINTAINER isn't allowed as an ONBUILD trigger"),
        ("ONBUILD FOO bar", "unknown instruction: FOO"),
        ("ONBUILD COPY a", "COPY requires at least two arguments, but only one was provided. "
                           "Destination could not be determined"),
    ],
)  # fmt: skip
def test_onbuild_errors(text: str, message: str) -> None:
    assert error("FROM x\n" + text) == f"Dockerfile:2: {message}"


# --- HEALTHCHECK ---------------------------------------------------------------------------------------

HEALTHCHECKS = [
    ("HEALTHCHECK NONE", Health(("NONE",))),
    ("HEALTHCHECK none", Health(("NONE",))),
    ("HEALTHCHECK CMD curl -f http://localhost/ || exit 1", Health(("CMD-SHELL", "curl -f http://localhost/ || exit 1"))),
    ('HEALTHCHECK CMD ["curl", "-f", "http://localhost/"]', Health(("CMD", "curl", "-f", "http://localhost/"))),
    ("HEALTHCHECK cmd true", Health(("CMD-SHELL", "true"))),
    ("HEALTHCHECK --interval=30s --timeout=10s --start-period=1m --start-interval=500ms --retries=3 CMD true",
     Health(("CMD-SHELL", "true"), 30.0, 10.0, 60.0, 0.5, 3)),
    ("HEALTHCHECK --interval=1m30s CMD true", Health(("CMD-SHELL", "true"), interval=90.0)),
    ("HEALTHCHECK --interval=0s --retries=0 CMD true", Health(("CMD-SHELL", "true"))),
    ("HEALTHCHECK --timeout=1ms CMD true", Health(("CMD-SHELL", "true"), timeout=0.001)),
]  # fmt: skip


@pytest.mark.parametrize(("text", "health"), HEALTHCHECKS)
def test_healthcheck(text: str, health: Health) -> None:
    inst = only(text)
    assert isinstance(inst, HealthcheckInstruction)
    assert inst.health == health


HEALTHCHECK_ERRORS = [
    ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
    ("HEALTHCHECK NONE extra", "HEALTHCHECK NONE takes no arguments"),
    ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
    ("HEALTHCHECK CMD []", "Missing command after HEALTHCHECK CMD"),
    ("HEALTHCHECK TEST x", 'Unknown type "TEST" in HEALTHCHECK (try CMD)'),
    ("HEALTHCHECK --interval=abc CMD x", 'time: invalid duration "abc"'),
    ("HEALTHCHECK --interval=10 CMD x", 'time: missing unit in duration "10"'),
    ("HEALTHCHECK --timeout=5y CMD x", 'time: unknown unit "y" in duration "5y"'),
    ("HEALTHCHECK --interval=1us CMD x", 'Interval "interval" cannot be less than 1ms'),
    ("HEALTHCHECK --start-period=-1s CMD x", 'Interval "start-period" cannot be less than 1ms'),
    ("HEALTHCHECK --retries=x CMD x", 'strconv.ParseInt: parsing "x": invalid syntax'),
    ("HEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative (-1)"),
    ("HEALTHCHECK --retries CMD x", "missing a value on flag: retries"),
]


@pytest.mark.parametrize(("text", "message"), HEALTHCHECK_ERRORS)
def test_healthcheck_errors(text: str, message: str) -> None:
    assert error("FROM x\n" + text) == f"Dockerfile:2: {message}"


DURATIONS = [
    ("0", 0.0), ("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("1.5h", 5400.0),
    ("2h45m", 9900.0), ("-1s", -1.0), ("+2s", 2.0), (".5s", 0.5), ("1\u00b5s", 1e-6), ("10us", 1e-5),
    ("3ns", 3e-9), ("1h1m1s1ms", 3661.001),
]  # fmt: skip


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "s", ".s", "5x", "1..5s", "-", "1s2", "ms"])
def test_parse_duration_errors(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^time: "):
        parse_duration(text)


# --- other instructions -----------------------------------------------------------------------------------

SIMPLE = [
    ("MAINTAINER Jane Doe <jane@example.com>", ("Jane Doe <jane@example.com>",)),
    ("USER app:app", ("app:app",)),
    ("USER ${U}:$G", ("${U}:$G",)),
    ("WORKDIR /path with spaces", ("/path with spaces",)),
    ("STOPSIGNAL SIGKILL", ("SIGKILL",)),
    ("EXPOSE 80 443/tcp 53/udp 8000-8010", ("80", "443/tcp", "53/udp", "8000-8010")),
    ("EXPOSE $PORT", ("$PORT",)),
]


@pytest.mark.parametrize(("text", "args"), SIMPLE)
def test_simple_instructions(text: str, args: tuple[str, ...]) -> None:
    inst = only(text)
    assert type(inst) is Instruction
    assert inst.args == args


ARGUMENT_ERRORS = [
    ("MAINTAINER", "MAINTAINER requires exactly one argument"),
    ("USER", "USER requires exactly one argument"),
    ("WORKDIR", "WORKDIR requires exactly one argument"),
    ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
    ("EXPOSE", "EXPOSE requires at least one argument"),
    ("VOLUME", "VOLUME requires at least one argument"),
    ("VOLUME []", "VOLUME requires at least one argument"),
    ('VOLUME ["/a", " "]', "VOLUME specified can not be an empty string"),
    ("COPY a", "COPY requires at least two arguments, but only one was provided. Destination could not be determined"),
    ("ADD", "ADD requires at least two arguments, but only one was provided. Destination could not be determined"),
    ('COPY ["a"]', "COPY requires at least two arguments, but only one was provided. Destination could not be determined"),
    ("FORM alpine", "unknown instruction: FORM"),
    ("frm alpine", "unknown instruction: frm"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), ARGUMENT_ERRORS)
def test_argument_errors(text: str, message: str) -> None:
    assert error("FROM x\n" + text) == f"Dockerfile:2: {message}"


# --- RUN --mount -------------------------------------------------------------------------------------------

MOUNTS = [
    ("type=cache,target=/x,id=y,sharing=locked,ro",
     {"type": "cache", "target": "/x", "id": "y", "sharing": "locked", "readonly": "true"}),
    ("type=cache,target=/x", {"type": "cache", "target": "/x", "readonly": "false"}),
    ("target=/src", {"type": "bind", "target": "/src", "readonly": "true"}),
    ("type=bind,source=.,target=/src,rw", {"type": "bind", "source": ".", "target": "/src", "readonly": "false"}),
    ("type=bind,src=a,dst=/b,readonly=false", {"type": "bind", "source": "a", "target": "/b", "readonly": "false"}),
    ("type=bind,from=build,source=/out,destination=/in,readwrite=true",
     {"type": "bind", "from": "build", "source": "/out", "target": "/in", "readonly": "false"}),
    ("type=tmpfs,target=/t", {"type": "tmpfs", "target": "/t", "readonly": "false"}),
    ("type=tmpfs,target=/t,size=64m", {"type": "tmpfs", "target": "/t", "size": str(64 << 20), "readonly": "false"}),
    ("type=secret,id=token", {"type": "secret", "id": "token", "readonly": "true"}),
    ("type=secret,id=t,target=/run/t,required=true,mode=0400,uid=1,gid=2,env=TOKEN",
     {"type": "secret", "id": "t", "target": "/run/t", "required": "true", "mode": "0400", "uid": "1",
      "gid": "2", "env": "TOKEN", "readonly": "true"}),
    ("type=secret,source=a.txt,ro=0", {"type": "secret", "source": "a.txt", "readonly": "false"}),
    ("type=ssh", {"type": "ssh", "readonly": "true"}),
    ("type=ssh,id=default,required", {"type": "ssh", "id": "default", "required": "true", "readonly": "true"}),
    ("type=cache,target=/c,from=builder,source=/cache,mode=0755,uid=0",
     {"type": "cache", "target": "/c", "from": "builder", "source": "/cache", "mode": "0755", "uid": "0",
      "readonly": "false"}),
    ("TYPE=CACHE,Target=/x,SHARING=Private", {"type": "cache", "target": "/x", "sharing": "private", "readonly": "false"}),
    ('type=bind,"target=/a,b"', {"type": "bind", "target": "/a,b", "readonly": "true"}),
    ('type=bind,"target=/a""b"', {"type": "bind", "target": '/a"b', "readonly": "true"}),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "expected"), MOUNTS)
def test_parse_mount(spec: str, expected: dict[str, str]) -> None:
    assert parse_mount(spec) == expected


MOUNT_ERRORS = [
    ("", "failed to parse csv mounts: EOF"),
    ('target="/x', 'failed to parse csv mounts: bare " in non-quoted-field'),
    ('"target=/x', 'failed to parse csv mounts: extraneous or missing " in quoted-field'),
    ("type=foo,target=/x", 'unsupported mount type "foo"'),
    ("type=cache", "mount target is required for cache mounts"),
    ("type=bind,source=a", "mount target is required for bind mounts"),
    ("type=tmpfs", "mount target is required for tmpfs mounts"),
    ("target=/x,bogus=1", "unexpected key 'bogus' in 'bogus=1'"),
    ("target=/x,foo", "invalid field 'foo' must be a key=value pair"),
    ("target=/x,", "invalid field '' must be a key=value pair"),
    ("target=/x,ro=maybe", "invalid value for ro: maybe"),
    ("target=/x,sharing=locked", "invalid cache sharing set for bind mount"),
    ("type=cache,target=/x,sharing=weird", 'unsupported sharing value "weird"'),
    ("target=/x,mode=0755", 'mode not allowed for "bind" type mounts'),
    ("type=tmpfs,target=/x,uid=1", 'uid not allowed for "tmpfs" type mounts'),
    ("type=cache,target=/x,mode=9", "invalid value 9 for mode"),
    ("type=cache,target=/x,gid=-1", "invalid value -1 for gid"),
    ("type=secret", "invalid secret mount. one of source, target required"),
    ("type=secret,id=a,source=b", "both source and id can't be set"),
    ("type=secret,id=a,from=x", "secret mount should not have a from"),
    ("type=secret,id=a,sharing=shared", "secret mount should not define sharing"),
    ("required,type=secret,id=a", "unexpected key 'required' for mount type 'bind'"),
    ("target=/x,required=true", "unexpected key 'required' for mount type 'bind'"),
    ("target=/x,size=1g", "unexpected key 'size' for mount type 'bind'"),
    ("type=tmpfs,target=/x,size=lots", 'invalid size: "lots"'),
]


@pytest.mark.parametrize(("spec", "message"), MOUNT_ERRORS)
def test_parse_mount_errors(spec: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_mount(spec)
    assert str(info.value) == message


def test_parse_mount_expands_values() -> None:
    env = {"DIR": "/d", "T": "cache"}
    mount = parse_mount("type=$T,target=${DIR}/x,id=${ID:-def},source='a b'", env)
    assert mount == {"type": "cache", "target": "/d/x", "id": "def", "source": "a b", "readonly": "false"}


def test_run_mount_checked_at_parse_time() -> None:
    run = only("RUN --mount=type=cache,target=/x --mount=type=secret,id=s true")
    assert isinstance(run, RunInstruction)
    assert run.mounts == ("type=cache,target=/x", "type=secret,id=s")
    # with variables, only from= is checked now; the rest when the values are known
    run = only("RUN --mount=type=$T,target=$DIR true")
    assert isinstance(run, RunInstruction)
    assert (
        error("FROM x\nRUN --mount=type=foo,target=/x true") == 'Dockerfile:2: unsupported mount type "foo"'
    )
    assert error("FROM x\nRUN --mount=target=/x,from=$STAGE true") == (
        "Dockerfile:2: 'from' doesn't support variable expansion, define alias stage instead"
    )


# --- stages and errors -------------------------------------------------------------------------------------


def test_stages() -> None:
    df = parse("FROM a AS One\nRUN x\nFROM --platform=linux/arm64 b\nFROM one AS three\nCOPY --from=0 a b\n")
    assert [(s.index, s.name, s.base, s.platform, s.line) for s in df.stages] == [
        (0, "one", "a", "", 1),
        (1, "", "b", "linux/arm64", 3),
        (2, "three", "one", "", 4),
    ]
    assert df.stages[0].original == "FROM a AS One"
    assert [len(s.instructions) for s in df.stages] == [1, 0, 1]


@pytest.mark.parametrize("name", ["a", "build-1", "x_y", "v1.2", "ABC", "a.b-c_d"])
def test_valid_stage_names(name: str) -> None:
    assert parse(f"FROM img AS {name}").stages[0].name == name.lower()


STAGE_ERRORS = [
    ("FROM", "Dockerfile:1: FROM requires either one or three arguments"),
    ("FROM a b", "Dockerfile:1: FROM requires either one or three arguments"),
    ("FROM a AS", "Dockerfile:1: FROM requires either one or three arguments"),
    ("FROM a TO b", "Dockerfile:1: FROM requires either one or three arguments"),
    ("FROM a AS b c", "Dockerfile:1: FROM requires either one or three arguments"),
    ("FROM a AS 1x", 'Dockerfile:1: invalid name for build stage: "1x", name can\'t start with a number or contain symbols'),
    ("FROM a AS b@c", 'Dockerfile:1: invalid name for build stage: "b@c", name can\'t start with a number or contain symbols'),
    ("FROM a AS _x", 'Dockerfile:1: invalid name for build stage: "_x", name can\'t start with a number or contain symbols'),
    ("FROM a AS Foo\nRUN x\nFROM b AS foo", 'Dockerfile:3: duplicate stage name "foo", stage names should be unique'),
    ("RUN x\nFROM a", "Dockerfile:1: no build stage in current context"),
    ("ARG X\nENV A=1\nFROM a", "Dockerfile:2: no build stage in current context"),
    ("", "Dockerfile:1: file with no instructions"),
    ("# only a comment\n\n", "Dockerfile:2: file with no instructions"),
    ("ARG X", "Dockerfile:1: dockerfile contains no stages to build"),
    ("FROM a\nFORM b", "Dockerfile:2: unknown instruction: FORM"),
    ("FROM a\nRUN a \\\n  b\nENV X", "Dockerfile:4: ENV must have two arguments"),
    ("FROM a\nRUN a \\\n  b\nWORKDIR", "Dockerfile:4: WORKDIR requires exactly one argument"),
    ("FROM a\nWORKDIR \\\n\n", "Dockerfile:2: WORKDIR requires exactly one argument"),
    # errors of the line pass come before errors of the instruction pass, as in Docker
    ("FROM a\nFORM b\nENV X", "Dockerfile:3: ENV must have two arguments"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), STAGE_ERRORS)
def test_stage_and_file_errors(text: str, message: str) -> None:
    assert error(text) == message


def test_error_names_the_file() -> None:
    assert error("FROM a\nFORM b", "sub/Dockerfile.dev") == "sub/Dockerfile.dev:2: unknown instruction: FORM"


# --- word expansion: BuildKit's envVarTest (PWD=/home SHELL=bash KOREAN=한국어 NULL="") ------------------------

ENV_VARS = {"PWD": "/home", "SHELL": "bash", "KOREAN": "\ud55c\uad6d\uc5b4", "NULL": ""}
ERR = None  # the word is an error

ENV_VAR_TESTS = [
    ("hello", "hello"), ("he'll'o", "hello"), ("he'llo", ERR), ("he\\'llo", "he'llo"), ("he\\\\'llo", ERR),
    ("abc\\tdef", "abctdef"), ('"abc\\tdef"', "abc\\tdef"), ('"abc\\\\tdef"', "abc\\tdef"),
    ("'abc\\tdef'", "abc\\tdef"), ("hello\\", "hello"), ("hello\\\\", "hello\\"), ('"hello', ERR),
    ('"hello\\"', ERR), ('"hel\'lo"', "hel'lo"), ("'hello", ERR), ("'hello\\'", "hello\\"),
    ("'hello\\there'", "hello\\there"), ("'hello\\\\there'", "hello\\\\there"), ("\"''\"", "''"),
    ("$.", "$."), ("he$1x", "hex"), ("he$.x", "he$.x"), ("he$pwd.", "he."), ("he$PWD", "he/home"),
    ("he\\$PWD", "he$PWD"), ("he\\\\$PWD", "he\\/home"), ('"he\\$PWD"', "he$PWD"), ('"he\\\\$PWD"', "he\\/home"),
    ("\\${}", "${}"), ("\\${}aaa", "${}aaa"), ("he\\${}", "he${}"), ("he\\${}xx", "he${}xx"),
    ("${}", ERR), ("${}aaa", ERR), ("he${}", ERR), ("he${}xx", ERR), ("he${hi}", "he"), ("he${hi}xx", "hexx"),
    ("he${PWD}", "he/home"), ("he${.}", ERR), ("he${XXX:-000}xx", "he000xx"), ("he${PWD:-000}xx", "he/homexx"),
    ("he${XXX:-$PWD}xx", "he/homexx"), ("he${XXX:-${PWD:-yyy}}xx", "he/homexx"),
    ("he${XXX:-${YYY:-yyy}}xx", "heyyyxx"), ("he${XXX:YYY}", ERR), ("he${XXX?}", ERR), ("he${XXX:?}", ERR),
    ("he${PWD?}", "he/home"), ("he${PWD:?}", "he/home"), ("he${NULL?}", "he"), ("he${NULL:?}", ERR),
    ("he${XXX:+${PWD}}xx", "hexx"), ("he${PWD:+${XXX}}xx", "hexx"), ("he${PWD:+${SHELL}}xx", "hebashxx"),
    ("he${XXX:+000}xx", "hexx"), ("he${PWD:+000}xx", "he000xx"), ("'he${XX}'", "he${XX}"),
    ('"he${PWD}"', "he/home"), ("\"he'$PWD'\"", "he'/home'"), ('"$PWD"', "/home"), ("'$PWD'", "$PWD"),
    ("'\\$PWD'", "\\$PWD"), ("'\"hello\"'", '"hello"'), ("'he\\$PWD'", "he\\$PWD"), ("he${PWD", ERR),
    ("he${PWD:=000}xx", ERR), ("he${PWD:+${PWD}:}xx", "he/home:xx"), ("he${XXX:-\\$PWD:}xx", "he$PWD:xx"),
    ("he${XXX:-\\${PWD}z}xx", "he${PWDz}xx"), ("\uc548\ub155\ud558\uc138\uc694", "\uc548\ub155\ud558\uc138\uc694"),
    ("\uc548'\ub155'\ud558\uc138\uc694", "\uc548\ub155\ud558\uc138\uc694"), ("\uc548'\ub155\ud558\uc138\uc694", ERR),
    ("\uc548\ub155\\'\ud558\uc138\uc694", "\uc548\ub155'\ud558\uc138\uc694"), ("$KOREAN", "\ud55c\uad6d\uc5b4"),
    ("\uc548\ub155$KOREAN", "\uc548\ub155\ud55c\uad6d\uc5b4"), ("${KOREAN:+ok}", "ok"),
    ("$", "$"), ("a$", "a$"), ("$ x", "$ x"), ("${PWD", ERR), ("${PWD:", ERR), ("${PWD:-", ERR), ("${", ERR),
    ("${:}", ERR), ("${{x}", ERR), ("$$", ""), ("$#", ""), ("$@", ""), ("$0", ""), ("$12x", "x"),
    ("${PWD}${SHELL}", "/homebash"), ("${PWD%/*}", ""), ("${SHELL#b}", "ash"), ("${SHELL%sh}", "ba"),
]  # fmt: skip


@pytest.mark.parametrize(("word", "expected"), ENV_VAR_TESTS)
def test_expand_env_var_table(word: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(InvalidArgument, match=r"^failed to process "):
            expand(word, ENV_VARS)
    else:
        assert expand(word, ENV_VARS) == expected


# --- word expansion: BuildKit's TestProcessWithMatches and mandatory variables ------------------------------

MATCHES = [
    ("x", {"DUMMY": "dummy"}, "x"),
    ("x ${UNUSED}", {"DUMMY": "dummy"}, "x "),
    ("x ${FOO}", {"FOO": "y"}, "x y"),
    ("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx  ccc"),
    ("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx bbb ccc"),
    ("${FOO:-}", {"FOO": "xxx", "BAR": ""}, "xxx"),
    ("${FOO:-}", {}, ""),
    ("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa bbb "),
    ("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa  "),
    ("${FOO?aaa}", {"FOO": "xxx", "BAR": ""}, "xxx"),
    ("${BAR?bbb}", {"FOO": "xxx", "BAR": ""}, ""),
    ("${BAZ?ccc}", {"FOO": "xxx", "BAR": ""}, ERR),
    ("${FOO:?aaa}", {"FOO": "xxx", "BAR": ""}, "xxx"),
    ("${BAR:?bbb}", {"FOO": "xxx", "BAR": ""}, ERR),
    ("${BAZ:?ccc}", {"FOO": "xxx", "BAR": ""}, ERR),
    ("${BAZ:?}", {"FOO": "xxx", "BAR": ""}, ERR),
    ("${FOO=aaa}", {"FOO": "xxx", "BAR": ""}, ERR),
    ("${FOO=:aaa}", {"FOO": "xxx", "BAR": ""}, ERR),
    ("${FOO=}", {}, ERR),
    ("${FOO#()[]{\\}^$.\\*\\?|\\\\}", {"FOO": "()[]{}^$.*?|\\x"}, "x"),
    ("${FOO%%\\**}", {"FOO": "xx**"}, "xx"),
    ("${FOO#*x*y}", {"FOO": "xxyy"}, "y"),
    ("${FOO#*}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": "x"}, "xyy"),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy"),
    ("${FOO#}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO##*x}", {"FOO": "xxyy"}, "yy"),
    ("${FOO##}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO#?\\?}", {"FOO": "???y"}, "?y"),
    ("${ABC:-.}${FOO%x}${ABC:-.}", {"FOO": "xxyy"}, ".xxyy."),
    ("${FOO%%\\**\\*}", {"FOO": "a***yy*"}, "a"),
    ("${FOO%}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO%%$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy"),
    ("${FOO%.*}", {"FOO": "a.b.c"}, "a.b"),
    ("${FOO%%.*}", {"FOO": "a.b.c"}, "a"),
    ("${FOO#*.}", {"FOO": "a.b.c"}, "b.c"),
    ("${FOO##*.}", {"FOO": "a.b.c"}, "c"),
    ("${FOO:#}", {}, ERR),
    ("${FOO:##}", {}, ERR),
    ("${FOO:%}", {}, ERR),
    ("${FOO:%%}", {}, ERR),
    ("${FOO#\\x}", {"FOO": "x"}, ERR),  # only * ? and \ may be escaped in a pattern
    ("${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}", {"FOO": "/foo*/*/*.txt", "NEEDLE": "\\*/"}, "/foo.*/*.txt - /foo..*.txt"),
    ("${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}", {"FOO": "/tmp/tmp/bar.txt", "NEEDLE": "/tmp"}, "/tmp/bar.txt - /bar.txt"),
    ("${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
     {"FOO": "/a/foo/b/c.txt", "NEEDLE": "/?/", "REPLACEMENT": "/"}, "/foo/b/c.txt - /foo/c.txt"),
    ("${FOO/$NEEDLE/$REPLACEMENT}", {"FOO": "http://google.de", "NEEDLE": "http://", "REPLACEMENT": "https://"},
     "https://google.de"),
    ("${FOO//\\//\\/}", {"FOO": "/tmp/foo.txt"}, "\\/tmp\\/foo.txt"),
    ("${FOO/$BAR/ww}", {"FOO": "xxyy", "BAR": ""}, "wwxxyy"),
    ("${FOO//ww}", {"FOO": "xxyy"}, ERR),
    ("${FOO//}", {"FOO": "xxyy"}, ERR),
    ("${FOO///}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO///}", {}, ""),
    ("something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
     {"VERSION": "v1.2.3", "TARGETOS": "linux", "TARGETARCH": "arm", "TARGETVARIANT": "v7"},
     "something-v1.2.3.linux-arm-v7.tar.gz"),
    ("something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
     {"VERSION": "v1.2.3", "TARGETOS": "linux", "TARGETARCH": "arm64"}, "something-v1.2.3.linux-arm64.tar.gz"),
]  # fmt: skip


@pytest.mark.parametrize(("word", "env", "expected"), MATCHES)
def test_expand_modifiers(word: str, env: dict[str, str], expected: str | None) -> None:
    if expected is None:
        with pytest.raises(InvalidArgument):
            expand(word, env)
    else:
        assert expand(word, env) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [({"VAR": "plain", "ARG": "x"}, "plain"), ({"VAR": "", "ARG": "x"}, ERR), ({"ARG": "x"}, ERR)],
)
def test_expand_mandatory_not_empty(env: dict[str, str], expected: str | None) -> None:
    if expected is None:
        with pytest.raises(InvalidArgument, match="VAR: message herex"):
            expand("${VAR:?message here$ARG}", env)
    else:
        assert expand("${VAR:?message here$ARG}", env) == expected
    if "VAR" in env:
        assert expand("${VAR?message here$ARG}", env) == env["VAR"]
    else:
        with pytest.raises(InvalidArgument, match="VAR: message herex"):
            expand("${VAR?message here$ARG}", env)


def test_expand_default_messages() -> None:
    with pytest.raises(InvalidArgument, match="X: is not allowed to be unset"):
        expand("${X?}", {})
    with pytest.raises(InvalidArgument, match="X: is not allowed to be empty"):
        expand("${X:?}", {"X": ""})


# --- word splitting: BuildKit's wordsTest ----------------------------------------------------------------

WORDS = [
    ("hello", {}, ["hello"]),
    ("hello${hi}bye", {}, ["hellobye"]),
    ("hello${hi}bye", {"hi": "hi"}, ["hellohibye"]),
    ("hello${space}bye", {"space": "abc  def"}, ["helloabc", "defbye"]),
    ('hello"${space}"bye', {"space": "abc  def"}, ["helloabc  defbye"]),
    ('hello "${space}"bye', {"space": "abc  def"}, ["hello", "abc  defbye"]),
    ("hello${leading}def", {"leading": "  ab c"}, ["hello", "ab", "cdef"]),
    ('hello"${leading}" def', {"leading": "  ab c"}, ["hello  ab c", "def"]),
    ('hello"${leading}"', {"leading": "  ab c"}, ["hello  ab c"]),
    ("hello${leading}", {"leading": "  ab c"}, ["hello", "ab", "c"]),
    ("hello${trailing}", {"trailing": "ab c   "}, ["helloab", "c"]),
    ("hello${trailing}d", {"trailing": "ab c   "}, ["helloab", "c", "d"]),
    ('hello"${trailing}"d', {"trailing": "ab c   "}, ["helloab c   d"]),
    ('hel"lo${trailing}"', {"trailing": "ab c   "}, ["helloab c   "]),
    ('hello" there  "', {}, ["hello there  "]),
    ("hello there     ", {}, ["hello", "there"]),
    ("hello\\ there", {}, ["hello there"]),
    ('hello\\" there', {}, ['hello"', "there"]),
    ('hello"\\\\there"', {}, ["hello\\there"]),
    ('hello"\\there"', {}, ["hello\\there"]),
    ("hello'\\\\there'", {}, ["hello\\\\there"]),
    ("hello'\\there'", {}, ["hello\\there"]),
    ("hello'$there'", {}, ["hello$there"]),
    ('a "" b', {}, ["a", "b"]),  # an empty quoted word disappears, as in BuildKit
    ("  ", {}, []),
    ("$EMPTY", {"EMPTY": ""}, []),
]


@pytest.mark.parametrize(("text", "env", "words"), WORDS)
def test_expand_words(text: str, env: dict[str, str], words: list[str]) -> None:
    assert expand_words(text, env) == words


def test_expand_words_error() -> None:
    with pytest.raises(
        InvalidArgument, match="unexpected end of statement while looking for matching double-quote"
    ):
        expand_words('hello" there', {})


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("he`$PWD", "he$PWD"),
        ("c:\\path\\$PWD", "c:\\path\\/home"),
        ('"a`"b"', 'a"b'),
        ("a``b", "a`b"),
        ("a`", "a"),
        ('"x`y"', "x`y"),
    ],
)
def test_expand_with_backtick_escape(word: str, expected: str) -> None:
    assert expand(word, ENV_VARS, "`") == expected


# --- global ARGs and the stage graph -----------------------------------------------------------------------


def test_resolve_meta() -> None:
    df = parse("ARG A=1\nARG B=${A}2 C\nARG D=$TARGETOS\nFROM x\nARG NOT_META=1\n")
    assert resolve_meta(df, {}) == {"A": "1", "B": "12", "D": ""}
    assert resolve_meta(df, {"A": "9", "C": "c", "UNDECLARED": "u"}) == {
        "A": "9",
        "B": "92",
        "C": "c",
        "D": "",
    }
    assert resolve_meta(df, {"B": "given"}) == {"A": "1", "B": "given", "D": ""}
    assert resolve_meta(df, {}, {"TARGETOS": "linux"}) == {
        "TARGETOS": "linux",
        "A": "1",
        "B": "12",
        "D": "linux",
    }


def test_resolve_meta_error_has_line() -> None:
    df = parse('ARG A\nARG B="${A:?A must be set}"\nFROM x\n')
    with pytest.raises(InvalidArgument, match=r"^Dockerfile:2: failed to process .*A must be set"):
        resolve_meta(df, {})
    assert resolve_meta(df, {"A": "1"})["B"] == "1"


def test_stage_index() -> None:
    df = parse("FROM a AS Build\nFROM b\nFROM c AS final\n")
    assert stage_index(df, "build") == 0
    assert stage_index(df, "BUILD") == 0
    assert stage_index(df, "final") == 2
    assert stage_index(df, "1") == 1
    assert stage_index(df, 1) == 1
    with pytest.raises(InvalidArgument, match='stage "nope" could not be found'):
        stage_index(df, "nope")
    with pytest.raises(InvalidArgument, match="invalid stage index 3"):
        stage_index(df, 3)
    with pytest.raises(InvalidArgument, match="invalid stage index 7"):
        stage_index(df, "7")


def test_dependencies_raw_and_expanded() -> None:
    df = parse(
        "ARG SRC=deps\nFROM golang AS deps\nFROM ${BASE:-alpine} AS app\nCOPY --from=$SRC /a /b\n"
        "COPY --from=nginx:latest /etc/nginx /etc/nginx\nRUN --mount=type=bind,from=deps,target=/d true\n"
        "FROM scratch\n"
    )
    app = df.stages[1]
    assert dependencies(app) == {"${BASE:-alpine}", "$SRC", "nginx:latest", "deps"}
    assert dependencies(app, resolve_meta(df, {})) == {"alpine", "deps", "nginx:latest"}
    assert dependencies(df.stages[2]) == set()
    assert stage_dependencies(df, 1, resolve_meta(df, {})) == {0}


def test_needed_stages_multistage_corpus() -> None:
    df = parse((CORPUS / "multistage.Dockerfile").read_text())
    assert [s.name for s in df.stages] == ["deps", "test", "build", "release"]
    assert needed_stages(df) == [0, 2, 3]
    assert needed_stages(df, "test") == [0, 1]
    assert needed_stages(df, "TEST") == [0, 1]
    assert needed_stages(df, "deps") == [0]
    assert needed_stages(df, "build") == [0, 2]
    # BASE names an earlier stage once overridden
    assert needed_stages(df, "release", {"BASE": "test"}) == [0, 1, 2, 3]
    with pytest.raises(InvalidArgument, match='target stage "nope" could not be found'):
        needed_stages(df, "nope")


GRAPHS = [
    # (Dockerfile, target, build args, needed stages)
    ("FROM a AS one\nFROM b AS two\nFROM c\n", None, {}, [2]),
    ("FROM a AS one\nFROM one AS two\nFROM c\nCOPY --from=two / /\n", None, {}, [0, 1, 2]),
    ("FROM a AS one\nFROM b\nCOPY --from=0 / /\n", None, {}, [0, 1]),
    ("FROM a AS one\nFROM b\nRUN --mount=from=one,target=/x true\n", None, {}, [0, 1]),
    ("FROM a AS one\nFROM b\nRUN --mount=from=0,target=/x true\n", None, {}, [1]),  # mounts use names only
    ("FROM a AS one\nFROM b\nCOPY --from=image:tag / /\n", None, {}, [1]),
    ("FROM a\nCOPY --from=later / /\nFROM b AS later\nFROM c\n", None, {}, [2]),
    ("FROM a AS x\nCOPY --from=later / /\nFROM b AS later\n", "x", {}, [0, 1]),  # forward --from is allowed
    ("FROM later AS x\nFROM b AS later\n", "x", {}, [0]),  # FROM sees earlier stages only
    ("ARG S=one\nFROM a AS one\nFROM b\nCOPY --from=${S} / /\n", None, {}, [0, 1]),
    ("ARG S=one\nFROM a AS one\nFROM b\nCOPY --from=${S} / /\n", None, {"S": "busybox"}, [1]),
    ("ARG B\nFROM a AS one\nFROM ${B:-one}\n", None, {}, [0, 1]),
    ("ARG B\nFROM a AS one\nFROM ${B:-one}\n", None, {"B": "debian"}, [1]),
    ("FROM a AS one\nFROM scratch AS two\nFROM b\nCOPY --from=one / /\nCOPY --from=two / /\n", None, {}, [0, 1, 2]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "target", "build_args", "expected"), GRAPHS)
def test_needed_stages(
    text: str, target: str | None, build_args: dict[str, str], expected: list[int]
) -> None:
    assert needed_stages(parse(text), target, build_args) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM a AS one\nCOPY --from=two / /\nFROM b AS two\nCOPY --from=one / /\n",
         "Dockerfile:3: circular dependency detected on stage: two"),
        ("FROM a AS one\nCOPY --from=one / /\n", "circular dependency detected on stage: one"),
        ("FROM a\nCOPY --from=0 / /\n", "Dockerfile:1: circular dependency detected on stage: 0"),
        ("FROM a\nFROM b\nCOPY --from=5 / /\n", "Dockerfile:3: invalid stage index 5"),
    ],
)  # fmt: skip
def test_needed_stages_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        needed_stages(parse(text))


# --- the corpus ----------------------------------------------------------------------------------------------


def test_kitchen_sink_corpus() -> None:
    df = parse((CORPUS / "kitchen.Dockerfile").read_text(), "kitchen.Dockerfile")
    (stage,) = df.stages
    kinds = [i.kind for i in stage.instructions]
    assert set(kinds) == {
        "MAINTAINER", "LABEL", "ENV", "ARG", "ADD", "COPY", "RUN", "CMD", "ENTRYPOINT", "VOLUME", "EXPOSE",
        "USER", "WORKDIR", "STOPSIGNAL", "HEALTHCHECK", "ONBUILD", "SHELL",
    }  # fmt: skip
    by_line = {i.line: i for i in stage.instructions}
    label = by_line[3]
    assert isinstance(label, PairsInstruction)
    assert [(expand(k, {}), expand(v, {})) for k, v in label.pairs] == [
        ("org.opencontainers.image.title", "kitchen sink"), ("version", "1.0"), ("quoted key", "value"),
    ]  # fmt: skip
    add = by_line[9]
    assert isinstance(add, CopyInstruction)
    assert (add.chown, add.chmod, add.link) == ("app:app", "0644", True)
    assert isinstance(by_line[11], CopyInstruction) and by_line[11].keep_git_dir
    copy = by_line[12]
    assert isinstance(copy, CopyInstruction)
    assert (copy.parents, copy.excludes, copy.sources, copy.dest) == (
        True,
        ("*.md", "*.txt"),
        ("./a/b/", "./c/"),
        "/dst/",
    )
    health = by_line[24]
    assert isinstance(health, HealthcheckInstruction)
    assert health.health == Health(
        ("CMD-SHELL", "wget -qO- http://localhost/ || exit 1"), 30.0, 5.0, 60.0, 2.0, 3
    )
    assert (health.line, health.end_line) == (24, 25)
    user = by_line[21]
    assert expand(user.args[0], {"USER": "app", "UID": "1000"}) == "app:1000"


def test_backtick_corpus() -> None:
    df = parse((CORPUS / "backtick.Dockerfile").read_text())
    assert df.escape == "`"
    shell, run, copy, env, workdir = df.stages[0].instructions
    assert shell.args == ("powershell", "-Command")
    assert run.args == ("New-Item -ItemType Directory C:\\Example     -Force",)
    assert isinstance(copy, CopyInstruction) and copy.dest == "c:\\"
    assert isinstance(env, PairsInstruction)
    assert [(k, expand(v, {}, df.escape)) for k, v in env.pairs] == [("A", 'x"y'), ("B", "c:\\path")]
    assert workdir.args == ("c:\\\\Users\\\\app",)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.Dockerfile")), ids=lambda p: p.name)
def test_corpus_parses(path: Path) -> None:
    df = parse(path.read_text(), path.name)
    assert isinstance(df, Dockerfile)
    assert df.filename == path.name
    assert df.stages
    for stage in df.stages:
        for inst in stage.instructions:
            assert inst.line <= inst.end_line
            assert inst.kind in {"RUN", "COPY", "ADD", "ENV", "LABEL", "ARG", "CMD", "ENTRYPOINT", "SHELL", "USER",
                                 "WORKDIR", "VOLUME", "EXPOSE", "STOPSIGNAL", "HEALTHCHECK", "ONBUILD", "MAINTAINER"}  # fmt: skip
    assert needed_stages(df)
