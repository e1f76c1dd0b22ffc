"""Unit tests for ketch.image.store: image records, chain IDs, and name/ID lookups."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from ketch.errors import Conflict, InvalidArgument, NotFound
from ketch.image.store import ImageRecord, ImageStore, chain_ids, find, iter_names
from ketch.oci.image import DOCKER_MANIFEST, OCI_MANIFEST


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


BUSYBOX = "docker.io/library/busybox:latest"
ALPINE = "docker.io/library/alpine:3.19"


def record(seed: str, **kw: object) -> ImageRecord:
    values: dict[str, object] = {
        "id": sha("config " + seed),
        "manifest": sha("manifest " + seed),
        "manifest_type": OCI_MANIFEST,
    }
    values.update(kw)
    return ImageRecord(**values)  # type: ignore[arg-type]


def with_id_prefix(prefix: str, seed: str) -> ImageRecord:
    """A record whose ID starts with `prefix` (hex after "sha256:")."""
    hexdigest = hashlib.sha256(seed.encode()).hexdigest()
    return record(seed, id="sha256:" + prefix + hexdigest[len(prefix) :])


@pytest.fixture
def store(tmp_path: os.PathLike[str]) -> ImageStore:
    return ImageStore(os.path.join(tmp_path, "images"))


# --- ImageRecord ---------------------------------------------------------------------------------------


def test_record_json_round_trip() -> None:
    image = record(
        "a",
        manifest_type=DOCKER_MANIFEST,
        chain=(sha("l0"), sha("l1")),
        names=(BUSYBOX,),
        digests=("docker.io/library/busybox@" + sha("m"),),
        index=sha("index"),
        created="2024-01-02T03:04:05Z",
        added="2024-02-03T04:05:06Z",
        size=1234,
    )
    doc = image.to_json()
    assert doc["chain"] == [sha("l0"), sha("l1")]
    assert doc["names"] == [BUSYBOX]
    assert isinstance(doc["digests"], list)
    assert ImageRecord.from_json(json.loads(json.dumps(doc))) == image


def test_record_from_json_defaults() -> None:
    image = ImageRecord.from_json({"id": sha("x"), "manifest": sha("m"), "manifest_type": OCI_MANIFEST})
    assert image.chain == () and image.names == () and image.digests == ()
    assert image.index == "" and image.size == 0


def test_short_id() -> None:
    image = record("a")
    assert image.short_id == image.id[7:19]
    assert len(image.short_id) == 12


# --- chain IDs (OCI image spec, config.md "Layer ChainID") ------------------------------------------------


def _spec_chain_ids(diff_ids: list[str]) -> list[str]:
    out = [diff_ids[0]]
    for diff_id in diff_ids[1:]:
        out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


def test_chain_ids_empty() -> None:
    assert chain_ids([]) == ()


def test_chain_id_of_one_layer_is_its_diff_id() -> None:
    assert chain_ids([sha("l0")]) == (sha("l0"),)


def test_chain_ids_two_layers_by_hand() -> None:
    l0, l1 = sha("l0"), sha("l1")
    expected = "sha256:" + hashlib.sha256((l0 + " " + l1).encode()).hexdigest()
    assert chain_ids((l0, l1)) == (l0, expected)


@pytest.mark.parametrize("count", [2, 3, 5])
def test_chain_ids_match_spec(count: int) -> None:
    diff_ids = [sha(f"layer {i}") for i in range(count)]
    assert chain_ids(diff_ids) == tuple(_spec_chain_ids(diff_ids))
    assert chain_ids(tuple(diff_ids)) == chain_ids(diff_ids)


def test_chain_ids_depend_on_order() -> None:
    a, b = sha("a"), sha("b")
    assert chain_ids([a, b])[1] != chain_ids([b, a])[1]


def test_chain_ids_known_vector() -> None:
    # Independently computed: ChainID(L0|L1) = sha256("sha256:<L0> sha256:<L1>")
    l0 = "sha256:" + "a" * 64
    l1 = "sha256:" + "b" * 64
    digest = hashlib.sha256(f"sha256:{'a' * 64} sha256:{'b' * 64}".encode()).hexdigest()
    l2 = "sha256:" + "c" * 64
    digest2 = hashlib.sha256(f"sha256:{digest} sha256:{'c' * 64}".encode()).hexdigest()
    assert chain_ids([l0, l1, l2]) == (l0, "sha256:" + digest, "sha256:" + digest2)


# --- ImageStore basics -------------------------------------------------------------------------------------


def test_empty_store(store: ImageStore) -> None:
    assert store.all() == []
    with pytest.raises(NotFound, match="No such image: busybox"):
        store.get("busybox")


def test_add_and_get(store: ImageStore) -> None:
    image = store.add(record("bb"), BUSYBOX, "docker.io/library/busybox@" + sha("mbb"))
    assert image.names == (BUSYBOX,)
    assert image.digests == ("docker.io/library/busybox@" + sha("mbb"),)
    assert store.all() == [image]
    assert store.get("busybox") == image


def test_store_persists_across_instances(store: ImageStore) -> None:
    image = store.add(record("bb"), BUSYBOX)
    again = ImageStore(store.root)
    assert again.all() == [image]
    with open(os.path.join(store.root, "images.json"), "rb") as f:
        doc = json.loads(f.read())
    assert doc["images"][0]["names"] == [BUSYBOX]


def test_add_without_name(store: ImageStore) -> None:
    image = store.add(record("a"))
    assert image.names == ()
    assert store.get(image.id) == image


def test_add_merges_existing_record(store: ImageStore) -> None:
    first = store.add(record("bb", index=sha("idx")), BUSYBOX, "docker.io/library/busybox@" + sha("m1"))
    second = store.add(
        record("bb", size=99), "docker.io/library/busybox:1.36", "docker.io/library/busybox@" + sha("m2")
    )
    assert second.id == first.id
    assert second.names == (BUSYBOX, "docker.io/library/busybox:1.36")
    assert second.digests == (
        "docker.io/library/busybox@" + sha("m1"),
        "docker.io/library/busybox@" + sha("m2"),
    )
    assert second.size == 99  # the new record's fields win
    assert second.index == sha("idx")  # a blank index keeps the old one
    assert store.all() == [second]


def test_add_same_name_and_digest_twice_does_not_duplicate(store: ImageStore) -> None:
    digest = "docker.io/library/busybox@" + sha("m1")
    store.add(record("bb"), BUSYBOX, digest)
    image = store.add(record("bb"), BUSYBOX, digest)
    assert image.names == (BUSYBOX,)
    assert image.digests == (digest,)
    assert len(store.all()) == 1


def test_add_moves_name_from_other_image(store: ImageStore) -> None:
    old = store.add(record("old"), BUSYBOX)
    new = store.add(record("new"), BUSYBOX)
    images = {i.id: i for i in store.all()}
    assert images[old.id].names == ()  # dangling now
    assert images[new.id].names == (BUSYBOX,)
    assert store.get("busybox").id == new.id


def test_remove(store: ImageStore) -> None:
    a = store.add(record("a"), BUSYBOX)
    b = store.add(record("b"), ALPINE)
    store.remove(a.id)
    assert store.all() == [b]
    store.remove(a.id)  # removing twice is harmless
    assert store.all() == [b]


def test_iter_names(store: ImageStore) -> None:
    a = store.add(record("a"), BUSYBOX)
    a = store.add(record("a"), "docker.io/library/busybox:1")
    b = store.add(record("b"), ALPINE)
    assert sorted(iter_names(store.all())) == sorted(
        [(BUSYBOX, a), ("docker.io/library/busybox:1", a), (ALPINE, b)]
    )


def test_failed_transaction_is_not_saved(store: ImageStore) -> None:
    store.add(record("a"), BUSYBOX)
    with pytest.raises(RuntimeError), store.transaction() as images:
        images.clear()
        raise RuntimeError("abort")
    assert len(store.all()) == 1


# --- tag / untag -----------------------------------------------------------------------------------------


def test_tag_adds_a_normalised_name(store: ImageStore) -> None:
    image = store.add(record("bb"), BUSYBOX)
    tagged = store.tag("busybox", "mine:v1")
    assert tagged.id == image.id
    assert tagged.names == (BUSYBOX, "docker.io/library/mine:v1")
    assert store.get("mine:v1").id == image.id
    assert store.get("docker.io/library/mine:v1").id == image.id


def test_tag_without_tag_means_latest(store: ImageStore) -> None:
    image = store.add(record("bb"), BUSYBOX)
    store.tag(image.short_id, "localhost:5000/x")
    assert "localhost:5000/x:latest" in store.get(image.id).names


def test_tag_moves_from_one_image_to_another(store: ImageStore) -> None:
    a = store.add(record("a"), BUSYBOX)
    b = store.add(record("b"), ALPINE)
    store.tag(ALPINE, "shared:1")
    assert store.get("shared:1").id == b.id
    store.tag(BUSYBOX, "shared:1")
    assert store.get("shared:1").id == a.id
    images = {i.id: i for i in store.all()}
    assert images[b.id].names == (ALPINE,)
    assert images[a.id].names == (BUSYBOX, "docker.io/library/shared:1")


def test_tag_same_name_twice_keeps_one(store: ImageStore) -> None:
    store.add(record("a"), BUSYBOX)
    store.tag("busybox", "x:1")
    image = store.tag("busybox", "x:1")
    assert image.names.count("docker.io/library/x:1") == 1


def test_tag_unknown_source(store: ImageStore) -> None:
    with pytest.raises(NotFound, match="No such image: nope"):
        store.tag("nope", "x:1")


def test_tag_invalid_target(store: ImageStore) -> None:
    store.add(record("a"), BUSYBOX)
    with pytest.raises(InvalidArgument):
        store.tag("busybox", "Bad Name")


def test_tag_refuses_digest_reference(store: ImageStore) -> None:
    store.add(record("a"), BUSYBOX)
    with pytest.raises(InvalidArgument):
        store.tag("busybox", "other@" + sha("m"))


def test_untag(store: ImageStore) -> None:
    store.add(record("a"), BUSYBOX)
    store.tag("busybox", "x:1")
    image, last = store.untag("busybox")
    assert image.names == ("docker.io/library/x:1",)
    assert not last
    image, last = store.untag("x:1")
    assert image.names == ()
    assert last
    assert store.all()[0].names == ()  # untag keeps the record: the caller removes it


def test_untag_by_id_removes_no_name(store: ImageStore) -> None:
    a = store.add(record("a"), BUSYBOX)
    image, last = store.untag(a.short_id)
    assert image.names == (BUSYBOX,)
    assert not last


def test_untag_unknown(store: ImageStore) -> None:
    with pytest.raises(NotFound):
        store.untag("busybox")


# --- find: Docker's lookup order ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "busybox",
        "busybox:latest",
        "library/busybox",
        "docker.io/busybox",
        "docker.io/library/busybox:latest",
        "index.docker.io/library/busybox",
    ],
)
def test_find_by_short_and_full_name(text: str) -> None:
    image = record("bb", names=(BUSYBOX,))
    other = record("al", names=(ALPINE,))
    assert find([other, image], text) is image


def test_find_name_needs_the_right_tag() -> None:
    image = record("al", names=(ALPINE,))
    with pytest.raises(NotFound, match="No such image: alpine"):
        find([image], "alpine")  # alpine means alpine:latest
    assert find([image], "alpine:3.19") is image


def test_find_by_repo_digest() -> None:
    manifest = sha("bb manifest")
    image = record("bb", names=(BUSYBOX,), digests=(f"docker.io/library/busybox@{manifest}",))
    other = record("al", names=(ALPINE,))
    assert find([other, image], f"busybox@{manifest}") is image
    assert find([other, image], f"docker.io/library/busybox@{manifest}") is image
    assert find([other, image], f"busybox:latest@{manifest}") is image


def test_find_by_manifest_digest() -> None:
    image = record("bb", names=(BUSYBOX,))
    assert find([image], f"busybox@{image.manifest}") is image


def test_find_unknown_digest() -> None:
    image = record("bb", names=(BUSYBOX,), digests=(f"docker.io/library/busybox@{sha('m')}",))
    text = f"busybox@{sha('other')}"
    with pytest.raises(NotFound, match=f"No such image: {text}"):
        find([image], text)


def test_find_digest_of_another_repository() -> None:
    busybox = record("bb", names=(BUSYBOX,))
    with pytest.raises(NotFound):
        find([busybox], f"alpine@{busybox.manifest}")


def test_find_by_full_id_and_prefixes() -> None:
    image = with_id_prefix("abcdef012345", "one")
    other = with_id_prefix("123456abcdef", "two")
    images = [other, image]
    hexdigest = image.id[7:]
    assert find(images, image.id) is image
    assert find(images, hexdigest) is image
    assert find(images, hexdigest[:12]) is image
    assert find(images, "sha256:abcd") is image
    assert find(images, "sha256:a") is image
    assert find(images, image.short_id) is image


def test_find_ambiguous_prefix() -> None:
    a = with_id_prefix("abcdef000000", "one")
    b = with_id_prefix("abcdef111111", "two")
    with pytest.raises(Conflict, match="ambiguous"):
        find([a, b], "sha256:abcdef")
    assert find([a, b], "sha256:abcdef0") is a
    assert find([a, b], "abcdef111111") is b


def test_find_twelve_hex_ambiguous() -> None:
    a = with_id_prefix("abcdef0123450", "one")
    b = with_id_prefix("abcdef0123451", "two")
    with pytest.raises(Conflict):
        find([a, b], "abcdef012345")


@pytest.mark.parametrize("text", ["x", "sha256:ffff", "ffffffffffff", "nope:1", "f" * 64])
def test_find_unknown(text: str) -> None:
    image = with_id_prefix("abcdef012345", "one")
    with pytest.raises(NotFound, match=f"^No such image: {text}$"):
        find([image], text)


def test_find_short_hex_is_not_an_id() -> None:
    image = with_id_prefix("abcdef012345", "one")
    with pytest.raises(NotFound):
        find([image], "abcdef")  # bare hex needs 12 digits; shorter is a name


def test_find_name_beats_id_prefix() -> None:
    by_id = with_id_prefix("abcdef012345", "one")
    by_name = record("named", names=("docker.io/library/abcdef012345:latest",))
    assert find([by_id, by_name], "abcdef012345") is by_name
    assert find([by_id, by_name], "sha256:abcdef012345") is by_id


def test_find_invalid_reference_is_not_found() -> None:
    image = record("bb", names=(BUSYBOX,))
    with pytest.raises(NotFound, match="No such image: Bad Name"):
        find([image], "Bad Name")
