"""The model's lifecycle as the API sees it: loading, ready, or failed.

Loading happens in the background so /health answers at once and /ready tells the truth; every
synthesis call asks `loaded()` and gets a clear 503 until the model is warm.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qwen3_tts_server.engine.base import Engine, EngineInfo, Item
from qwen3_tts_server.engine.serving.scheduler import AudioStream, Scheduler
from qwen3_tts_server.errors import ServiceUnavailable
from qwen3_tts_server.values import Audio, FinishReason, Sampling

log = logging.getLogger(__name__)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


@dataclass(frozen=True)
class Timing:
    """Where a call's time went: waiting for the model, then the model's own work."""

    queue_ms: int
    model_ms: int


@dataclass(frozen=True)
class Synthesized:
    """Audio of one model job (one clip per item), why each item's generation ended, and how
    the job's time was spent."""

    audio: list[Audio]
    finish_reasons: list[FinishReason]
    timing: Timing


def worst_reason(reasons: Sequence[FinishReason]) -> FinishReason:
    """One text's finish reason from its chunks': a truncation (length) shows over an early
    stop (silence), which shows over a clean end (eos)."""
    for reason in (FinishReason.LENGTH, FinishReason.SILENCE):
        if reason in reasons:
            return reason
    return FinishReason.EOS


@dataclass(frozen=True)
class LoadedModel:
    """A warm scheduler and what it runs (sample rate, model id for prompt checks)."""

    scheduler: Scheduler
    info: EngineInfo

    async def speak(self, items: Sequence[Item], sampling: Sampling, user: int) -> Synthesized:
        """One job through the scheduler, counted against `user`'s fair share: queue wait
        until its first item got a slot, model time from then until its last item ended."""
        result = await self.scheduler.generate(items, sampling, user=user)
        timing = Timing(queue_ms=_ms(result.queued_s), model_ms=_ms(result.model_s))
        return Synthesized(
            [chunk.audio for chunk in result.chunks],
            [FinishReason(chunk.finish_reason) for chunk in result.chunks],
            timing,
        )

    def stream(self, items: Sequence[Item], sampling: Sampling, user: int) -> AudioStream:
        """The items' audio as it is made (queued now: QueueFull / ShuttingDown at once)."""
        return self.scheduler.stream(items, sampling, user=user)


class ModelRuntime:
    def __init__(
        self,
        load_engine: Callable[[], Engine],
        make_scheduler: Callable[[Engine], Scheduler],
    ) -> None:
        self._load_engine = load_engine
        self._make_scheduler = make_scheduler
        self._loaded: LoadedModel | None = None
        self._error: str | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Load and warm the model on a background thread."""
        self._thread = threading.Thread(target=self._load, name="model-loader", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        try:
            engine = self._load_engine()
            scheduler = self._make_scheduler(engine)
            scheduler.start()
            self._loaded = LoadedModel(scheduler, engine.info())
            log.info(
                "model ready: %s on %s", self._loaded.info.base_model_id, self._loaded.info.device
            )
        except Exception as exc:  # a load failure must surface on /ready, not kill the server
            log.exception("model failed to load")
            self._error = f"{type(exc).__name__}: {exc}"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until loading ended (tests and the CLI use this); True when ready."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.ready

    @property
    def ready(self) -> bool:
        return self._loaded is not None and self._loaded.scheduler.ready

    @property
    def status(self) -> str:
        if self._error is not None:
            return "failed"
        return "ready" if self.ready else "loading"

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def info(self) -> EngineInfo | None:
        return self._loaded.info if self._loaded is not None else None

    def loaded(self) -> LoadedModel:
        """The warm model, or a 503 that says why there is none yet."""
        if self._loaded is None or not self._loaded.scheduler.ready:
            if self._error is not None:
                raise ServiceUnavailable("Model not loaded: the model failed to load (see /ready)")
            raise ServiceUnavailable("Model not loaded yet: retry when GET /ready says ready")
        return self._loaded

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._loaded is not None:
            self._loaded.scheduler.shutdown()
