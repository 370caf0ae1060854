"""The process's moving parts as routes and the app see them: readiness, start and stop.

Routes never touch the database engine or the model directly; /ready asks `readiness()`, and
the app's lifespan calls `start()` and `stop()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine as DbEngine

from qwen3_tts_server.db.models import utcnow
from qwen3_tts_server.db.session import ping
from qwen3_tts_server.services.generations import GenerationLedger
from qwen3_tts_server.services.runtime import ModelRuntime


@dataclass(frozen=True)
class Readiness:
    ready: bool
    database_ok: bool
    model: str  # loading | ready | failed
    error: str | None


class SystemService:
    def __init__(
        self,
        db: DbEngine,
        runtime: ModelRuntime,
        ledger: GenerationLedger,
        stream_grace: timedelta,
    ) -> None:
        self._db = db
        self._runtime = runtime
        self._ledger = ledger
        self._stream_grace = stream_grace

    def readiness(self) -> Readiness:
        """Ready when the database answers and the model is loaded and warm."""
        database_ok = ping(self._db)
        return Readiness(
            ready=database_ok and self._runtime.ready,
            database_ok=database_ok,
            model=self._runtime.status,
            error=self._runtime.error,
        )

    def start(self) -> None:
        """Settle streams a dead process left open, then load the model in the background.

        Only streams older than the grace are settled: with replicas on one database, a younger
        one may still be running on another replica.
        """
        self._ledger.interrupt_open(older_than=utcnow() - self._stream_grace)
        self._runtime.start()

    def stop(self) -> None:
        self._runtime.stop()
        self._db.dispose()
