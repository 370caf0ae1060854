"""The process's moving parts as routes and the app see them: readiness, start and stop.

Routes never touch the database engine or the model directly; /ready asks `readiness()`, and
the app's lifespan calls `start()` and `stop()`.

Start-up registers this process's lease (services/leases.py) and recovers from crashes before
anything is served; a background thread then renews the lease every few seconds and, each
time, settles the work of any process whose lease lapsed: its open streams become INTERRUPTED
(free) and its reservations are released (services/quota.py). A live replica's work is never
touched, and a dead one's is settled within LEASE_S and one heartbeat, whether it comes back
or not.

Two things carry no owner and still wait for the grace period (RECOVERY_GRACE_S), at start and
then every grace period: rows and holds written before leases existed, and the media sweep,
which deletes staged, half-written and unreferenced files and rows and publishes files whose
row had committed (services/media.py): a file in MEDIA_DIR does not say which replica is
writing it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine as DbEngine

from qwen3_tts_server.db.models import utcnow
from qwen3_tts_server.db.session import ping
from qwen3_tts_server.services.deferred import DeferredSettlements
from qwen3_tts_server.services.generations import GenerationLedger
from qwen3_tts_server.services.leases import Lease
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
        lease: Lease,
        deferred: DeferredSettlements,
        recovery_grace: timedelta,
        aligner: AlignerRuntime,
    ) -> None:
        self._db = db
        self._aligner = aligner
        self._runtime = runtime
        self._ledger = ledger
        self._media = media
        self._quotas = quotas
        self._lease = lease
        self._deferred = deferred
        self._grace = recovery_grace
        self._stopping = threading.Event()
        self._keeping: threading.Thread | None = None

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
        """Take the lease, recover from crashes, then load the model in the background."""
        self._lease.register()
        self.settle_lapsed()
        self.recover()
        self._keeping = threading.Thread(target=self._keep_lease, name="lease", daemon=True)
        self._keeping.start()
        self._runtime.start()
        self._aligner.start(after=self._runtime.wait)

    def settle_lapsed(self) -> None:
        """Settle the open streams and reservations of every process whose lease lapsed."""
        lapsed = self._lease.lapsed()
        if not lapsed:
            return
        interrupted = self._ledger.interrupt_owned(lapsed)
        released = self._quotas.release_owned(lapsed)
        self._lease.forget(lapsed)
        log.warning(
            "lease of %d dead server process(es) lapsed: %d open streams settled as "
            "interrupted, %d reservations released",
            len(lapsed),
            interrupted,
            released,
        )

    def recover(self) -> None:
        """Settle what carries no owner and sweep the media, all older than the grace period."""
        cutoff = utcnow() - self._grace
        interrupted = self._ledger.interrupt_open(older_than=cutoff)
        released = self._quotas.release_stale(older_than=cutoff)
        swept = self._media.sweep(cutoff)
        if any(
            (interrupted, released, swept.rows_deleted, swept.files_deleted, swept.files_published)
        ):
            log.info(
                "recovery: %d ownerless open streams settled as interrupted, %d ownerless "
                "reservations released; media sweep deleted %d rows and %d files, published %d",
                interrupted,
                released,
                swept.rows_deleted,
                swept.files_deleted,
                swept.files_published,
            )

    def _keep_lease(self) -> None:
        """Every heartbeat: renew the lease, retry this process's settlements that failed
        (services/deferred.py) and settle lapsed leases; sweep every grace period."""
        grace_s = self._grace.total_seconds()
        next_sweep = time.monotonic() + grace_s
        interval = min(self._lease.heartbeat_s, grace_s or self._lease.heartbeat_s)
        while not self._stopping.wait(interval):
            try:
                self._lease.renew()
                self._deferred.retry()
                self.settle_lapsed()
                if grace_s > 0 and time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + grace_s
                    self.recover()
            except Exception:  # the database away, a disk error: the next heartbeat tries again
                log.exception("lease renewal or recovery failed")

    def stop(self) -> None:
        """Stop the model (draining), settle whatever this process still holds, end the lease."""
        self._stopping.set()
        if self._keeping is not None:
            self._keeping.join()
        self._runtime.stop()
        own = [self._lease.instance_id]
        try:
            left = self._ledger.interrupt_owned(own), self._quotas.release_owned(own)
            self._lease.end()
        except Exception:  # the database away: the lease lapses, another process settles it
            log.exception("could not settle this process's work at stop")
        else:
            if any(left):
                log.warning("at stop: %d open streams interrupted, %d holds released", *left)
        self._aligner.stop()
        self._db.dispose()
