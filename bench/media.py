"""What the no-orphan protocol costs, as JSON on stdout.

- store: milliseconds to store one stored-generation-sized blob (about 10 s of 24 kHz 16-bit
  WAV) in a committed transaction, the way the services do it (stage, upsert the row, commit,
  publish), median of several runs, next to a bare `BlobStore.put` of the same bytes;
- sweep: seconds the start-up sweep takes over N referenced blobs plus a few leftovers (the
  start-up delay it adds on a store of that size), and what it removed.

Run: .venv/bin/python bench/media.py [--blobs N] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from qwen3_tts_server.db.models import User, Voice, utcnow
from qwen3_tts_server.db.session import make_engine, make_session_factory, transaction, upgrade
from qwen3_tts_server.services.media import MediaLibrary
from qwen3_tts_server.storage.blobs import BlobStore

BLOB_BYTES = 10 * 24_000 * 2


def _library(root: Path) -> tuple[MediaLibrary, sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{root / 'db.sqlite3'}")
    upgrade(engine)
    sessions = make_session_factory(engine)
    return MediaLibrary(sessions, BlobStore(root / "blobs")), sessions


def _store_ms(root: Path, repeats: int) -> dict[str, float]:
    media, sessions = _library(root)
    staged, bare = [], []
    for _ in range(repeats):
        data = os.urandom(BLOB_BYTES)
        started = time.perf_counter()
        with transaction(sessions) as session:
            media.add(session, data, "audio/wav", 10.0)
        staged.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        media.blobs.put(os.urandom(BLOB_BYTES))
        bare.append((time.perf_counter() - started) * 1000)
    return {
        "staged_commit_publish_ms": round(statistics.median(staged), 2),
        "bare_put_ms": round(statistics.median(bare), 2),
    }


def _sweep(root: Path, count: int) -> dict[str, float | int]:
    media, sessions = _library(root)
    with transaction(sessions) as session:
        session.add(User(name="bench"))
        session.flush()
        for index in range(count):
            key = media.add(session, index.to_bytes(8, "big") * 64, "audio/wav", 1.0)
            session.add(
                Voice(
                    user_id=1,
                    name=f"v{index}",
                    kind="clone",
                    ref_text="x",
                    prompt=b"",
                    ref_audio_sha256=key,
                )
            )
    leftovers = [media.blobs.stage(os.urandom(64)) for _ in range(count // 100 + 1)]
    orphans = [media.blobs.put(os.urandom(64)) for _ in range(count // 100 + 1)]
    past = time.time() - 3600
    for path in [item.path for item in leftovers] + [media.blobs.path(key) for key in orphans]:
        os.utime(path, (past, past))
    started = time.perf_counter()
    swept = media.sweep(utcnow() - timedelta(seconds=60))
    return {
        "referenced_blobs": count,
        "seconds": round(time.perf_counter() - started, 3),
        "files_deleted": swept.files_deleted,
        "rows_deleted": swept.rows_deleted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blobs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        result = {
            "store": _store_ms(Path(first), args.repeats),
            "sweep": _sweep(Path(second), args.blobs),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
