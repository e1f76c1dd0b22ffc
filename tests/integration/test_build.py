"""`ketch build` for real: each Dockerfile is built from the local busybox image, then run and
checked from inside; the cache, failures and the context's boundaries are checked too."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from enginefix import IMAGE, Engine, engine_fixture  # noqa: F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def context(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    directory = tmp_path / "ctx"
    directory.mkdir()
    (directory / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def build(engine: Engine, directory: Path, *flags: str, check: bool = True) -> str:
    proc = engine("build", *flags, str(directory), check=check)
    return proc.stdout if check else proc.stdout + proc.stderr


def config(engine: Engine, image: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads(engine("image", "inspect", image).stdout)[0]["Config"]
    return doc


def test_a_build_with_most_instructions_runs_as_described(engine: Engine, tmp_path: Path) -> None:
    directory = context(tmp_path, f"""
ARG BASE={IMAGE}
FROM $BASE
ARG GREETING=hello
ENV APP=/app PATH=/bin
WORKDIR $APP
COPY a.txt ./
COPY --chown=nobody:nogroup --chmod=0600 b.txt /app/private/
COPY dir /app/dir/
RUN echo "$GREETING" > greeting && id -u > who
RUN <<EOF
echo from heredoc > /app/heredoc
EOF
LABEL com.example.kind=test
EXPOSE 8080 53/udp
VOLUME /data
USER nobody
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --retries=2 CMD true
ENTRYPOINT ["cat"]
CMD ["/app/greeting"]
""", {"a.txt": "A\n", "b.txt": "B\n", "dir/one": "1\n", "dir/sub/two": "2\n"})  # fmt: skip
    out = build(engine, directory, "-t", "built:all", "--build-arg", "GREETING=hey")
    assert "Successfully tagged built:all" in out and "Step 1/" in out
    assert engine("run", "--rm", "built:all").stdout == "hey\n"
    script = ("cat /app/a.txt /app/who /app/heredoc /app/dir/one /app/dir/sub/two; "
              "stat -c '%U %a' /app/private/b.txt; pwd; id -un")  # fmt: skip
    out = engine("run", "--rm", "--entrypoint", "sh", "-u", "root", "built:all", "-c", script).stdout
    assert out.splitlines() == ["A", "0", "from heredoc", "1", "2", "nobody 600", "/app", "root"]
    c = config(engine, "built:all")
    assert c["Entrypoint"] == ["cat"] and c["Cmd"] == ["/app/greeting"] and c["User"] == "nobody"
    assert c["WorkingDir"] == "/app" and c["StopSignal"] == "SIGINT"
    assert c["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}} and c["Volumes"] == {"/data": {}}
    assert c["Labels"] == {"com.example.kind": "test"}
    assert c["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000, "Retries": 2}
    assert "APP=/app" in c["Env"]  # type: ignore[operator]
    assert not any(e.startswith("GREETING=") for e in c["Env"])  # type: ignore[union-attr]  # ARGs do not persist
    history = engine("history", "--no-trunc", "built:all").stdout
    assert "|1 GREETING=hey /bin/sh -c echo" in history
    assert "<missing>" not in engine("history", "-q", "built:all").stdout  # every step's image is here


def test_a_cached_rebuild_runs_nothing_and_a_change_rebuilds_from_there(
    engine: Engine, tmp_path: Path
) -> None:
    directory = context(
        tmp_path, f"FROM {IMAGE}\nCOPY a.txt /a.txt\nRUN cat /a.txt > /copy\n", {"a.txt": "one\n"}
    )
    first = build(engine, directory, "-t", "cached:1")
    assert "Using cache" not in first and "Running in" in first
    again = build(engine, directory, "-t", "cached:1")
    assert again.count("Using cache") == 2 and "Running in" not in again
    os.utime(directory / "a.txt", (1, 1))  # a new mtime alone is no change
    assert "Running in" not in build(engine, directory)
    (directory / "a.txt").write_text("two\n")
    changed = build(engine, directory, "-t", "cached:2")
    assert "Using cache" not in changed and "Running in" in changed
    assert engine("run", "--rm", "cached:2", "cat", "/copy").stdout == "two\n"
    assert "Using cache" not in build(engine, directory, "--no-cache")


def test_multi_stage_copy_from_and_target(engine: Engine, tmp_path: Path) -> None:
    directory = context(tmp_path, f"""
FROM {IMAGE} AS builder
RUN mkdir /out && echo artifact > /out/file && ln -s /etc/passwd /out/link
FROM {IMAGE} AS other
RUN echo other > /other
FROM scratch
COPY --from=builder /out/ /result/
COPY --from=builder /bin/busybox /bin/busybox
""")  # fmt: skip
    build(engine, directory, "-t", "multi:final")
    out = engine("run", "--rm", "multi:final", "/bin/busybox", "cat", "/result/file").stdout
    assert out == "artifact\n"
    out = engine("run", "--rm", "multi:final", "/bin/busybox", "readlink", "/result/link").stdout
    assert out == "/etc/passwd\n"  # a symlink is copied as a symlink
    partial = build(engine, directory, "--target", "builder", "-t", "multi:builder")
    assert "echo other" not in partial  # stages the target does not need are not built
    assert engine("run", "--rm", "multi:builder", "cat", "/out/file").stdout == "artifact\n"
    bad = build(engine, directory, "--target", "nope", check=False)
    assert "target stage" in bad and "nope" in bad


def test_dockerignore_with_exceptions(engine: Engine, tmp_path: Path) -> None:
    directory = context(tmp_path, f"FROM {IMAGE}\nCOPY . /ctx/\n",
                        {".dockerignore": "*.log\nsecret/\n!keep.log\n**/*.tmp\n", "app.log": "x", "keep.log": "k",
                         "secret/key": "s", "src/a.tmp": "t", "src/main.c": "m"})  # fmt: skip
    build(engine, directory, "-t", "ignored:1")
    out = engine("run", "--rm", "ignored:1", "sh", "-c", "cd /ctx && find . -type f | sort").stdout
    assert out.split() == ["./.dockerignore", "./Dockerfile", "./keep.log", "./src/main.c"]


def test_add_unpacks_a_local_archive(engine: Engine, tmp_path: Path) -> None:
    directory = context(tmp_path, f"FROM {IMAGE}\nADD files.tar.gz /opt/\nCOPY files.tar.gz /raw/\n")
    with tarfile.open(directory / "files.tar.gz", "w:gz") as tar:
        data = b"inside\n"
        info = tarfile.TarInfo("pkg/inside.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    build(engine, directory, "-t", "added:1")
    out = engine("run", "--rm", "added:1", "sh", "-c", "cat /opt/pkg/inside.txt; ls /raw").stdout
    assert out.splitlines() == ["inside", "files.tar.gz"]


def test_a_failing_run_shows_its_output_and_leaves_no_image(engine: Engine, tmp_path: Path) -> None:
    directory = context(tmp_path, f"FROM {IMAGE}\nRUN echo about to fail && exit 3\n")
    proc = engine("build", "-t", "broken:1", str(directory), check=False)
    assert proc.returncode == 1
    assert "about to fail" in proc.stdout
    assert "returned a non-zero code: 3" in proc.stderr and proc.stderr.count("\n") == 1
    assert engine("images", "-q", "broken").stdout == ""
    assert "ketch-build-" not in engine("ps", "-a", "--format", "{{.Names}}").stdout


def test_syntax_errors_name_the_file_and_line(engine: Engine, tmp_path: Path) -> None:
    directory = context(tmp_path, f"FROM {IMAGE}\nRUN true\nFORM x\n")
    proc = engine("build", str(directory), check=False)
    assert proc.returncode == 1 and "Dockerfile:3" in proc.stderr and "unknown instruction" in proc.stderr


def test_copy_never_leaves_the_context(engine: Engine, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("host secret\n")
    directory = context(tmp_path, f"FROM {IMAGE}\nCOPY escape/outside.txt /got\n")
    (directory / "escape").symlink_to(tmp_path)  # absolute: resolved from the context's root
    proc = engine("build", str(directory), check=False)
    assert proc.returncode == 1 and "not found" in proc.stderr
    directory2 = tmp_path / "two"
    directory2.mkdir()
    (directory2 / "Dockerfile").write_text(f"FROM {IMAGE}\nCOPY ../outside.txt /got\n")
    proc = engine("build", str(directory2), check=False)
    assert proc.returncode == 1 and "not found" in proc.stderr


def test_stdin_dockerfile_and_tar_context_iidfile_and_quiet(engine: Engine, tmp_path: Path) -> None:
    proc = engine("build", "-q", "-", input=f"FROM {IMAGE}\nRUN echo piped > /piped\n")
    image_id = proc.stdout.strip()
    assert image_id.startswith("sha256:")
    assert engine("run", "--rm", image_id, "cat", "/piped").stdout == "piped\n"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, text in (("Dockerfile", f"FROM {IMAGE}\nCOPY f /f\n"), ("f", "from tar\n")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    iid = tmp_path / "iid"
    proc2 = engine.raw("build", "--iidfile", str(iid), "-t", "tarred:1", "-", data=raw.getvalue())
    assert b"Successfully tagged tarred:1" in proc2
    assert iid.read_text().startswith("sha256:")
    assert engine("run", "--rm", "tarred:1", "cat", "/f").stdout == "from tar\n"


def test_builder_prune_drops_the_cache(engine: Engine, tmp_path: Path) -> None:
    directory = context(tmp_path, f"FROM {IMAGE}\nRUN echo pruned > /p\n")
    build(engine, directory, "-t", "pruned:1")
    engine("rmi", "pruned:1")
    assert "Deleted build cache objects" in engine("builder", "prune", "-f").stdout
    assert "Using cache" not in build(engine, directory)


def test_run_mounts_cache_bind_and_tmpfs(engine: Engine, tmp_path: Path) -> None:
    directory = context(tmp_path, f"""
FROM {IMAGE} AS base
RUN echo from-stage > /stage.txt
FROM {IMAGE}
RUN --mount=type=cache,target=/cache,id=counter sh -c 'echo run >> /cache/n; wc -l < /cache/n > /seen'
RUN --mount=type=bind,target=/ctx cat /ctx/input.txt > /from-ctx
RUN --mount=type=bind,from=base,source=/stage.txt,target=/mnt/s.txt cat /mnt/s.txt > /from-stage
RUN --mount=type=tmpfs,target=/scratch sh -c 'echo x > /scratch/y; ls /scratch > /tmpfs-seen'
RUN --mount=type=bind,target=/ctx,rw sh -c 'echo changed > /ctx/input.txt'
""", {"input.txt": "context data\n"})  # fmt: skip
    build(engine, directory, "-t", "mounted:1")
    script = "cat /seen /from-ctx /from-stage /tmpfs-seen; ls -d /cache /ctx /scratch /mnt 2>/dev/null; true"
    out = engine("run", "--rm", "mounted:1", "sh", "-c", script).stdout
    assert out.splitlines() == ["1", "context data", "from-stage", "y"]  # no mount point is left behind
    assert (directory / "input.txt").read_text() == "context data\n"  # an rw bind's writes are thrown away
    build(engine, directory, "--no-cache", "-t", "mounted:2")
    assert engine("run", "--rm", "mounted:2", "cat", "/seen").stdout == "2\n"  # the cache mount persists


def test_copy_parents_exclude_link_and_heredoc_files(engine: Engine, tmp_path: Path) -> None:
    dockerfile = "\n".join([
        f"FROM {IMAGE}",
        "COPY --parents src/a/one.txt src/b/two.txt /p/",
        "COPY --exclude=*.md --exclude=skip docs /d/",
        "COPY --link src/a/one.txt /linked.txt",
        "COPY <<EOF /etc/made.conf",
        "key=value",
        "EOF",
        "",
    ])  # fmt: skip
    files = {"src/a/one.txt": "1\n", "src/b/two.txt": "2\n", "docs/keep.txt": "k", "docs/drop.md": "d",
             "docs/skip/x": "x"}  # fmt: skip
    build(engine, context(tmp_path, dockerfile, files), "-t", "copies:1")
    script = "find /p /d -type f | sort; cat /linked.txt /etc/made.conf"
    out = engine("run", "--rm", "copies:1", "sh", "-c", script).stdout
    assert out.splitlines() == ["/d/keep.txt", "/p/src/a/one.txt", "/p/src/b/two.txt", "1", "key=value"]


def test_progress_tty_draws_steps_and_keeps_a_failed_steps_output(engine: Engine, tmp_path: Path) -> None:
    good = context(tmp_path, f"FROM {IMAGE}\nRUN echo one\nRUN echo two\n")
    out = build(engine, good, "--progress", "tty", "--no-cache")
    assert "[+] Building" in out and "\x1b[J" in out
    assert " => [2/3] RUN echo one" in out and " => => one" in out
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "Dockerfile").write_text(
        f"FROM {IMAGE}\nRUN for i in 1 2 3 4 5 6 7 8; do echo line$i; done; exit 4\n"
    )
    proc = engine("build", "--progress", "tty", str(tmp_path / "bad"), check=False)
    assert proc.returncode == 1 and "non-zero code: 4" in proc.stderr
    assert proc.stdout.rstrip().endswith(
        "\n".join(f"line{i}" for i in range(1, 9))
    )  # all of it, not the tail


def test_add_downloads_a_url(engine: Engine, tmp_path: Path) -> None:
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    (served / "file.txt").write_text("downloaded\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, directory=str(served), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/file.txt"
        directory = context(tmp_path, f"FROM {IMAGE}\nADD {url} /got/\n")
        build(engine, directory, "-t", "url:1")
        out = engine("run", "--rm", "url:1", "sh", "-c", "cat /got/file.txt; stat -c %a /got/file.txt").stdout
        assert out.splitlines() == ["downloaded", "600"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
