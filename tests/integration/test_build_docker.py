"""The same Dockerfiles built by `ketch build`, docker's classic builder and docker's BuildKit give
the same file trees.

Each case of CORPUS is a Dockerfile and a context (files with explicit modes and owners, symlinks,
tarballs). It is built by ketch (`ketch build -q --network none`), by docker's legacy builder
(`DOCKER_BUILDKIT=0 docker build --network none`) and by docker's BuildKit (`DOCKER_BUILDKIT=1`),
all from the same busybox image (enginefix's `busybox:test`, `ketch save`d and `docker load`ed:
the same image ID). Every result's file tree is exported the way a user would see it (`create` a
container, `export` it) and compared entry by entry: the set of paths, and for each its type,
mode, owner, size, symlink target, content digest and hard-link group. Times are ignored, and so
is what every engine writes into a container of its own: /etc/hostname, /etc/hosts,
/etc/resolv.conf, /etc/mtab, /.dockerenv and the mount points /proc, /sys, /dev with what is
under them. Any other difference fails the test with a table of the three values, unless KNOWN
records it with those values and a reason, with the evidence (Docker's docs, moby's and BuildKit's
source, their issues):
- Docker's two builders disagree: KNOWN records their two values, and ketch must have one of them;
- ketch differs from Docker 20.10 for a reason (a bug fixed in later BuildKit): all three values;
- ketch is wrong (`ketch_bug`): all three values, and the case is an expected failure (xfail) whose
  reason names the bug, until ketch is fixed (then the difference is gone and the case passes).
A Dockerfile ketch cannot build at all is a case marked xfail with the exact error (`Case.xfail`).

Docker is Debian's docker.io 20.10: dockerd and containerd are started by hand on private
sockets and roots (`--bridge=none --iptables=false`, so every build uses `--network none`; the
corpus needs no network). The docker CLI must be able to drive BuildKit: a 20.10 client has it
built in; a client from 23.0 on needs the buildx plugin (`/usr/local/bin/docker` 28.x on this
host has none, so Debian's `/usr/bin/docker` is used). dockerd 20.10's built-in Dockerfile
frontend predates heredocs (`dockerfile parse error line 3: unknown instruction: ECHO`) and a
`# syntax=docker/dockerfile:1.4` line would need Docker Hub, so the heredoc case is compared
with docker's build of the Dockerfile BuildKit documents as its meaning (the heredoc's body run
by the shell; a COPY heredoc as a 0644 root-owned file). The legacy builder has no `--chmod`;
cases using it are built by ketch and BuildKit only. A ketch build that hangs is aborted after 90s
with every thread's Python stack in the failure (faulthandler), as one did twice while this corpus
was written (not reproduced since).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from enginefix import IMAGE, KETCH, Engine, engine_fixture  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))  # daemons.start_docker
from daemons import start_docker  # noqa: E402

pytestmark = pytest.mark.root

if os.geteuid() != 0:
    pytest.skip("needs root: docker's daemons and ketch's containers", allow_module_level=True)


def docker_client() -> str | None:
    """A docker CLI that drives both builders: before 23.0 BuildKit is built in, later it needs buildx."""
    for path in dict.fromkeys(p for p in (shutil.which("docker"), "/usr/bin/docker") if p):
        if not os.access(path, os.X_OK):
            continue
        version = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
        major = re.search(r"version (\d+)\.", version)
        if major and int(major.group(1)) < 23:
            return path
        if subprocess.run([path, "buildx", "version"], capture_output=True, check=False).returncode == 0:
            return path
    return None


DOCKER = docker_client()
for _tool in ("dockerd", "containerd"):
    if not shutil.which(_tool):
        pytest.skip(f"needs {_tool} (apt-get install docker.io)", allow_module_level=True)
if DOCKER is None:
    pytest.skip(
        "needs a docker CLI that can use BuildKit (docker.io 20.10, or buildx)", allow_module_level=True
    )

BUILDERS = ("ketch", "legacy", "buildkit")
# what every engine writes into each container (and the mount points): not part of the image
PER_CONTAINER = {"/.dockerenv", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/etc/mtab"}
MOUNT_POINTS = ("/proc", "/sys", "/dev")


# -- the corpus --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class File:
    data: str | bytes = ""
    mode: int = 0o644
    owner: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Dir:
    mode: int = 0o755


@dataclass(frozen=True)
class Link:
    target: str


@dataclass(frozen=True)
class Tar:
    """A tarball made at test time: members as (name, kind, mode, uid, gid, data or link target)."""

    members: tuple[tuple[str, str, int, int, int, str], ...]
    gzip: bool = True


Spec = str | File | Dir | Link | Tar


@dataclass(frozen=True)
class Case:
    name: str
    dockerfile: str
    files: dict[str, Spec] = field(default_factory=dict)
    build_args: tuple[str, ...] = ()
    docker: tuple[str, ...] = ("legacy", "buildkit")  # the Docker builders that can build it
    docker_dockerfile: str = ""  # what docker builds instead (the heredoc case), when set
    xfail: str = ""  # why ketch cannot build it yet (the exact error)


TARBALL = Tar((
    ("pkg", "dir", 0o750, 1000, 1000, ""),
    ("pkg/inside.txt", "file", 0o640, 1000, 1001, "inside the archive\n"),
    ("pkg/bin", "dir", 0o755, 0, 0, ""),
    ("pkg/bin/tool", "file", 0o755, 0, 0, "#!/bin/sh\necho tool\n"),
    ("pkg/link", "symlink", 0o777, 0, 0, "inside.txt"),
    ("./dotted.txt", "file", 0o600, 0, 0, "a ./ name\n"),
    ("top.txt", "file", 0o644, 33, 33, "top level\n"),
))  # fmt: skip

CORPUS = [
    Case(
        "multistage",
        """\
FROM busybox:test AS build
WORKDIR /src
RUN mkdir -p out/sub out/empty && echo artifact > out/file && echo deep > out/sub/deep \\
 && ln -s file out/link && ln -s /etc/passwd out/abs && busybox chmod 0750 out/sub \\
 && busybox chown 65534:65534 out/sub/deep && busybox chmod 0600 out/sub/deep
FROM busybox:test AS unused
RUN echo never > /never
FROM busybox:test
COPY --from=build /src/out/ /result/
COPY --from=build /src/out/file /single
COPY --from=0 /src/out/sub /fromindex/
COPY --from=build /src/out/link /followed
COPY --from=busybox:test /data/seed /from-image
""",
    ),
    Case(
        "args_env_user",
        """\
ARG BASE=missing/image:none
ARG SUFFIX=global-default
FROM ${BASE}
ARG SUFFIX
ARG LOCAL=default
ENV APP_HOME=/home/app GREETING="hello world"
RUN echo "$SUFFIX $LOCAL $GREETING" > /args
WORKDIR $APP_HOME/work
RUN touch made-here && pwd > /pwd && echo "$HOME" > /home-var
USER nobody
RUN id -u > /tmp/uid && touch /tmp/by-nobody
WORKDIR /tmp/workdir-as-nobody
USER root:root
WORKDIR /srv/last
""",
        build_args=("BASE=busybox:test", "LOCAL=override"),
    ),
    Case(
        "chown",
        """\
FROM busybox:test
RUN echo "app:x:1500:1600::/home/app:/bin/sh" >> /etc/passwd \\
 && printf 'appgrp:x:1600:\\napp:x:1700:\\nnobody:x:65000:\\n' >> /etc/group
COPY --chown=nobody:nogroup a.txt /owned/by/name/a.txt
COPY --chown=1234:5678 a.txt b.txt /owned/numeric/
COPY --chown=nobody dir /owned/dir/
COPY --chown=65534 a.txt /owned/uidonly
COPY --chown=app a.txt /owned/app-user-only
COPY --chown=1500 a.txt /owned/app-uid-only
COPY --chown=root:nogroup b.txt /data/
COPY a.txt /data/seed2
""",
        {
            "a.txt": File("a\n", 0o644, (1000, 1000)),
            "b.txt": File("b\n", 0o600),
            "dir": Dir(0o700),
            "dir/x": "x\n",
            "dir/sub": Dir(0o750),
            "dir/sub/y": File("y\n", 0o755),
        },
    ),
    Case(
        "chmod",
        """\
FROM busybox:test
COPY --chmod=0600 a.txt /chmod/a.txt
COPY --chmod=755 dir /chmod/dir/
COPY --chown=nobody:nogroup --chmod=0640 b.txt /chmod/new/parent/b.txt
COPY --chmod=4755 a.txt /chmod/setuid
""",
        {
            "a.txt": "a\n",
            "b.txt": File("b\n", 0o600),
            "dir": Dir(0o700),
            "dir/x": "x\n",
            "dir/sub": Dir(0o750),
            "dir/sub/y": File("y\n", 0o700),
        },
        docker=("buildkit",),
    ),
    Case(
        "ignore_globs_dirs",
        """\
FROM busybox:test
COPY . /ctx/
COPY src /src-contents/
COPY src /src-noslash
COPY *.log docs/*.md /globs/
COPY s?c/*.c [dx]ocs /globs2/
COPY exe /usr/local/bin/
COPY links /links/
COPY link-to-file /followed
""",
        {
            ".dockerignore": "# comment\n*.log\n!keep.log\n**/*.tmp\nsecret\nbuild/**\n!build/keep\n"
            "docs/*.md\n!docs/README.md\nDockerfile\n",
            "app.log": "excluded\n",
            "keep.log": "kept\n",
            "secret": Dir(0o700),
            "secret/key": "s\n",
            "src": Dir(),
            "src/a.tmp": "t\n",
            "src/main.c": "int main;\n",
            "src/deep": Dir(0o700),
            "src/deep/b.tmp": "t\n",
            "src/deep/keep.c": "k\n",
            "build": Dir(),
            "build/out.o": "o\n",
            "build/keep": Dir(),
            "build/keep/k.txt": "k\n",
            "docs": Dir(0o750),
            "docs/a.md": "a\n",
            "docs/README.md": "readme\n",
            "docs/guide.txt": "g\n",
            "top.tmp": "t\n",
            "exe": File("#!/bin/sh\n", 0o755),
            "private.txt": File("p\n", 0o600, (1000, 1000)),
            "emptydir": Dir(0o700),
            "links": Dir(),
            "links/rel": Link("../keep.log"),
            "links/abs": Link("/etc/passwd"),
            "links/dangling": Link("nowhere"),
            "link-to-file": Link("keep.log"),
        },
    ),
    Case(
        "add_tar",
        """\
FROM busybox:test
ADD files.tar.gz /opt/
ADD plain.tar /plain/
ADD files.tar.gz /opt-again
COPY files.tar.gz /raw/
ADD notes.txt /notes/
ADD --chown=nobody:nogroup files.tar.gz /owned-tar/
""",
        {"files.tar.gz": TARBALL, "plain.tar": Tar(TARBALL.members, gzip=False), "notes.txt": "notes\n"},
    ),
    Case(
        "add_tar_hardlink",
        "FROM busybox:test\nADD links.tar.gz /opt/\n",
        {
            "links.tar.gz": Tar(
                (
                    ("pkg", "dir", 0o755, 0, 0, ""),
                    ("pkg/inside.txt", "file", 0o640, 1000, 1001, "inside the archive\n"),
                    ("pkg/hard", "hardlink", 0o640, 1000, 1001, "pkg/inside.txt"),
                )
            )
        },
    ),
    Case(
        "whiteouts_symlinks",
        """\
FROM busybox:test
RUN rm /data/seed && mkdir /made && echo x > /made/f && echo "extra:x:1000:1000::/:/bin/sh" >> /etc/passwd
RUN rm -r /made && mkdir /made && echo y > /made/g
RUN rm -r /root && rm /data/other && echo z > /data/z && busybox chmod 0700 /data
RUN ln -s ../data/z /etc/zlink && ln -s nowhere /dangling && busybox mkfifo /fifo \\
 && mkdir /hl && echo h > /hl/a && ln /hl/a /hl/b && ln /etc/group /etc/group-hard
RUN busybox chmod 0750 /tmp && touch /tmp/t && rm /tmp/t && rm /bin/tr && echo again > /data/seed
RUN busybox chown 65534:65534 /etc/group && rm -r /data && mkdir /data && echo opaque > /data/new
COPY links/ /links/
COPY link-to-file /followed
""",
        {
            "links": Dir(),
            "links/rel": Link("../keep.log"),
            "links/abs": Link("/etc/passwd"),
            "keep.log": "kept\n",
            "link-to-file": Link("keep.log"),
        },
    ),
    Case(
        "heredoc",
        """\
FROM busybox:test
RUN <<EOF
mkdir -p /here
echo one > /here/one
echo two > /here/two
EOF
RUN cat <<EOF > /here/fed
fed $HOME
EOF
COPY <<EOF /here/copied
copied text
EOF
""",
        {"copied.txt": "copied text\n"},
        docker_dockerfile="""\
FROM busybox:test
RUN mkdir -p /here; echo one > /here/one; echo two > /here/two
RUN echo "fed $HOME" > /here/fed
COPY copied.txt /here/copied
""",
    ),
    Case(
        "scratch",
        """\
FROM busybox:test AS tools
RUN mkdir -p /out/etc /out/empty && echo "root:x:0:0::/:/bin/sh" > /out/etc/passwd && ln -s /bin/busybox /out/sh
FROM scratch
COPY --from=tools /bin/busybox /bin/busybox
COPY --from=tools /out/ /
COPY a.txt /
RUN ["/bin/busybox", "mkdir", "-p", "/made/by/run"]
""",
        {"a.txt": "a\n"},
    ),
]


# -- the known differences ----------------------------------------------------------------------------

ABSENT = "-"  # the value of a path a builder's tree does not have
AGREE = (
    "(the same as each other)"  # in a Known: these builders agree, on a value that varies from path to path
)


@dataclass(frozen=True)
class Known:
    """A difference accepted when every builder's value is as recorded. A builder left out of `values`
    must agree with one of the builders listed (ketch following one Docker builder or the other)."""

    case: str
    paths: tuple[str, ...]  # fnmatch patterns
    attributes: tuple[str, ...]
    values: dict[str, Any]  # builder -> value
    why: str
    ketch_bug: bool = False  # ketch is wrong: the case is an expected failure (xfail) until it is fixed

    def matches(self, case: str, path: str, attribute: str, values: dict[str, Any]) -> bool:
        if case != self.case or attribute not in self.attributes:
            return False
        if not any(fnmatch.fnmatchcase(path, p) for p in self.paths):
            return False
        pinned = {b: v for b, v in self.values.items() if v != AGREE}
        agreeing = [v for b, v in values.items() if self.values.get(b) == AGREE]
        if agreeing and (len(set(map(repr, agreeing))) != 1 or agreeing[0] in pinned.values()):
            return False
        listed = set(map(repr, pinned.values()))
        return all(
            (self.values[b] == AGREE or self.values[b] == v) if b in self.values else repr(v) in listed
            for b, v in values.items()
        )


KNOWN = [
    # -- Docker's two builders disagree; ketch follows one of them --------------------------------------
    Known("args_env_user", ("/tmp/workdir-as-nobody",), ("uid", "gid"), {"legacy": 0, "buildkit": 65534},
          "WORKDIR creates its directory: the classic builder as root (moby/moby#36677, docker/cli#3346), "
          "BuildKit as the USER (dockerfile2llb dispatchWorkdir: llb.Mkdir(wd, 0755, WithParents, "
          "WithUser(image user)); moby/buildkit#1002). BuildKit is Docker's current builder."),
    Known("chown", ("/owned/dir", "/owned/dir/*"), ("gid",), {"legacy": 65000, "buildkit": 65534},
          "--chown=USER without a group: the classic builder looks up a *group* named like the user "
          "(builder/dockerfile/internals_linux.go parseChownFlag: `if no group specified, use the user "
          "spec as group as well`; here the group `nobody` is 65000), BuildKit takes the user's primary "
          "group from /etc/passwd (solver/llbsolver/file/user_linux.go readUser). ketch does as BuildKit."),
    Known("chown", ("/owned/app-user-only",), ("gid",), {"legacy": 1700, "buildkit": 1600},
          "the same rule: user `app` (uid 1500, primary group 1600) and a group named `app` (1700)."),
    # -- ketch differs from Docker 20.10 for a reason -----------------------------------------------------
    Known("chmod", ("/chmod/setuid",), ("mode",), {"ketch": "4755", "buildkit": "0755"},
          "COPY --chmod=4755: BuildKit 0.8 (dockerd 20.10) drops the setuid bit, a bug (moby/buildkit#3920, "
          "fixed by tonistiigi/fsutil#168: Go's os.Chmod keeps only the low 9 bits of a raw mode). ketch "
          "sets what was asked, as fixed BuildKit does."),
    Known("add_tar", ("/owned-tar",), ("uid", "gid"), {"ketch": 65534, "legacy": 0, "buildkit": 65534},
          "ADD --chown of a local archive, the destination directory it creates: the classic builder "
          "ignores --chown for archives (copy.go: archiver.UntarPath with no identity; moby/moby#35525), "
          "BuildKit chowns the directory it creates; ketch does as BuildKit."),
    Known("add_tar", ("/owned-tar/*",), ("uid", "gid"),
          {"ketch": 65534, "legacy": AGREE, "buildkit": AGREE},
          "ADD --chown of a local archive, its members: Docker 20.10's builders keep the archive's owners "
          "(moby/moby#35525, moby/buildkit#1547); BuildKit v0.23.0 and later apply --chown to the extracted "
          "entries (moby/buildkit#5987, docker/docs#7305 closed as fixed). ketch does as current BuildKit."),
    # ketch was wrong in three more ways, fixed since: COPY --from without --chown kept no owners,
    # WORKDIR made no directory, and --chown=UID took the passwd group instead of the UID
]  # fmt: skip


def known(case: str, path: str, attribute: str, values: dict[str, Any]) -> Known | None:
    return next((k for k in KNOWN if k.matches(case, path, attribute, values)), None)


# -- the trees ---------------------------------------------------------------------------------------


def write_context(directory: Path, files: dict[str, Spec]) -> None:
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    for name, spec in sorted(files.items()):
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, str):
            spec = File(spec)
        if isinstance(spec, Dir):
            path.mkdir(exist_ok=True)
            os.chmod(path, spec.mode)
        elif isinstance(spec, Link):
            path.symlink_to(spec.target)
        elif isinstance(spec, Tar):
            write_tar(path, spec)
        else:
            path.write_bytes(spec.data.encode() if isinstance(spec.data, str) else spec.data)
            os.chmod(path, spec.mode)
            os.chown(path, *spec.owner)


def write_tar(path: Path, spec: Tar) -> None:
    kinds = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
    }
    with tarfile.open(path, "w:gz" if spec.gzip else "w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, mode, uid, gid, data in spec.members:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid, info.mtime = kinds[kind], mode, uid, gid, 1_600_000_000
            if kind == "file":
                info.size = len(data.encode())
                tar.addfile(info, io.BytesIO(data.encode()))
                continue
            if kind in ("symlink", "hardlink"):
                info.linkname = data
            tar.addfile(info)


Entry = dict[str, Any]


def tree(data: bytes) -> dict[str, Entry]:
    """An exported container's tar as path -> attributes (the per-container files left out)."""
    kinds = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
             tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}  # fmt: skip
    out: dict[str, Entry] = {}
    links: dict[str, str] = {}  # hard link -> the path it names
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            path = norm(m.name)
            if path in PER_CONTAINER or any(path == p or path.startswith(p + "/") for p in MOUNT_POINTS):
                continue
            entry: Entry = {"type": kinds.get(m.type, repr(m.type)), "mode": f"{m.mode & 0o7777:04o}",
                            "uid": m.uid, "gid": m.gid, "size": m.size if m.isreg() else 0}  # fmt: skip
            if m.issym():
                entry["target"] = m.linkname
            if m.isreg():
                entry["sha256"] = hashlib.sha256(tar.extractfile(m).read()).hexdigest()[:12]  # type: ignore[union-attr]
            if m.ischr() or m.isblk():
                entry["device"] = f"{m.devmajor}:{m.devminor}"
            if m.islnk():
                links[path] = norm(m.linkname)
            out[path] = entry
    # a hard link is its target's content; which of a group is the tar's "first" is the exporter's choice
    groups: dict[str, set[str]] = {}
    for path, target in links.items():
        group = groups.get(target) or groups.get(path) or {target}
        group |= {path, target}
        for member in group:
            groups[member] = group
    for path, group in groups.items():
        first = next((p for p in sorted(group) if out.get(p, {}).get("type") == "file"), None)
        if first is None or path not in out:
            continue
        out[path].update(type="file", size=out[first]["size"], sha256=out[first]["sha256"])
        out[path]["hardlinks"] = " ".join(sorted(group - {path}))
    return out


def norm(name: str) -> str:
    name = name.strip("/")
    name = name.removeprefix("./") if name != "." else ""
    return "/" + name.strip("/")


ATTRIBUTES = ("type", "mode", "uid", "gid", "size", "target", "sha256", "device", "hardlinks")


def differences(trees: dict[str, dict[str, Entry]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(path, attribute, builder -> value) wherever the builders disagree."""
    out = []
    for path in sorted(set().union(*trees.values())):
        present = {b: path in t for b, t in trees.items()}
        if not all(present.values()):
            out.append((path, "exists", {b: "yes" if p else ABSENT for b, p in present.items()}))
        have = [b for b, p in present.items() if p]
        for attribute in ATTRIBUTES:
            values = {b: trees[b][path].get(attribute, ABSENT) for b in have}
            if len(set(values.values())) > 1:
                out.append((path, attribute, values))
    return out


def table(diffs: list[tuple[str, str, dict[str, Any]]], builders: list[str]) -> str:
    rows = [("path", "attribute", *builders)]
    rows += [(p, a, *(str(v.get(b, "(n/a)")) for b in builders)) for p, a, v in diffs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


# -- docker ------------------------------------------------------------------------------------------


class Docker:
    """The docker CLI on the private dockerd; `build` runs either builder."""

    def __init__(self, host: str, config: Path) -> None:
        assert DOCKER is not None
        self.cli = [DOCKER, "-H", host]
        self.env = dict(os.environ, DOCKER_CONFIG=str(config))  # not ~/.docker (BuildKit writes a node ID)

    def __call__(
        self, *args: str, builder: str = "legacy", timeout: float = 120
    ) -> subprocess.CompletedProcess[bytes]:
        env = dict(self.env, DOCKER_BUILDKIT="1" if builder == "buildkit" else "0")
        return subprocess.run([*self.cli, *args], capture_output=True, env=env, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)  # fmt: skip

    def check(self, *args: str, builder: str = "legacy") -> bytes:
        proc = self(*args, builder=builder)
        if proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode()}"
            )
        return proc.stdout


@pytest.fixture(scope="module")
def docker(engine: Engine) -> Iterator[Docker]:
    """A private containerd + dockerd with the engine's busybox image loaded; stopped and removed after,
    with nothing of it left: processes, mounts, files, cgroups, links, iptables chains."""
    before = host_state()
    work = Path(tempfile.mkdtemp(prefix="kbd", dir="/tmp"))  # short: socket paths are limited
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(name: str, argv: list[str]) -> None:
        with open(work / f"{name}.log", "wb") as log:
            procs[name] = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)

    try:
        host = start_docker(work / "d", spawn)
        cli = Docker(host, work / "config")
        engine("save", "-o", str(work / "busybox.tar"), IMAGE)
        cli.check("load", "-i", str(work / "busybox.tar"))
        yield cli
    finally:
        stop_docker(work, procs, before)


def stop_docker(work: Path, procs: dict[str, subprocess.Popen[bytes]], before: dict[str, set[str]]) -> None:
    for name in ("dockerd", "containerd"):
        if proc := procs.get(name):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    stray = [pid for pid, argv in processes().items() if any(str(work) in a for a in argv)]
    for pid in stray:  # shims of containers that outlived the daemons
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    mounts = [m for m in mounts if m == str(work) or m.startswith(f"{work}/")]
    for point in sorted(set(mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    shutil.rmtree(work, ignore_errors=True)
    for path in sorted(host_state()["cgroups"] - before["cgroups"], key=len, reverse=True):
        with contextlib.suppress(OSError):  # docker/buildkit: dockerd makes it for BuildKit, never removes it
            os.rmdir(path)
    after = host_state()
    cgroups = sorted(after["cgroups"] - before["cgroups"])
    made = {k: sorted(after[k] - before[k]) for k in ("links", "chains")}
    assert not stray, f"docker's processes outlived dockerd: {stray}"
    assert not mounts, f"docker left mounts behind: {mounts}"
    assert not cgroups, f"docker left cgroups behind: {cgroups}"
    assert not any(made.values()), f"docker left network state behind: {made}"


def host_state() -> dict[str, set[str]]:
    """What dockerd could leave on the host: its cgroups (docker/ and buildkit/ in every v1 hierarchy or
    v2), a docker0 or br- link, DOCKER iptables chains."""
    tops = [
        t
        for pattern in ("*/docker", "docker", "*/buildkit", "buildkit")
        for t in Path("/sys/fs/cgroup").glob(pattern)
    ]
    cgroups = {str(t) for t in tops} | {str(p) for top in tops for p in top.rglob("*") if p.is_dir()}
    links = {
        p.name for p in Path("/sys/class/net").iterdir() if p.name == "docker0" or p.name.startswith("br-")
    }
    chains = set()
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            out = subprocess.run([tool], capture_output=True, text=True, check=False).stdout
            chains |= {f"{tool} {line}" for line in out.splitlines() if line.startswith(":DOCKER")}
    return {"cgroups": cgroups, "links": links, "chains": chains}


def processes() -> dict[int, list[str]]:
    out = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if raw and int(entry.name) != os.getpid():
            out[int(entry.name)] = raw.rstrip(b"\0").decode(errors="replace").split("\0")
    return out


# -- the builds --------------------------------------------------------------------------------------


class KetchBuildFailed(AssertionError):
    """`ketch build` failed on a corpus file (the cases marked xfail expect it)."""


def ketch_build(engine: Engine, *args: str, timeout: float = 90) -> str:
    """`ketch build -q ARGS`: the image ID. A build that hangs is sent SIGABRT first, so that its
    faulthandler (on for this run) prints every thread's stack into the failure."""
    env = dict(engine.env, PYTHONFAULTHANDLER="1")
    with subprocess.Popen([KETCH, "build", "-q", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, text=True) as proc:  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            try:
                out, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            raise AssertionError(f"ketch build hung for {timeout:.0f}s; its threads:\n{err}") from None
    if proc.returncode != 0:
        raise KetchBuildFailed(f"ketch build failed ({proc.returncode}): {err}")
    return out.strip().splitlines()[-1]


def ketch_tree(engine: Engine, image: str) -> dict[str, Entry]:
    cid = engine("create", "--network", "none", image, "true").stdout.strip()
    try:
        return tree(engine.raw("export", cid))
    finally:
        engine("rm", "-f", cid)


def docker_tree(docker: Docker, image: str) -> dict[str, Entry]:
    cid = docker.check("create", "--network", "none", image, "true").decode().strip()
    try:
        return tree(docker.check("export", cid))
    finally:
        docker("rm", "-f", cid)


def build_all(case: Case, engine: Engine, docker: Docker, tmp_path: Path) -> dict[str, dict[str, Entry]]:
    """The case built by ketch and by each Docker builder that can, as exported trees."""
    context = tmp_path / "ctx"
    write_context(context, case.files)
    (context / "Dockerfile").write_text(case.dockerfile)
    args = [a for arg in case.build_args for a in ("--build-arg", arg)]
    trees = {"ketch": ketch_tree(engine, ketch_build(engine, "--network", "none", *args, str(context)))}
    docker_context = context
    if case.docker_dockerfile:
        docker_context = tmp_path / "docker-ctx"
        shutil.copytree(context, docker_context, symlinks=True)
        (docker_context / "Dockerfile").write_text(case.docker_dockerfile)
    for builder in case.docker:
        out = docker.check("build", "-q", "--network", "none", *args, str(docker_context), builder=builder)
        trees[builder] = docker_tree(docker, out.decode().split()[-1])
    return trees


PARAMS = [pytest.param(c, id=c.name, marks=[pytest.mark.xfail(reason=c.xfail, raises=KetchBuildFailed, strict=True)]
                       if c.xfail else []) for c in CORPUS]  # fmt: skip


@pytest.mark.parametrize("case", PARAMS)
def test_docker_and_ketch_build_the_same_tree(
    case: Case, engine: Engine, docker: Docker, tmp_path: Path
) -> None:
    trees = build_all(case, engine, docker, tmp_path)
    assert trees["ketch"], "ketch's tree is empty"
    found = [(p, a, v, known(case.name, p, a, v)) for p, a, v in differences(trees)]
    unknown = [(p, a, v) for p, a, v, k in found if k is None]
    for path, attribute, values, k in found:
        if k is not None:
            print(f"known{' ketch bug' if k.ketch_bug else ''}: {path} {attribute} {values}: {k.why}")
    assert not unknown, f"the trees differ in {len(unknown)} ways:\n{table(unknown, list(trees))}"
    bugs = {k.why: None for _, _, _, k in found if k is not None and k.ketch_bug}
    if bugs:
        pytest.xfail("ketch differs from both Docker builders: " + " | ".join(bugs))
