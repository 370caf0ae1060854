"""No file without a row, no row left open: rollbacks, races with deletion, and restarts.

Everything runs through the real app on real SQLite files and the tiny real model. "Orphan"
means a file under MEDIA_DIR that no committed row names: after each scenario the media
folder must hold exactly the files of the referenced `audio_blobs` rows, nothing staged,
nothing trashed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import threading
import time
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from support import AppFactory, assert_no_orphans, clone_voice, media_files, new_user_key

from qwen3_tts_server.engine.base import Engine, EngineError, Item
from qwen3_tts_server.engine.step.stepper import Admission
from qwen3_tts_server.storage.blobs import BlobStore
from qwen3_tts_server.values import Sampling

HOLD_LIMIT_S = 60.0


class HoldingEngine:
    """The session engine; after `hold_next()`, its next admission (and with it the whole step
    loop) waits for `proceed`."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.armed = False
        self.holding = threading.Event()
        self.proceed = threading.Event()

    def hold_next(self) -> None:
        self.armed = True

    def prepare(self, item: Item, sampling: Sampling, budget: int) -> Admission:
        if self.armed:
            self.armed = False
            self.holding.set()
            if not self.proceed.wait(HOLD_LIMIT_S):
                raise EngineError("the test never released the held call")
        return self.inner.prepare(item, sampling, budget)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_deleting_a_voice_during_its_own_stored_batch_leaves_no_orphan(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    """The batch finishes (it was the caller's voice when accepted) and is charged; the voice's
    reference goes; every generated file is named by a stored generation."""
    held = HoldingEngine(engine)
    client = make_client(load_engine=lambda: held)
    _, headers = new_user_key(client)
    voice_id = clone_voice(client, headers)
    texts = [f"Sentence number {index}." for index in range(4)]
    held.hold_next()
    with ThreadPoolExecutor(1) as pool:
        batch = pool.submit(
            client.post,
            "/batchtts",
            headers=headers,
            json={"texts": texts, "voice_id": voice_id, "store": True},
        )
        assert held.holding.wait(HOLD_LIMIT_S)
        assert client.delete(f"/voices/{voice_id}", headers=headers).status_code == 200
        held.proceed.set()
        response = batch.result(timeout=HOLD_LIMIT_S)

    assert response.status_code == 200, response.text
    data_dir = tmp_path / "data"
    assert_no_orphans(data_dir)
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        generation_ids = json.loads(archive.read("manifest.json"))["generation_ids"]
    stored = [client.get(f"/getstored/{gid}", headers=headers) for gid in generation_ids]
    assert [answer.status_code for answer in stored] == [200] * len(texts)
    assert len(media_files(data_dir)) == len(texts)  # the reference went with its voice
    usage = client.get("/usage", headers=headers).json()
    tokens = int(response.headers["X-Tokens-Used"])
    assert usage["tokens_used_batch"] == tokens > 0
    assert usage["batch_calls"] == 1


def test_a_transaction_that_fails_after_staging_audio_leaves_no_file(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    """A database failure after the audio was written (here: a trigger refuses the voice's use
    count) rolls back the call, and with it the file: nothing stored, nothing charged."""
    client = make_client(load_engine=lambda: engine)
    _, headers = new_user_key(client)
    voice_id = clone_voice(client, headers)
    data_dir = tmp_path / "data"
    before = media_files(data_dir)
    with sqlite3.connect(data_dir / "db.sqlite3") as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE OF use_count ON voices "
            "BEGIN SELECT RAISE(ABORT, 'simulated database failure'); END"
        )

    response = client.post(
        "/tts", headers=headers, json={"text": "Keep me.", "voice_id": voice_id, "store": True}
    )

    assert response.status_code == 500
    assert media_files(data_dir) == before
    assert_no_orphans(data_dir)
    assert client.get("/usage", headers=headers).json()["tokens_used_tts"] == 0


def _age(paths: Sequence[Path], seconds: float) -> None:
    past = time.time() - seconds
    for path in paths:
        os.utime(path, (past, past))


def test_restart_settles_open_rows_and_sweeps_media_past_the_grace_period(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    """What a killed process leaves: a stream's row still "streaming", audio staged for a
    transaction that never committed, a file published before its row (the old order), and
    audio whose row committed but whose file was never published. A replica starting within
    the grace period touches none of it (another replica may be working on it); a restart past
    it (here a single server with no grace period) settles the row as interrupted and free,
    deletes what no row names and publishes what one does."""
    data_dir = tmp_path / "data"
    client = make_client(load_engine=lambda: engine, data_dir=data_dir)
    user_id, headers = new_user_key(client)
    voice_id = clone_voice(client, headers)
    kept = client.post(
        "/tts", headers=headers, json={"text": "Kept.", "voice_id": voice_id, "store": True}
    )
    assert kept.status_code == 200
    usage_before = client.get("/usage", headers=headers).json()
    open_id = _insert_generation(data_dir, user_id, voice_id, "streaming", 0)
    blobs = BlobStore(data_dir / "media" / "blobs")
    abandoned = _stage_by_hand(blobs.root, b"staged for a transaction that never committed")
    early = blobs.path(blobs.put(b"published before its row, which never came"))
    unpublished = _stage_by_hand(blobs.root, b"its row committed, the process died before")
    _insert_generation(data_dir, user_id, voice_id, "ok", 3, unpublished.key)
    leftovers = [abandoned.path, early, unpublished.path]
    client.__exit__(None, None, None)

    within_grace = make_client(load_engine=lambda: engine, data_dir=data_dir, recovery_grace_s=600)
    assert all(path.exists() for path in leftovers)
    assert _status(data_dir, open_id) == ("streaming", 0)
    within_grace.__exit__(None, None, None)

    _age(leftovers, 3600)
    restarted = make_client(load_engine=lambda: engine, data_dir=data_dir, recovery_grace_s=0)
    assert _status(data_dir, open_id) == ("interrupted", 0)
    assert not abandoned.path.exists() and not early.exists() and not unpublished.path.exists()
    assert blobs.path(unpublished.key).exists()
    assert_no_orphans(data_dir)
    assert not any(name.startswith((".staging", ".trash")) for name in media_files(data_dir))
    usage = restarted.get("/usage", headers=headers).json()
    assert usage["tokens_used_tts"] == usage_before["tokens_used_tts"] + 3
    stored = restarted.get(f"/getstored/{kept.headers['X-Generation-Id']}", headers=headers)
    assert stored.status_code == 200


@dataclass(frozen=True)
class _Staged:
    key: str
    path: Path


def _stage_by_hand(root: Path, data: bytes) -> _Staged:
    """Bytes as `BlobStore.stage` leaves them (`.staging/<sha256>.<random>`), written here so
    the scenario is the same whatever the store's code does."""
    key = hashlib.sha256(data).hexdigest()
    path = root / ".staging" / f"{key}.crashed"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return _Staged(key, path)


def _insert_generation(
    data_dir: Path, user_id: int, voice_id: int, status: str, tokens: int, key: str | None = None
) -> int:
    """A generation row as a dead process committed it (with its audio row when `key`)."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    with sqlite3.connect(data_dir / "db.sqlite3") as db:
        if key is not None:
            db.execute(
                "INSERT INTO audio_blobs (sha256, media_type, size_bytes, duration_s, created_at) "
                "VALUES (?, 'audio/wav', 1, 1.0, ?)",
                (key, now),
            )
        cursor = db.execute(
            "INSERT INTO generations (user_id, voice_id, format, language, temperature, chars, "
            "tokens_used, latency_ms, audio_seconds, store, status, audio_sha256, created_at) "
            "VALUES (?, ?, 'wav', 'english', 1.0, 3, ?, 0, 0, ?, ?, ?, ?)",
            (user_id, voice_id, tokens, key is not None, status, key, now),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid


def _status(data_dir: Path, generation_id: int) -> tuple[str, int]:
    with sqlite3.connect(data_dir / "db.sqlite3") as db:
        status, tokens = db.execute(
            "SELECT status, tokens_used FROM generations WHERE id = ?", (generation_id,)
        ).fetchone()
    return status, tokens


def test_with_a_grace_period_recovery_repeats_while_the_server_runs(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    """Replicas: a crashed replica's leftovers are settled by the live ones, not only at the
    next start. A stream row left open and audio staged by a dead process, both older than
    the grace period, are settled without any restart."""
    data_dir = tmp_path / "data"
    client = make_client(load_engine=lambda: engine, recovery_grace_s=0.5)
    user_id, headers = new_user_key(client)
    voice_id = clone_voice(client, headers)
    open_id = _insert_generation(data_dir, user_id, voice_id, "streaming", 0)
    staged = _stage_by_hand(data_dir / "media" / "blobs", b"staged by a replica that died")

    deadline = time.monotonic() + HOLD_LIMIT_S
    while _status(data_dir, open_id)[0] == "streaming" or staged.path.exists():
        assert time.monotonic() < deadline, "the running server never recovered"
        time.sleep(0.1)
    assert _status(data_dir, open_id) == ("interrupted", 0)
    assert_no_orphans(data_dir)
