"""`ketch volume` create/ls/inspect/rm/prune against a real engine, with volumes used by `run`."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from enginefix import IMAGE, Engine, engine_fixture  # noqa: F401  (the fixture `engine`)

pytestmark = pytest.mark.root

HEX64 = re.compile(r"[0-9a-f]{64}")


@pytest.fixture(autouse=True)
def _clean(engine: Engine) -> Iterator[None]:
    """Each test starts and ends with no containers and no volumes."""
    yield
    engine.cleanup()
    assert engine("ps", "-aq").stdout == ""
    assert engine("volume", "ls", "-q").stdout == ""
    volumes = engine.root / "volumes"
    assert not (list(volumes.iterdir()) if volumes.exists() else []), "volume directories left behind"


# --- create, ls, inspect, rm -------------------------------------------------------------------------


def test_create_ls_inspect_rm(engine: Engine) -> None:
    assert engine("volume", "create", "--label", "team=a", "--label", "tier", "alpha").stdout == "alpha\n"
    assert engine("volume", "create", "alpha").stdout == "alpha\n"  # an existing name: that volume
    generated = engine("volume", "create").stdout.strip()
    assert HEX64.fullmatch(generated)
    table = engine("volume", "ls").stdout.splitlines()
    assert table[0] == "DRIVER    VOLUME NAME"
    assert sorted(table[1:]) == sorted([f"local     {generated}", "local     alpha"])
    doc = engine.volume("alpha")
    assert doc == {"CreatedAt": doc["CreatedAt"], "Driver": "local", "Labels": {"team": "a", "tier": ""},
                   "Mountpoint": str(engine.root / "volumes/alpha/_data"), "Name": "alpha", "Options": {},
                   "Scope": "local"}  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["CreatedAt"])
    assert os.path.isdir(doc["Mountpoint"])
    fmt = engine("volume", "inspect", "--format", "{{.Name}} {{.Driver}} {{.Scope}}", "alpha").stdout
    assert fmt == "alpha local local\n"
    assert engine("volume", "ls", "--format", "{{.Name}}:{{.Labels}}", "--filter", "name=alp").stdout == (
        "alpha:team=a,tier=\n"
    )
    assert (
        json.loads(engine("volume", "ls", "--format", "json", "-f", "label=team=a").stdout)["Name"] == "alpha"
    )
    assert engine("volume", "rm", "alpha", generated).stdout == f"alpha\n{generated}\n"
    assert engine.names() == []


def test_missing_volumes_are_reported(engine: Engine) -> None:
    engine("volume", "create", "there")
    both = engine("volume", "inspect", "there", "nosuch", check=False)
    assert both.returncode == 1
    assert [d["Name"] for d in json.loads(both.stdout)] == ["there"]
    assert both.stderr == "Error response from daemon: get nosuch: no such volume\n"
    gone = engine("volume", "rm", "nosuch", "there", check=False)
    assert (gone.returncode, gone.stdout) == (1, "there\n")
    assert gone.stderr == "Error response from daemon: get nosuch: no such volume\n"
    assert engine("volume", "rm", "-f", "nosuch").stdout == "nosuch\n"  # forced: a missing one is fine


def test_bad_names_drivers_and_options_are_refused(engine: Engine) -> None:
    for name in ("bad/name", "a", "-x", ".hidden", "x y"):
        result = engine("volume", "create", "--", name, check=False)
        assert result.returncode == 1, name
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert "includes invalid characters for a local volume name" in result.stderr
    driver = engine("volume", "create", "-d", "nfs", "v1", check=False)
    assert driver.returncode == 1 and "only the local driver" in driver.stderr
    opt = engine("volume", "create", "-o", "type=tmpfs", "v1", check=False)
    assert opt.returncode == 1 and "'type'" in opt.stderr and len(opt.stderr.splitlines()) == 1
    for verb in ("inspect", "rm"):  # names that could escape <root>/volumes are simply not volumes
        for name in ("..", "../containers", "/etc"):
            result = engine("volume", verb, name, check=False)
            assert result.returncode == 1 and "no such volume" in result.stderr
    bad = engine("run", "--rm", "-v", "bad$name:/data", IMAGE, "true", check=False)
    assert bad.returncode == 125 and len(bad.stderr.splitlines()) == 1
    assert engine("volume", "ls", "-f", "dangling=maybe", check=False).returncode == 1
    assert (
        engine("volume", "ls", "-f", "colour=red", check=False).stderr == "Error: invalid filter 'colour'\n"
    )
    assert engine.names() == []


def test_concurrent_create_and_rm_of_one_name(engine: Engine) -> None:
    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(lambda _: engine("volume", "create", "shared").stdout, range(8)))
    assert created == ["shared\n"] * 8
    with ThreadPoolExecutor(8) as pool:
        removed = list(pool.map(lambda _: engine("volume", "rm", "shared", check=False).returncode, range(8)))
    assert sorted(removed) == [0] + [1] * 7


# --- volumes used by containers -------------------------------------------------------------------


def test_named_volume_outlives_its_containers(engine: Engine) -> None:
    engine("run", "--rm", "-v", "data:/data", IMAGE, "sh", "-c", "echo x > /data/f")
    assert engine.names() == ["data"]
    assert engine("run", "--rm", "-v", "data:/data", IMAGE, "cat", "/data/f", "/data/seed").stdout == (
        "x\nfrom the image\n"
    )
    doc = engine.volume("data")  # made by `run`: described from defaults, a named volume
    assert (doc["Name"], doc["Driver"], doc["Labels"], doc["Scope"]) == ("data", "local", {}, "local")
    assert Path(doc["Mountpoint"], "f").read_text() == "x\n"
    assert engine.volume("data")["CreatedAt"] == doc["CreatedAt"]
    assert engine("volume", "prune", "-f").stdout == "Total reclaimed space: 0B\n"  # named: kept
    engine("volume", "rm", "data")


def test_rm_refuses_a_volume_a_stopped_container_uses(engine: Engine) -> None:
    engine("volume", "create", "keep")
    engine("run", "--name", "holder", "-v", "keep:/data", IMAGE, "true")
    cid = engine("inspect", "--format", "{{.Id}}", "holder").stdout.strip()
    for flags in ((), ("-f",)):  # --force does not override "in use", as in Docker
        refused = engine("volume", "rm", *flags, "keep", check=False)
        assert refused.returncode == 1
        assert refused.stderr == f"Error response from daemon: remove keep: volume is in use - [{cid}]\n"
    assert engine.names("--filter", "dangling=false") == ["keep"]
    assert engine.names("--filter", "dangling=true") == []
    assert engine("volume", "prune", "-f", "-a").stdout == "Total reclaimed space: 0B\n"
    engine("rm", "holder")
    assert engine.names("--filter", "dangling=true") == ["keep"]
    assert engine("volume", "rm", "keep").stdout == "keep\n"


def test_anonymous_volume_goes_with_rm_v(engine: Engine) -> None:
    engine("run", "--name", "anon", "-v", "/anon", IMAGE, "sh", "-c", "echo hi > /anon/f")
    (name,) = engine.names()
    assert HEX64.fullmatch(name)
    mounts = json.loads(engine("inspect", "--format", "{{json .Mounts}}", "anon").stdout)
    assert [m["Name"] for m in mounts] == [name]
    assert engine.volume(name)["Labels"] == {"com.docker.volume.anonymous": ""}
    assert engine("volume", "rm", name, check=False).returncode == 1  # in use
    engine("rm", "-v", "anon")
    assert engine.names() == []


def test_prune_takes_unused_anonymous_volumes_and_named_ones_with_all(engine: Engine) -> None:
    engine("run", "--name", "left", "-v", "/anon", IMAGE, "sh", "-c", "echo 12345 > /anon/f")
    (anonymous,) = engine.names()
    engine("rm", "left")  # without -v: the anonymous volume stays, unused
    engine("volume", "create", "--label", "keep=yes", "named1")
    engine("volume", "create", "named2")
    engine("run", "--name", "user", "-v", "used:/data", IMAGE, "true")
    refused = engine("volume", "prune", input="n\n", stdin=None)
    assert refused.stdout.endswith("[y/N] Total reclaimed space: 0B\n")
    assert anonymous in engine.names()
    pruned = engine("volume", "prune", "-f")
    assert pruned.stdout == f"Deleted Volumes:\n{anonymous}\n\nTotal reclaimed space: 6B\n"
    assert engine.names() == ["named1", "named2", "used"]
    engine("volume", "prune", "-a", "--filter", "label!=keep", input="y\n", stdin=None)
    assert engine.names() == ["named1", "used"]
    assert engine("volume", "prune", "-f", "-a", "--filter", "label=keep=no").stdout.startswith("Total")
    assert engine("volume", "prune", "-f", "--filter", "all=1", "--filter", "label=keep").stdout == (
        "Deleted Volumes:\nnamed1\n\nTotal reclaimed space: 0B\n"
    )
    assert engine.names() == ["used"]
    engine("rm", "user")
    engine("volume", "prune", "-f", "-a")
    assert engine("volume", "ls", "-q").stdout == ""
