"""Unit tests for ketch.engine.volumes on a private root: metadata, filters, in-use checks, prune."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ketch.engine import volumes
from ketch.engine.containers import ContainerRecord
from ketch.engine.context import Context
from ketch.engine.create import options_to_json
from ketch.engine.options import Mount, RunOptions
from ketch.errors import Conflict, InvalidArgument, NotFound, Unsupported


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(str(tmp_path / "root"), str(tmp_path / "run"))


def _container(ctx: Context, n: int, named: str = "", anonymous: str = "") -> str:
    mounts = (Mount("volume", named, "/data"),) if named else ()
    record = ContainerRecord(
        id=f"{n:064x}", name=f"c{n}", created="2024-01-01T00:00:00Z", image="sha256:x", image_ref="x",
        config={}, host_config={"Ketch": options_to_json(RunOptions(image="x", mounts=mounts)),
                                "KetchAnonymousVolumes": {"/anon": anonymous} if anonymous else {}},
    )  # fmt: skip
    ctx.containers().add(record)
    return record.id


def test_create_writes_metadata_and_returns_an_existing_volume(ctx: Context) -> None:
    made = volumes.create(ctx, "v1", {"a": "b"})
    meta = json.loads(Path(ctx.root, "volumes/v1/volume.json").read_text())
    assert meta == {"Name": "v1", "Driver": "local", "Labels": {"a": "b"}, "Options": {},
                    "CreatedAt": made.created_at}  # fmt: skip
    assert volumes.create(ctx, "v1", {"other": ""}) == made
    assert volumes.get(ctx, "v1").to_json()["Mountpoint"] == os.path.join(ctx.root, "volumes/v1/_data")
    assert sorted(os.listdir(os.path.join(ctx.root, "volumes"))) == ["v1"]  # no .creating- leftovers


def test_create_refuses_bad_names_drivers_and_options(ctx: Context) -> None:
    for name in ("a", "../x", ".x", "a/b"):
        with pytest.raises(InvalidArgument):
            volumes.create(ctx, name)
    with pytest.raises(Unsupported, match="'nfs'"):
        volumes.create(ctx, "v", driver="nfs")
    with pytest.raises(Unsupported, match="'device'"):
        volumes.create(ctx, "v", options={"device": "/dev/sda"})
    assert volumes.names(ctx) == []


def test_a_volume_run_made_is_described_from_defaults(ctx: Context) -> None:
    anon = "ab" * 32
    for name in ("named", anon):
        os.makedirs(os.path.join(ctx.root, "volumes", name, "_data"))
    assert volumes.get(ctx, "named").labels == {}
    assert volumes.get(ctx, anon).anonymous
    assert Path(ctx.root, "volumes/named/volume.json").exists()  # written down once seen
    assert sorted(os.listdir(os.path.join(ctx.root, "volumes/named"))) == ["_data", "volume.json"]
    with pytest.raises(NotFound, match="get nope: no such volume"):
        volumes.get(ctx, "nope")
    with pytest.raises(NotFound):
        volumes.get(ctx, "..")


def test_remove_refuses_volumes_in_use_even_forced(ctx: Context) -> None:
    volumes.create(ctx, "v1")
    volumes.create(ctx, "anon" + "0" * 60)
    one = _container(ctx, 1, named="v1")
    two = _container(ctx, 2, anonymous="anon" + "0" * 60)
    assert volumes.users(ctx) == {"v1": [one], "anon" + "0" * 60: [two]}
    for force in (False, True):
        with pytest.raises(Conflict, match=rf"^remove v1: volume is in use - \[{one}\]$"):
            volumes.remove(ctx, "v1", force)
    with pytest.raises(NotFound):
        volumes.remove(ctx, "missing")
    volumes.remove(ctx, "missing", force=True)
    ctx.containers().remove(ctx.containers().load(one))
    volumes.remove(ctx, "v1")
    assert volumes.names(ctx) == ["anon" + "0" * 60]


def test_prune_rules_and_reclaimed_space(ctx: Context) -> None:
    anon, kept = "ab" * 32, "cd" * 32
    for name in (anon, kept):
        os.makedirs(os.path.join(ctx.root, "volumes", name, "_data"))
    Path(ctx.root, "volumes", anon, "_data", "f").write_bytes(b"x" * 100)
    os.link(
        os.path.join(ctx.root, "volumes", anon, "_data", "f"),
        os.path.join(ctx.root, "volumes", anon, "_data", "g"),
    )
    _container(ctx, 1, anonymous=kept)
    volumes.create(ctx, "named", {"env": "test"})
    os.mkdir(os.path.join(ctx.root, "volumes", ".removing-crashed"))
    assert volumes.prune(ctx) == ([anon], 100)  # hard links counted once
    assert volumes.prune(ctx, filters=[("label", "env=prod"), ("all", "true")]) == ([], 0)
    assert volumes.prune(ctx, filters=[("label!", "env")], all_=True) == ([], 0)
    assert volumes.prune(ctx, all_=True) == (["named"], 0)
    assert sorted(os.listdir(os.path.join(ctx.root, "volumes"))) == [kept]
    with pytest.raises(InvalidArgument, match="invalid filter 'dangling'"):
        volumes.prune(ctx, filters=[("dangling", "true")])


def test_ls_filters(ctx: Context) -> None:
    for name, labels in (("web1", {"tier": "front"}), ("web10", {"tier": "back"}), ("web2", {})):
        volumes.create(ctx, name, labels)
    _container(ctx, 1, named="web2")
    found = volumes.list_volumes(ctx)
    assert [v.name for v in found] == ["web1", "web2", "web10"]  # natural order
    used = volumes.users(ctx)

    def pick(*filters: tuple[str, str]) -> list[str]:
        return [v.name for v in volumes.select(found, list(filters), used)]

    assert pick(("dangling", "true")) == ["web1", "web10"]
    assert pick(("dangling", "0")) == ["web2"]
    assert pick(("name", "^web1$"), ("name", "web2")) == ["web1", "web2"]
    assert pick(("label", "tier")) == ["web1", "web10"]
    assert pick(("label", "tier=back")) == ["web10"]
    assert pick(("driver", "local"), ("label", "tier"), ("label", "tier=front")) == ["web1"]
    with pytest.raises(InvalidArgument, match="invalid filter 'dangling=maybe'"):
        pick(("dangling", "maybe"))
