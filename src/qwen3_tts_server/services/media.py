"""Reference and generated audio: blobs on disk plus the `audio_blobs` rows that account for them.

A file is shared by every row that holds its SHA-256 and removed only when none does. The rows
decide; the file follows after the transaction commits, so a rollback never loses a file that
a committed row still names.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from qwen3_tts_server.db.models import AudioBlob, Generation, Voice
from qwen3_tts_server.db.session import transaction
from qwen3_tts_server.storage.blobs import BlobStore


class MediaLibrary:
    def __init__(self, sessions: sessionmaker[Session], blobs: BlobStore) -> None:
        self._sessions = sessions
        self.blobs = blobs

    def add(self, session: Session, data: bytes, media_type: str, duration_s: float) -> str:
        """Write the bytes (once) and make sure a row describes them; returns the SHA-256."""
        sha256 = self.blobs.put(data)
        if session.get(AudioBlob, sha256) is None:
            session.add(
                AudioBlob(
                    sha256=sha256,
                    media_type=media_type,
                    size_bytes=len(data),
                    duration_s=duration_s,
                )
            )
            session.flush()
        return sha256

    def restore(self, data: bytes, sha256: str) -> None:
        """After a commit: put the file back if a concurrent release removed it meanwhile."""
        if not self.blobs.exists(sha256):
            self.blobs.put(data)

    def read(self, sha256: str) -> bytes:
        return self.blobs.read(sha256)

    @staticmethod
    def _references(session: Session, sha256: str) -> int:
        voices = session.scalar(
            select(func.count()).select_from(Voice).where(Voice.ref_audio_sha256 == sha256)
        )
        generations = session.scalar(
            select(func.count()).select_from(Generation).where(Generation.audio_sha256 == sha256)
        )
        return int(voices or 0) + int(generations or 0)

    def release(self, candidates: Iterable[str]) -> None:
        """Delete the rows and files of candidates that nothing refers to any more."""
        orphans = []
        with transaction(self._sessions) as session:
            for sha256 in set(candidates):
                if self._references(session, sha256) == 0:
                    blob = session.get(AudioBlob, sha256)
                    if blob is not None:
                        session.delete(blob)
                    orphans.append(sha256)
        for sha256 in orphans:
            self.blobs.delete(sha256)
