"""Unit tests for ketch.image.content: the content-addressed blob store and its resumable writer."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import time

import pytest

from ketch.errors import CorruptContent, InvalidArgument, NotFound
from ketch.image.content import ContentStore
from ketch.oci import digest as _digest

SRC = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "src")
DATA = b"hello, content store\n" * 100


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ingest_files(store: ContentStore) -> list[str]:
    return sorted(os.listdir(os.path.join(store.root, "ingest")))


def data_files(store: ContentStore) -> list[str]:
    return [n for n in ingest_files(store) if n.endswith(".data")]


@pytest.fixture
def store(tmp_path: os.PathLike[str]) -> ContentStore:
    return ContentStore(os.path.join(tmp_path, "content"))


# --- put / read --------------------------------------------------------------------------------------


def test_layout_created(store: ContentStore) -> None:
    assert os.path.isdir(os.path.join(store.root, "blobs", "sha256"))
    assert os.path.isdir(os.path.join(store.root, "ingest"))


def test_put_read_round_trip(store: ContentStore) -> None:
    digest = store.put(DATA)
    assert digest == sha256(DATA)
    assert store.has(digest)
    assert store.size(digest) == len(DATA)
    assert store.read(digest) == DATA
    with store.open(digest) as f:
        assert f.read() == DATA
    assert store.path(digest) == os.path.join(store.root, "blobs", "sha256", digest[7:])
    assert store.verify(digest) is None
    assert data_files(store) == []


def test_put_with_given_digest(store: ContentStore) -> None:
    assert store.put(DATA, sha256(DATA)) == sha256(DATA)
    assert store.read(sha256(DATA)) == DATA


def test_put_with_wrong_digest_refused(store: ContentStore) -> None:
    wrong = sha256(b"something else")
    with pytest.raises(CorruptContent):
        store.put(DATA, wrong)
    assert not store.has(wrong)
    assert data_files(store) == []


def test_put_twice_is_idempotent(store: ContentStore) -> None:
    first = store.put(DATA)
    mtime = os.stat(store.path(first)).st_mtime_ns
    assert store.put(DATA) == first
    assert os.stat(store.path(first)).st_mtime_ns == mtime
    assert list(store.digests()) == [first]


def test_put_empty_blob(store: ContentStore) -> None:
    digest = store.put(b"")
    assert digest == sha256(b"")
    assert store.read(digest) == b""
    assert store.size(digest) == 0


def test_blob_is_read_only(store: ContentStore) -> None:
    digest = store.put(DATA)
    assert stat.S_IMODE(os.stat(store.path(digest)).st_mode) == 0o444


def test_missing_blob(store: ContentStore) -> None:
    digest = sha256(b"absent")
    assert not store.has(digest)
    with pytest.raises(NotFound):
        store.size(digest)
    with pytest.raises(NotFound):
        store.open(digest)
    with pytest.raises(NotFound):
        store.read(digest)


def test_read_verifies_on_every_read(store: ContentStore) -> None:
    digest = store.put(DATA)
    path = store.path(digest)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"J")  # same size, different bytes
    with pytest.raises(CorruptContent, match="digest mismatch"):
        store.read(digest)
    problem = store.verify(digest)
    assert problem is not None
    assert digest in problem


def test_verify_reports_truncated_blob(store: ContentStore) -> None:
    digest = store.put(DATA)
    path = store.path(digest)
    os.chmod(path, 0o644)
    os.truncate(path, 10)
    assert store.verify(digest) is not None
    with pytest.raises(CorruptContent):
        store.read(digest)


def test_read_max_size(store: ContentStore) -> None:
    digest = store.put(DATA)
    with pytest.raises(CorruptContent, match="larger than"):
        store.read(digest, max_size=len(DATA) - 1)
    assert store.read(digest, max_size=len(DATA)) == DATA


def test_delete(store: ContentStore) -> None:
    digest = store.put(DATA)
    store.delete(digest)
    assert not store.has(digest)
    store.delete(digest)  # deleting a missing blob is fine


def test_digests_lists_sorted(store: ContentStore) -> None:
    blobs = [b"a", b"b", b"c", b"d"]
    digests = [store.put(b) for b in blobs]
    assert list(store.digests()) == sorted(digests)
    store.delete(digests[0])
    assert list(store.digests()) == sorted(digests[1:])


def test_digests_ignores_hidden_files(store: ContentStore) -> None:
    digest = store.put(DATA)
    open(os.path.join(store.root, "blobs", "sha256", ".tmp"), "wb").close()
    assert list(store.digests()) == [digest]


def test_empty_store_lists_nothing(store: ContentStore) -> None:
    assert list(store.digests()) == []


@pytest.mark.parametrize(
    "bad",
    [
        "sha256",
        "sha256:",
        "sha256:abc",
        "md5:" + "0" * 32,
        "sha256:" + "A" * 64,
        "sha256:" + "g" * 64,
        "sha256:" + "0" * 63,
        "sha256:" + "0" * 65,
        "sha256:../../etc/passwd",
        "0" * 64,
    ],
)
def test_invalid_digest_strings(store: ContentStore, bad: str) -> None:
    with pytest.raises(InvalidArgument):
        store.path(bad)
    with pytest.raises(InvalidArgument):
        store.has(bad)
    with pytest.raises(InvalidArgument):
        store.writer(bad, 1)
    with pytest.raises(InvalidArgument):
        store.put(DATA, bad)
    with pytest.raises(InvalidArgument):
        store.verify(bad)


def test_empty_digest_is_invalid_except_for_put(store: ContentStore) -> None:
    with pytest.raises(InvalidArgument):
        store.path("")
    with pytest.raises(InvalidArgument):
        store.writer("", 1)
    assert store.put(DATA, "") == sha256(DATA)  # "" asks put() to compute the digest


def test_sha512_blob(store: ContentStore) -> None:
    digest = _digest.of(DATA, "sha512")
    assert store.put(DATA, digest) == digest
    assert store.read(digest) == DATA
    assert digest in list(store.digests())


def test_read_verifies_sha512_blobs_too(store: ContentStore) -> None:
    digest = store.put(DATA, _digest.of(DATA, "sha512"))
    os.chmod(store.path(digest), 0o644)
    with open(store.path(digest), "r+b") as f:
        f.write(b"J")
    with pytest.raises(CorruptContent, match="digest mismatch"):
        store.read(digest)


def test_read_loads_no_openssl(tmp_path: os.PathLike[str]) -> None:
    """read() checks small documents with CPython's own SHA-2: `ketch run` never pays for
    OpenSSL (~4 ms to load) just to verify a manifest and a config."""
    root = os.path.join(tmp_path, "content")
    digest = ContentStore(root).put(DATA)
    code = (
        "import sys\n"
        "from ketch.image.content import ContentStore\n"
        f"assert ContentStore({root!r}).read({digest!r}) == {DATA!r}\n"
        "assert '_hashlib' not in sys.modules and 'hashlib' not in sys.modules, sorted(sys.modules)\n"
    )
    env = dict(os.environ, PYTHONPATH=SRC)
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --- the writer ---------------------------------------------------------------------------------------


def test_writer_streams_in_chunks(store: ContentStore) -> None:
    digest = sha256(DATA)
    with store.writer(digest, len(DATA)) as w:
        assert not w.done
        assert w.offset == 0
        for i in range(0, len(DATA), 100):
            assert w.write(DATA[i : i + 100]) == len(DATA[i : i + 100])
        assert w.offset == len(DATA)
        assert not store.has(digest)  # invisible until commit
        w.commit()
        assert w.done
    assert store.read(digest) == DATA
    assert ingest_files(store) == []  # the partial became the blob; the lock file is gone


def test_writer_accepts_memoryview(store: ContentStore) -> None:
    digest = sha256(DATA)
    with store.writer(digest, None) as w:
        w.write(memoryview(DATA))
        w.commit()
    assert store.read(digest) == DATA


def test_writer_unknown_size(store: ContentStore) -> None:
    digest = sha256(DATA)
    with store.writer(digest, None) as w:
        w.write(DATA)
        w.commit()
    assert store.size(digest) == len(DATA)


@pytest.mark.parametrize("size", [len(DATA) + 1, len(DATA) * 2])
def test_writer_wrong_size_too_small_data(store: ContentStore, size: int) -> None:
    digest = sha256(DATA)
    with store.writer(digest, size) as w:
        w.write(DATA)
        with pytest.raises(CorruptContent, match="bytes"):
            w.commit()
        assert not w.done
    assert not store.has(digest)
    assert data_files(store) == []


def test_writer_declared_size_smaller_than_content(store: ContentStore) -> None:
    digest = sha256(DATA)
    with store.writer(digest, len(DATA) - 1) as w:
        w.write(DATA[: len(DATA) - 1])
        with pytest.raises(CorruptContent):
            w.commit()
    assert not store.has(digest)
    assert data_files(store) == []


def test_writer_wrong_bytes(store: ContentStore) -> None:
    digest = sha256(DATA)
    with store.writer(digest, len(DATA)) as w:
        w.write(b"X" * len(DATA))
        with pytest.raises(CorruptContent, match="digest mismatch"):
            w.commit()
    assert not store.has(digest)
    assert data_files(store) == []
    assert list(store.digests()) == []


def test_writer_too_many_bytes_fails_at_write(store: ContentStore) -> None:
    digest = sha256(DATA)
    with store.writer(digest, len(DATA)) as w:
        w.write(DATA[:10])
        with pytest.raises(CorruptContent, match="more than"):
            w.write(DATA[10:] + b"extra")
    assert not store.has(digest)


def test_writer_too_many_bytes_in_one_write(store: ContentStore) -> None:
    digest = sha256(DATA)
    with store.writer(digest, len(DATA)) as w, pytest.raises(CorruptContent):
        w.write(DATA + b"!")
    assert not store.has(digest)


def test_resume_after_uncommitted_exit(store: ContentStore) -> None:
    digest, half = sha256(DATA), len(DATA) // 2
    with store.writer(digest, len(DATA)) as w:
        w.write(DATA[:half])
    # no commit: the partial stays for the next attempt
    assert not store.has(digest)
    assert len(data_files(store)) == 1
    with store.writer(digest, len(DATA)) as w:
        assert not w.done
        assert w.offset == half
        w.write(DATA[w.offset :])
        w.commit()
    assert store.read(digest) == DATA
    assert ingest_files(store) == []


def test_resume_after_exception_inside_with(store: ContentStore) -> None:
    digest, half = sha256(DATA), len(DATA) // 2

    class Crash(Exception):
        pass

    with pytest.raises(Crash), store.writer(digest, len(DATA)) as w:
        w.write(DATA[:half])
        raise Crash
    assert not store.has(digest)
    with store.writer(digest, len(DATA)) as w:
        assert w.offset == half
        w.write(DATA[half:])
        w.commit()
    assert store.verify(digest) is None


def test_resume_with_unknown_size(store: ContentStore) -> None:
    digest, third = sha256(DATA), len(DATA) // 3
    with store.writer(digest, None) as w:
        w.write(DATA[:third])
    with store.writer(digest, None) as w:
        assert w.offset == third
        w.write(DATA[third:])
        w.commit()
    assert store.read(digest) == DATA


def test_resume_of_corrupt_partial_is_discarded_at_commit(store: ContentStore) -> None:
    digest, half = sha256(DATA), len(DATA) // 2
    with store.writer(digest, len(DATA)) as w:
        w.write(b"Z" * half)  # a bad first attempt
    with store.writer(digest, len(DATA)) as w:
        assert w.offset == half
        w.write(DATA[half:])
        with pytest.raises(CorruptContent):
            w.commit()
    assert data_files(store) == []
    with store.writer(digest, len(DATA)) as w:  # a third attempt starts from scratch
        assert w.offset == 0
        w.write(DATA)
        w.commit()
    assert store.read(digest) == DATA


def test_partial_longer_than_size_starts_over(store: ContentStore) -> None:
    digest = sha256(DATA)
    with store.writer(digest, None) as w:
        w.write(DATA + b"junk")
    with store.writer(digest, len(DATA)) as w:
        assert w.offset == 0
        w.write(DATA)
        w.commit()
    assert store.read(digest) == DATA


def test_second_writer_of_committed_digest_is_done(store: ContentStore) -> None:
    digest = store.put(DATA)
    with store.writer(digest, len(DATA)) as w:
        assert w.done
    assert data_files(store) == []  # no partial opened for a blob that exists
    assert store.read(digest) == DATA


def test_writer_lock_is_released_on_exit(store: ContentStore) -> None:
    digest = sha256(DATA)
    for i in range(3):  # re-entering would deadlock if the flock were kept
        with store.writer(digest, len(DATA)) as w:
            assert w.offset == i
            w.write(DATA[i : i + 1])


# --- two processes, one digest --------------------------------------------------------------------------

_WRITER = """
import sys
sys.path.insert(0, sys.argv[1])
from ketch.image.content import ContentStore
store = ContentStore(sys.argv[2])
data = open(sys.argv[3], "rb").read()
digest = sys.argv[4]
mode = sys.argv[5]
with store.writer(digest, len(data)) as w:
    print("entered", w.done, w.offset, flush=True)
    if not w.done:
        half = len(data) // 2
        w.write(data[w.offset:half])
        if mode == "hold":
            sys.stdin.readline()
        w.write(data[w.offset:])
        w.commit()
print("exited", flush=True)
"""


def _spawn(store: ContentStore, data: bytes, mode: str) -> subprocess.Popen[str]:
    source = os.path.join(os.path.dirname(store.root), "source.bin")
    if not os.path.exists(source):
        with open(source, "wb") as f:
            f.write(data)
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, SRC, store.root, source, sha256(data), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_second_process_waits_then_finds_done(store: ContentStore) -> None:
    data = os.urandom(64 << 10)
    first = _spawn(store, data, "hold")
    assert first.stdout is not None and first.stdin is not None
    assert first.stdout.readline().split() == ["entered", "False", "0"]
    second = _spawn(store, data, "go")
    time.sleep(0.3)
    assert second.poll() is None  # blocked on the digest's lock
    first.stdin.write("\n")
    first.stdin.flush()
    out1, _ = first.communicate(timeout=30)
    out2, _ = second.communicate(timeout=30)
    assert first.returncode == 0 and second.returncode == 0
    assert out1.split() == ["exited"]
    assert out2.split() == ["entered", "True", "0", "exited"]
    assert store.verify(sha256(data)) is None
    assert list(store.digests()) == [sha256(data)]
    assert ingest_files(store) == []


def test_concurrent_puts_end_with_one_valid_blob(store: ContentStore) -> None:
    data = os.urandom(256 << 10)
    procs = [_spawn(store, data, "go") for _ in range(4)]
    outs = [p.communicate(timeout=30)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    committed = [o for o in outs if o.split()[:2] == ["entered", "False"]]
    assert len(committed) == 1  # the others waited for the lock and found the blob
    assert list(store.digests()) == [sha256(data)]
    assert store.verify(sha256(data)) is None
    assert store.read(sha256(data), max_size=len(data)) == data
    assert data_files(store) == []
