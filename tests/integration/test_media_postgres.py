"""Shared audio across replicas on real PostgreSQL: a release racing a writer of the same bytes.

Two replicas, one voice each: on one, the last voice using some reference audio is deleted, so
its bytes are released; on the other, a new voice is being cloned from the very same bytes, its
transaction not committed yet. The release must wait for that writer and then keep the row and
the file; deleting them would leave the new voice without its audio (`ON DELETE SET NULL`).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import Engine, text

from qwen3_tts_server.db.models import User, Voice, utcnow
from qwen3_tts_server.db.session import make_engine, make_session_factory, transaction, upgrade
from qwen3_tts_server.services.media import MediaLibrary
from qwen3_tts_server.storage.blobs import BlobStore

DATA = b"RIFF....WAVEfmt reference audio shared by two voices"
WAIT_LIMIT_S = 60.0


def _voice(user_id: int, name: str, key: str) -> Voice:
    return Voice(
        user_id=user_id,
        name=name,
        kind="clone",
        ref_text="x",
        prompt=b"",
        ref_audio_sha256=key,
    )


def _wait_for_a_lock_wait(engine: Engine) -> None:
    """Until some backend of this database waits on a lock (the release, blocked by the writer)."""
    deadline = time.monotonic() + WAIT_LIMIT_S
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    while True:
        with engine.connect() as connection:
            if connection.execute(query).scalar():
                return
        assert time.monotonic() < deadline, "the release never waited for the writer"
        time.sleep(0.05)


def test_a_release_racing_a_writer_of_the_same_bytes_keeps_them(
    postgres_url: str, tmp_path: Path
) -> None:
    engine = make_engine(postgres_url)
    upgrade(engine)
    sessions, cloning_sessions = make_session_factory(engine), make_session_factory(engine)
    deleting = MediaLibrary(sessions, BlobStore(tmp_path / "shared-media"))
    cloning = MediaLibrary(cloning_sessions, BlobStore(tmp_path / "shared-media"))
    with transaction(sessions) as session:
        user = User(name="u")
        session.add(user)
        session.flush()
        old = _voice(user.id, "old", deleting.add(session, DATA, "audio/wav", 1.0))
        session.add(old)
    with transaction(sessions) as session:  # VoiceService.delete clears the reference first
        voice = session.get_one(Voice, old.id)
        voice.deleted_at, voice.ref_audio_sha256 = utcnow(), None

    writer = cloning_sessions()
    writer.begin()
    key = cloning.add(writer, DATA, "audio/wav", 1.0)
    new = _voice(user.id, "new", key)
    writer.add(new)
    writer.flush()
    release = threading.Thread(target=deleting.release, args=([key],), daemon=True)
    release.start()
    _wait_for_a_lock_wait(engine)
    writer.commit()
    writer.close()
    release.join(timeout=WAIT_LIMIT_S)
    assert not release.is_alive()

    with sessions() as session:
        assert session.get_one(Voice, new.id).ref_audio_sha256 == key
    assert cloning.blobs.read(key) == DATA
