"""The model's lifecycle as the API sees it: loading, ready, or failed.

Loading happens in the background so /health answers at once and /ready tells the truth; every
synthesis call asks `scheduler()` and gets a clear 503 until the model is warm.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from qwen3_tts_server.engine.base import CustomItem, Engine, EngineInfo, SynthItem
from qwen3_tts_server.engine.scheduler import Scheduler
from qwen3_tts_server.errors import ServiceUnavailable
from qwen3_tts_server.services.clock import ClockedEngine
from qwen3_tts_server.services.voicing import DesignItem, ModelItem
from qwen3_tts_server.values import Audio, Sampling

log = logging.getLogger(__name__)

T = TypeVar("T")


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


@dataclass(frozen=True)
class Timing:
    """Where a call's time went: waiting for the model, then the model's own work."""

    queue_ms: int
    model_ms: int


@dataclass(frozen=True)
class Synthesized:
    """Audio of one model job, when it was ready, and how its time was spent."""

    audio: list[Audio]
    timing: Timing
    started: float  # perf_counter() when the model began on it
    ready_at: float  # perf_counter() when its audio was handed back


@dataclass(frozen=True)
class LoadedModel:
    """A warm scheduler and what it runs (sample rate, model id for prompt checks)."""

    scheduler: Scheduler
    info: EngineInfo
    clock: ClockedEngine

    async def speak(self, items: Sequence[ModelItem], sampling: Sampling) -> Synthesized:
        """One synthesis job through the scheduler, timed: queue wait until the first model
        call holding its items began, model time from then until the audio came back.

        The items' type picks the model (they all come from one `Voicing`). Described voices
        run as one design call per item, which the clock does not see: their whole time
        counts as model time."""
        submitted = time.perf_counter()
        audio = await self._run(items, sampling)
        ready_at = time.perf_counter()
        started = self.clock.call_started(items)
        started = submitted if started is None else min(max(started, submitted), ready_at)
        timing = Timing(queue_ms=_ms(started - submitted), model_ms=_ms(ready_at - started))
        return Synthesized(audio, timing, started, ready_at)

    async def _run(self, items: Sequence[ModelItem], sampling: Sampling) -> list[Audio]:
        if all(isinstance(item, SynthItem) for item in items):
            return await self.scheduler.synthesize(_only(items, SynthItem), sampling)
        if all(isinstance(item, CustomItem) for item in items):
            return await self.scheduler.synthesize_custom(_only(items, CustomItem), sampling)
        designs = [
            asyncio.ensure_future(
                self.scheduler.design(item.text, item.description, item.language, sampling)
            )
            for item in _only(items, DesignItem)
        ]
        try:
            return list(await asyncio.gather(*designs))
        finally:  # one failed (or the caller left): the others are withdrawn, not left running
            for task in designs:
                task.cancel()


def _only(items: Sequence[object], kind: type[T]) -> list[T]:
    """`items`, which must all be of `kind` (one job never mixes models)."""
    chosen = [item for item in items if isinstance(item, kind)]
    if len(chosen) != len(items):
        raise TypeError(f"one job mixes {kind.__name__} with other kinds of items")
    return chosen


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
            engine = ClockedEngine(self._load_engine())
            scheduler = self._make_scheduler(engine)
            scheduler.start()
            self._loaded = LoadedModel(scheduler, engine.info(), engine)
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
