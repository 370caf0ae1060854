"""Reference and generated audio: blobs on disk plus the `audio_blobs` rows that account for them.

The rows decide, the files follow, so no crash, rollback or race leaves a file no row names
(storage/blobs.py has the protocol):
- `add` stages the bytes and upserts the row inside the caller's transaction; the staged file
  is published when that transaction commits and dropped when it rolls back (session events,
  so no caller can forget either);
- `release` deletes rows nothing refers to any more, in one statement that re-checks the
  references, then retires their files;
- `sweep` (at start-up) finishes what a crash interrupted and removes files and rows nothing
  refers to, touching nothing younger than the grace period another replica may still be
  working within.
A file is shared by every row that holds its SHA-256 and removed only when none does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

from sqlalchemy import delete, event, exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from qwen3_tts_server.db.models import AudioBlob, Generation, Voice
from qwen3_tts_server.db.session import transaction
from qwen3_tts_server.storage.blobs import BlobStore, Leftover, Staged

#: Where a session keeps the blobs it staged until its transaction ends.
_STAGED = "media.staged"
#: Keys per database query when the sweep checks files against rows.
_CHUNK = 500

_UNREFERENCED = ~exists().where(Voice.ref_audio_sha256 == AudioBlob.sha256) & ~exists().where(
    Generation.audio_sha256 == AudioBlob.sha256
)


@dataclass(frozen=True)
class Sweep:
    """What a sweep did: rows deleted, files deleted, files published (a crash had kept them
    from their final name after their row committed)."""

    rows_deleted: int
    files_deleted: int
    files_published: int


class MediaLibrary:
    def __init__(self, sessions: sessionmaker[Session], blobs: BlobStore) -> None:
        self._sessions = sessions
        self.blobs = blobs
        event.listen(sessions, "after_commit", self._publish_staged)
        event.listen(sessions, "after_transaction_end", self._discard_staged)

    def add(self, session: Session, data: bytes, media_type: str, duration_s: float) -> str:
        """Stage the bytes and make sure a row describes them; returns the SHA-256.

        The file gets its final name once `session` commits. The row is upserted, which also
        locks it (PostgreSQL), so a concurrent `release` of the same bytes either finished
        first (the row is inserted again) or waits and then sees this reference.
        """
        staged = self.blobs.stage(data)
        session.info.setdefault(_STAGED, []).append(staged)
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        insert = dialect.insert(AudioBlob).values(
            sha256=staged.key, media_type=media_type, size_bytes=len(data), duration_s=duration_s
        )
        session.execute(
            insert.on_conflict_do_update(
                index_elements=[AudioBlob.sha256], set_={"size_bytes": insert.excluded.size_bytes}
            )
        )
        return staged.key

    def _publish_staged(self, session: Session) -> None:
        for staged in session.info.pop(_STAGED, []):
            self.blobs.publish(staged)

    def _discard_staged(self, session: Session, ended: SessionTransaction) -> None:
        """Any transaction end that was not a commit (published already): a rollback."""
        if ended.parent is None:
            staged: list[Staged] = session.info.pop(_STAGED, [])
            for item in staged:
                self.blobs.discard(item)

    def read(self, sha256: str) -> bytes:
        return self.blobs.read(sha256)

    # -- removal -------------------------------------------------------------------------------
    def release(self, candidates: Iterable[str]) -> None:
        """Delete the rows and files of candidates that nothing refers to any more."""
        keys = sorted(set(candidates))
        if not keys:
            return
        with transaction(self._sessions) as session:
            removed = _delete_unreferenced(session, keys)
        for key in removed:
            self.blobs.retire(key, self._has_row)

    def _has_row(self, key: str) -> bool:
        """Whether a committed row names `key` (asked after its file was moved aside)."""
        with self._sessions() as session:
            return session.get(AudioBlob, key) is not None

    def _with_rows(self, keys: Sequence[str]) -> set[str]:
        with self._sessions() as session:
            return set(session.scalars(select(AudioBlob.sha256).where(AudioBlob.sha256.in_(keys))))

    def sweep(self, older_than: datetime) -> Sweep:
        """Remove what nothing refers to and finish interrupted publications, leaving alone
        anything created at or after `older_than` (it may be another replica's work)."""
        with transaction(self._sessions) as session:
            unreferenced = session.scalars(
                select(AudioBlob.sha256).where(AudioBlob.created_at < older_than, _UNREFERENCED)
            ).all()
            removed = _delete_unreferenced(session, sorted(unreferenced))
        files_deleted = sum(self.blobs.retire(key, self._has_row) for key in removed)
        files_published = 0
        leftovers = self.blobs.leftovers(older_than.timestamp())
        while chunk := list(islice(leftovers, _CHUNK)):
            # A published blob with a row is what the store is for: only check the others.
            named = self._with_rows(
                [item.key for item in chunk if item.kind == "blob" and item.key]
            )
            for leftover in chunk:
                if leftover.kind == "blob" and leftover.key in named:
                    continue
                deleted = self.blobs.recover(leftover, self._has_row)
                files_deleted += deleted
                files_published += not deleted and _is_pending(leftover)
        return Sweep(len(removed), files_deleted, files_published)


def _is_pending(leftover: Leftover) -> bool:
    return leftover.kind in ("staged", "trashed")


def _delete_unreferenced(session: Session, keys: Sequence[str]) -> list[str]:
    """Delete the rows among `keys` that nothing refers to; returns their keys.

    The references are checked by the DELETE itself, not read first: a reference committed
    between a count and the delete would otherwise lose its row (and `ON DELETE SET NULL` its
    link). On PostgreSQL the rows are locked first, so a concurrent `add` of the same bytes
    has either committed (and is seen) or waits.
    """
    if not keys:
        return []
    session.execute(
        select(AudioBlob.sha256).where(AudioBlob.sha256.in_(keys)).with_for_update()
    ).all()
    statement: Any = (
        delete(AudioBlob)
        .where(AudioBlob.sha256.in_(keys), _UNREFERENCED)
        .returning(AudioBlob.sha256)
        .execution_options(synchronize_session=False)
    )
    return list(session.scalars(statement))
