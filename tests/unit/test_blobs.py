"""The content-addressed blob store, on real files in a temporary directory."""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qwen3_tts_server.storage.blobs import BlobNotFound, BlobStore, InvalidBlobKey

DATA = b"RIFF....WAVEfmt some audio bytes"
KEY = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_put_stores_by_sha256_in_a_fan_out_layout(store: BlobStore) -> None:
    key = store.put(DATA)

    assert key == KEY
    assert store.path(key) == store.root / KEY[:2] / KEY[2:4] / KEY
    assert files_under(store.root) == [store.path(key)]
    assert store.read(key) == DATA
    assert store.size(key) == len(DATA)
    assert store.exists(key)
    with store.open(key) as blob:
        assert blob.read() == DATA


def test_identical_bytes_are_one_file_and_are_not_rewritten(store: BlobStore) -> None:
    first = store.put(DATA)
    before = store.path(first).stat().st_mtime_ns

    assert store.put(bytes(DATA)) == first
    assert files_under(store.root) == [store.path(first)]
    assert store.path(first).stat().st_mtime_ns == before


def test_concurrent_puts_of_the_same_bytes_leave_one_complete_file(store: BlobStore) -> None:
    data = os.urandom(1 << 20)

    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = set(pool.map(lambda _: store.put(data), range(16)))

    assert keys == {hashlib.sha256(data).hexdigest()}
    assert files_under(store.root) == [store.path(keys.pop())]


def test_a_failed_write_leaves_nothing_behind(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)

    with pytest.raises(OSError, match="No space"):
        store.put(DATA)
    assert files_under(store.root) == []
    assert not store.exists(KEY)


def test_retire_is_idempotent(store: BlobStore) -> None:
    key = store.put(DATA)

    assert store.retire(key, nothing_wants) is True
    assert store.retire(key, nothing_wants) is False
    assert not store.exists(key)
    assert files_under(store.root) == []


def nothing_wants(_key: str) -> bool:
    return False


def test_staged_bytes_have_no_final_name_until_published(store: BlobStore) -> None:
    staged = store.stage(DATA)

    assert staged.key == KEY
    assert not store.exists(KEY)
    assert staged.path.read_bytes() == DATA
    store.publish(staged)
    assert files_under(store.root) == [store.path(KEY)]
    assert store.read(KEY) == DATA


def test_discarded_bytes_leave_nothing(store: BlobStore) -> None:
    store.discard(store.stage(DATA))

    assert files_under(store.root) == []


def test_publishing_bytes_already_there_drops_the_staged_copy(store: BlobStore) -> None:
    store.put(DATA)
    store.publish(store.stage(DATA))

    assert files_under(store.root) == [store.path(KEY)]


def test_publishing_after_a_sweep_took_the_staged_file_writes_the_bytes(store: BlobStore) -> None:
    staged = store.stage(DATA)
    staged.path.unlink()  # another replica's sweep found it old and without a row

    store.publish(staged)
    assert store.read(KEY) == DATA


def test_retire_puts_the_file_back_when_a_row_names_it_again(store: BlobStore) -> None:
    """A writer that committed a row for the same bytes while the file was being removed:
    its publish may come before or after the removal's check, the file survives either way."""
    store.put(DATA)
    assert store.retire(KEY, lambda key: True) is False
    assert files_under(store.root) == [store.path(KEY)]

    staged = store.stage(DATA)

    def committed_and_published_meanwhile(key: str) -> bool:
        store.publish(staged)
        return True

    assert store.retire(KEY, committed_and_published_meanwhile) is False
    assert files_under(store.root) == [store.path(KEY)]


def test_leftovers_are_only_files_older_than_the_cut_off(store: BlobStore) -> None:
    old, young = store.stage(DATA), store.stage(b"other bytes")
    published = store.put(b"published bytes")
    partial = store.path(published).parent / ".tmp-abc"
    partial.write_bytes(b"half")
    cut_off = time.time() - 60
    for path in (old.path, store.path(published), partial):
        os.utime(path, (cut_off - 1, cut_off - 1))

    found = {(item.kind, item.path, item.key) for item in store.leftovers(cut_off)}
    assert found == {
        ("staged", old.path, KEY),
        ("blob", store.path(published), published),
        ("partial", partial, None),
    }
    assert young.path.exists()


def test_recover_publishes_what_a_row_names_and_deletes_the_rest(store: BlobStore) -> None:
    kept, dropped = store.stage(DATA), store.stage(b"no row names these")
    partial = store.root / "ab" / "cd" / ".tmp-xyz"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half")
    orphan = store.put(b"published, then its row went")
    wanted = {KEY}.__contains__

    for item in list(store.leftovers(time.time() + 1)):
        store.recover(item, wanted)

    assert files_under(store.root) == [store.path(KEY)]
    assert not dropped.path.exists() and not kept.path.exists() and not store.exists(orphan)


def test_recovering_a_staged_file_another_process_settled_writes_nothing(
    store: BlobStore,
) -> None:
    staged = store.stage(DATA)
    [leftover] = store.leftovers(time.time() + 1)
    staged.path.unlink()

    store.recover(leftover, lambda key: True)
    assert files_under(store.root) == []


def test_missing_blob(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        store.read(KEY)
    with pytest.raises(BlobNotFound):
        store.size(KEY)


@pytest.mark.parametrize(
    "key",
    [
        "../../etc/passwd",
        "/" + KEY[1:],
        KEY.upper(),
        KEY[:-1],
        KEY + "0",
        KEY[:-2] + "/x",
        "",
    ],
)
def test_keys_that_are_not_sha256_hex_are_refused(store: BlobStore, key: str) -> None:
    for operation in (store.path, store.exists, store.read):
        with pytest.raises(InvalidBlobKey):
            operation(key)
