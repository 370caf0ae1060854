"""The content-addressed blob store, on real files in a temporary directory."""

from __future__ import annotations

import hashlib
import os
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


def test_delete_is_idempotent(store: BlobStore) -> None:
    key = store.put(DATA)

    assert store.delete(key) is True
    assert store.delete(key) is False
    assert not store.exists(key)
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
    for operation in (store.path, store.exists, store.read, store.delete):
        with pytest.raises(InvalidBlobKey):
            operation(key)
