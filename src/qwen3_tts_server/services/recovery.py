"""Recovery: settle what a crashed process left open, remove what nothing refers to.

A process killed mid-call leaves rows that say work is in progress (a stream's generation row
in "streaming") and files that no committed row names (staged blobs, files half moved). At
start-up, before serving, every such row older than the grace period becomes "interrupted",
uncharged, and the media sweep runs with the same cut-off.

The grace period (RECOVERY_GRACE_S) is what makes this safe with several replicas on one
database and MEDIA_DIR: what is younger may be another live replica's work in progress. With a
grace period the recovery also repeats every grace period while the server runs, so a crashed
replica's leftovers are settled by the others even if it never comes back. On SQLite one server
owns the database, so everything found at start-up is a dead process's: the grace is 0 and
there is nothing to repeat.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from qwen3_tts_server.db.models import Generation, utcnow
from qwen3_tts_server.db.session import transaction
from qwen3_tts_server.services.media import MediaLibrary, Sweep

log = logging.getLogger(__name__)

#: Statuses of a generation whose call has not ended yet.
OPEN_STATUSES = ("streaming",)
#: What an open row becomes when the process that owned it is gone.
INTERRUPTED = "interrupted"
INTERRUPTED_ERROR = "the server stopped before this call finished; nothing was charged"


@dataclass(frozen=True)
class Recovery:
    rows_settled: int
    media: Sweep


def recover(sessions: sessionmaker[Session], media: MediaLibrary, grace_s: float) -> Recovery:
    """Settle open rows and sweep the media, both older than `grace_s` seconds."""
    cutoff = utcnow() - timedelta(seconds=grace_s)
    with transaction(sessions) as session:
        settled = session.scalars(
            update(Generation)
            .where(Generation.status.in_(OPEN_STATUSES), Generation.created_at < cutoff)
            .values(status=INTERRUPTED, tokens_used=0, error=INTERRUPTED_ERROR)
            .returning(Generation.id)
            .execution_options(synchronize_session=False)
        ).all()
    swept = media.sweep(cutoff)
    log.info(
        "start-up recovery: %d open generations settled as interrupted; media sweep deleted "
        "%d rows and %d files, published %d",
        len(settled),
        swept.rows_deleted,
        swept.files_deleted,
        swept.files_published,
    )
    return Recovery(len(settled), swept)


async def keep_recovering(
    sessions: sessionmaker[Session], media: MediaLibrary, grace_s: float
) -> None:
    """Run `recover` every `grace_s` seconds until cancelled; a failed round (the database
    away, a disk error) is logged and the next one tries again."""
    while True:
        await asyncio.sleep(grace_s)
        try:
            await run_in_threadpool(recover, sessions, media, grace_s)
        except Exception:
            log.exception("periodic recovery failed; retrying in %g s", grace_s)
