"""Image verbs: pull, push, images, rmi, tag, history, inspect, image prune, login, logout."""

from __future__ import annotations

import sys

from ketch.cli import common
from ketch.cli.args import Flag, Parsed
from ketch.cli.common import command, out
from ketch.clock import parse_rfc3339
from ketch.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.image.store import ImageRecord


def _one(cmd: Parsed, what: str) -> str:
    if len(cmd.args) != 1:
        raise InvalidArgument(f"{what} needs exactly 1 argument")
    return cmd.args[0]


# --- pull / push ------------------------------------------------------------------------------------


@command(
    Flag("quiet", short="q", help="print only the image name"),
    Flag("platform", value=True, help="os/arch[/variant] (default: this host's)"),
    Flag("tls-verify", value=True, help="false: skip TLS verification"),
    Flag("all-tags", short="a"),
)
def pull(g: Parsed, cmd: Parsed) -> int:
    from ketch.cli.progress import Progress
    from ketch.oci.image import Platform
    from ketch.oci.reference import Reference

    text = _one(cmd, "pull")
    if cmd.boolean("all-tags"):
        raise InvalidArgument("--all-tags is not supported")
    ref = Reference.parse(text)
    platform = Platform.parse(cmd.string("platform")) if cmd.string("platform") else None
    service = common.images(g, common.tls_verify(cmd))
    quiet = cmd.boolean("quiet")
    if not quiet:
        if "@" not in text and ":" not in text.rpartition("/")[2]:
            out("Using default tag: latest")
        out(
            f"{ref.tag or ref.digest}: Pulling from {ref.familiar_name if ref.domain != 'docker.io' else ref.path}"
        )
    with Progress(sys.stdout, quiet) as progress:
        result = service.pull(text, platform, progress.report)
    if quiet:
        out(str(ref))
        return 0
    out(f"Digest: {result.digest}")
    status = "Downloaded newer image" if result.new else "Image is up to date"
    out(f"Status: {status} for {ref.familiar}")
    out(str(ref))
    return 0


@command(
    Flag("quiet", short="q"),
    Flag("tls-verify", value=True, help="false: skip TLS verification"),
    Flag("all-tags", short="a"),
)
def push(g: Parsed, cmd: Parsed) -> int:
    from ketch.cli.progress import Progress
    from ketch.engine import images as engine
    from ketch.oci.reference import Reference

    text = _one(cmd, "push")
    ref = Reference.parse(text)
    service = common.images(g, common.tls_verify(cmd))
    quiet = cmd.boolean("quiet")
    if not quiet:
        out(f"The push refers to repository [{ref.name}]")
    with Progress(sys.stdout, quiet) as progress:
        result = engine.push(service, text, progress.report)
    out(f"{ref.tag or 'latest'}: digest: {result.digest} size: {result.size}" if not quiet else str(ref))
    return 0


# --- listing ------------------------------------------------------------------------------------------


IMAGE_HEADER = {
    "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST", "ID": "IMAGE ID",
    "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
}  # fmt: skip


@command(
    Flag("all", short="a"),
    Flag("quiet", short="q", help="only IDs"),
    Flag("digests", help="show digests"),
    Flag("no-trunc", help="full IDs"),
    Flag("filter", short="f", value=True, multi=True, help="dangling=, reference=, label=, before=, since="),
    Flag("format", value=True, help="Go-template-like format"),
)
def ls(g: Parsed, cmd: Parsed) -> int:
    service = common.images(g)
    images = service.images.all()
    if not cmd.boolean("all"):  # intermediate images (a build's steps) show only with -a, as Docker's
        parents = {i.parent for i in images}
        images = [i for i in images if i.names or i.id not in parents]
    images.sort(key=lambda i: parse_rfc3339(i.created), reverse=True)
    if cmd.args:
        cmd.flags["filter"] = [*cmd.strings("filter"), f"reference={cmd.args[0]}"]
    rows = [r for image in images for r in _rows(image, cmd.boolean("no-trunc"))]
    rows = _filter(rows, images, cmd.strings("filter"), service)
    if cmd.boolean("quiet"):
        seen: list[str] = []
        for row in rows:
            if row["ID"] not in seen:
                seen.append(row["ID"])
        out("\n".join(seen))
        return 0
    fmt = cmd.string("format")
    if not fmt:
        cols = [
            "Repository",
            "Tag",
            *(["Digest"] if cmd.boolean("digests") else []),
            "ID",
            "CreatedSince",
            "Size",
        ]
        fmt = "table " + "\t".join("{{." + c + "}}" for c in cols)
    out(common.render(fmt, rows, IMAGE_HEADER))
    return 0


def _rows(image: ImageRecord, no_trunc: bool) -> list[dict[str, Any]]:
    from ketch.oci.reference import Reference

    ident = image.id if no_trunc else image.short_id
    base = {
        "ID": ident, "CreatedSince": common.human_ago(image.created) if image.created else "N/A",
        "CreatedAt": image.created, "Size": common.human_size(image.size), "Containers": "N/A",
    }  # fmt: skip
    digest = image.digests[0].partition("@")[2] if image.digests else "<none>"
    if not image.names:
        return [{"Repository": "<none>", "Tag": "<none>", "Digest": digest, **base}]
    rows = []
    for name in image.names:
        ref = Reference.parse(name)
        mine = next((d.partition("@")[2] for d in image.digests if d.startswith(ref.name + "@")), "<none>")
        rows.append({"Repository": ref.familiar_name, "Tag": ref.tag, "Digest": mine, **base})
    return rows


def _filter(
    rows: list[dict[str, Any]], images: list[ImageRecord], filters: list[str], service: Any
) -> list[dict[str, Any]]:
    import fnmatch

    for key, value in common.filters(filters):
        if key == "dangling":
            want = value.lower() in ("true", "1")
            rows = [r for r in rows if (r["Repository"] == "<none>") == want]
        elif key == "reference":
            rows = [r for r in rows if fnmatch.fnmatchcase(f"{r['Repository']}:{r['Tag']}", value)
                    or fnmatch.fnmatchcase(r["Repository"], value)]  # fmt: skip
        elif key == "label":
            label_key, _, label_value = value.partition("=")
            keep = {i.short_id for i in images if _has_label(service, i, label_key, label_value)}
            rows = [r for r in rows if r["ID"][-12:] in keep or r["ID"][:12] in keep]
        elif key in ("before", "since"):
            pivot = parse_rfc3339(service.get(value).created)
            ids = {i.short_id for i in images if (parse_rfc3339(i.created) < pivot) == (key == "before")
                   and parse_rfc3339(i.created) != pivot}  # fmt: skip
            rows = [r for r in rows if r["ID"][:12] in ids or r["ID"][7:19] in ids]
        else:
            raise InvalidArgument(f"invalid filter {key!r}")
    return rows


def _has_label(service: Any, image: ImageRecord, key: str, value: str) -> bool:
    labels = (service.config_json(image).get("config") or {}).get("Labels") or {}
    return key in labels and (not value or labels[key] == value)


# --- tag, rmi, prune ---------------------------------------------------------------------------------


@command()
def tag(g: Parsed, cmd: Parsed) -> int:
    if len(cmd.args) != 2:
        raise InvalidArgument("tag needs exactly 2 arguments: SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]")
    common.images(g).images.tag(cmd.args[0], cmd.args[1])
    return 0


@command(Flag("force", short="f"), Flag("no-prune"))
def rm(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import images as engine
    from ketch.errors import KetchError

    if not cmd.args:
        raise InvalidArgument("rmi needs at least 1 argument")
    service = common.images(g)
    status = 0
    for text in cmd.args:
        try:
            for event, what in engine.remove(service, text, cmd.boolean("force")):
                out(f"{event}: {what}")
        except KetchError as exc:
            sys.stderr.write(f"Error: {exc}\n")
            status = 1
    return status


@command(Flag("all", short="a"), Flag("force", short="f"), Flag("filter", value=True, multi=True))
def prune(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import images as engine

    if cmd.strings("filter"):
        raise InvalidArgument("image prune --filter is not supported")
    events, freed = engine.prune(common.images(g), cmd.boolean("all"))
    if events:
        out("Deleted Images:\n" + "\n".join(f"{e}: {w}" for e, w in events) + "\n")
    out(f"Total reclaimed space: {common.human_size(freed)}")
    return 0


# --- inspect, history --------------------------------------------------------------------------------


@command(Flag("format", short="f", value=True), Flag("type", value=True))
def inspect(g: Parsed, cmd: Parsed) -> int:
    from ketch.cli.ps import print_inspected
    from ketch.engine import images as engine

    if not cmd.args:
        raise InvalidArgument("inspect needs at least 1 argument")
    if cmd.string("type") not in ("", "image"):
        raise InvalidArgument(f"--type {cmd.string('type')}: only images can be inspected yet")
    service = common.images(g)
    return print_inspected(cmd, lambda text: engine.inspect(service, service.get(text)))


HISTORY_HEADER = {
    "ID": "IMAGE",
    "CreatedSince": "CREATED",
    "CreatedBy": "CREATED BY",
    "Size": "SIZE",
    "Comment": "COMMENT",
}


@command(
    Flag("human", short="H", value=True),
    Flag("no-trunc"),
    Flag("quiet", short="q"),
    Flag("format", value=True),
)
def history(g: Parsed, cmd: Parsed) -> int:
    from ketch.engine import images as engine

    service = common.images(g)
    image = service.get(_one(cmd, "history"))
    no_trunc = cmd.boolean("no-trunc")
    rows = []
    for step in engine.history(service, image):
        ident = (
            step["id"] if no_trunc or step["id"] == "<missing>" else step["id"].removeprefix("sha256:")[:12]
        )
        by = (
            step["created_by"] if no_trunc or len(step["created_by"]) <= 45 else step["created_by"][:44] + "…"
        )
        rows.append({
            "ID": ident, "CreatedSince": common.human_ago(step["created"]) if step["created"] else "N/A",
            "CreatedAt": step["created"], "CreatedBy": by, "Size": common.human_size(step["size"]),
            "Comment": step["comment"],
        })  # fmt: skip
    if cmd.boolean("quiet"):
        out("\n".join(r["ID"] for r in rows))
        return 0
    fmt = cmd.string("format") or "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    out(common.render(fmt, rows, HISTORY_HEADER))
    return 0


# --- login / logout ---------------------------------------------------------------------------------


@command(
    Flag("username", short="u", value=True),
    Flag("password", short="p", value=True),
    Flag("password-stdin"),
    Flag("tls-verify", value=True),
)
def login(g: Parsed, cmd: Parsed) -> int:
    from ketch.registry import auth
    from ketch.registry.client import Registry, RegistryConfig

    host = _registry_host(cmd.args)
    user, password = cmd.string("username"), cmd.string("password")
    if cmd.boolean("password-stdin"):
        password = sys.stdin.read().rstrip("\n")
    if not user or not password:
        raise InvalidArgument("login needs --username and --password (or --password-stdin)")
    config = common.registry_config(g, common.tls_verify(cmd))
    probe = RegistryConfig(**{**config.to_dict(), "auth_file": ""})
    Registry(host, probe, credentials=(user, password)).ping()
    auth.store_credentials(config.auth_file, host, user, password)
    out("Login Succeeded")
    return 0


@command()
def logout(g: Parsed, cmd: Parsed) -> int:
    from ketch.registry import auth

    host = _registry_host(cmd.args)
    auth.remove_credentials(common.auth_file(), host)
    out(f"Removing login credentials for {host}")
    return 0


def _registry_host(args: list[str]) -> str:
    if len(args) > 1:
        raise InvalidArgument("expected at most 1 argument: the registry")
    return args[0] if args else "docker.io"
