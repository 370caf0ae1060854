"""The process's moving parts as routes and the app see them: readiness, start and stop.

Routes never touch the database engine or the model directly; /ready asks `readiness()`, and
the app's lifespan calls `start()` and `stop()`.

Start-up recovers from a crash before anything is served: streams a dead process left open
become INTERRUPTED (free), the reservations it held are released (services/quota.py), and
the media sweep deletes staged, half-written and unreferenced
files and rows and publishes files whose row had committed (services/media.py). Both leave
alone anything younger than the grace period (RECOVERY_GRACE_S): with replicas on one database
and MEDIA_DIR it may be another replica's work in progress. With a grace period the recovery
also repeats every grace period while the server runs, so the live replicas settle a crashed
one's leftovers even if it never comes back.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine as DbEngine

from qwen3_tts_server.db.models import utcnow
from qwen3_tts_server.db.session import ping
from qwen3_tts_server.services.generations import GenerationLedger
from qwen3_tts_server.services.media import MediaLibrary
from qwen3_tts_server.services.quota import Quotas
from qwen3_tts_server.services.runtime import ModelRuntime
from qwen3_tts_server.services.timestamps import AlignerRuntime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    database_ok: bool
    model: str  # loading | ready | failed
    error: str | None
    aligner: str = "disabled"  # disabled | loading | ready | failed
    aligner_error: str | None = None


class SystemService:
    def __init__(
        self,
        db: DbEngine,
        runtime: ModelRuntime,
        ledger: GenerationLedger,
        media: MediaLibrary,
        quotas: Quotas,
        recovery_grace: timedelta,
        aligner: AlignerRuntime,
    ) -> None:
        self._db = db
        self._aligner = aligner
        self._runtime = runtime
        self._ledger = ledger
        self._media = media
        self._quotas = quotas
        self._grace = recovery_grace
        self._stopping = threading.Event()
        self._recovering: threading.Thread | None = None

    def readiness(self) -> Readiness:
        """Ready when the database answers, the model is loaded and warm, and the aligner
        (MODEL_ALIGNER_REPO) has finished loading. An aligner that failed does not hold the
        server back: speech works, timestamp requests answer 503 with its error on /ready."""
        database_ok = ping(self._db)
        return Readiness(
            ready=database_ok and self._runtime.ready and self._aligner.settled,
            database_ok=database_ok,
            model=self._runtime.status,
            error=self._runtime.error,
            aligner=self._aligner.status,
            aligner_error=self._aligner.error,
        )

    def start(self) -> None:
        """Recover from a crash, then load the model in the background."""
        self.recover()
        if self._grace > timedelta(0):
            self._recovering = threading.Thread(
                target=self._recover_periodically, name="recovery", daemon=True
            )
            self._recovering.start()
        self._runtime.start()
        self._aligner.start(after=self._runtime.wait)

    def recover(self) -> None:
        """Settle open streams, release reservations and sweep the media, all older than the
        grace period (a dead process's: it will never settle them)."""
        cutoff = utcnow() - self._grace
        interrupted = self._ledger.interrupt_open(older_than=cutoff)
        released = self._quotas.release_stale(older_than=cutoff)
        swept = self._media.sweep(cutoff)
        if any(
            (interrupted, released, swept.rows_deleted, swept.files_deleted, swept.files_published)
        ):
            log.info(
                "recovery: %d open streams settled as interrupted, %d reservations released; "
                "media sweep deleted %d rows and %d files, published %d",
                interrupted,
                released,
                swept.rows_deleted,
                swept.files_deleted,
                swept.files_published,
            )

    def _recover_periodically(self) -> None:
        while not self._stopping.wait(self._grace.total_seconds()):
            try:
                self.recover()
            except Exception:  # the database away, a disk error: the next round tries again
                log.exception("periodic recovery failed")

    def stop(self) -> None:
        self._stopping.set()
        if self._recovering is not None:
            self._recovering.join()
        self._runtime.stop()
        self._aligner.stop()
        self._db.dispose()
