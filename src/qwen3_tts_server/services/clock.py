"""When each model call started, so a request's time splits into queue wait and model time.

The scheduler owns the queue and merges jobs; it reports neither when a job left the queue nor
which call ran it. This wrapper sits between the scheduler and the engine and notes, for every
item of every synthesis call, the moment the call began. Items are the caller's own objects,
passed through by identity, so a caller finds its start by the items it submitted. An entry
holds its item, so its id() cannot be reused while the entry exists; entries nobody collects
(the caller left) are dropped oldest first past a bound.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from qwen3_tts_server.engine.base import CustomItem, Engine, EngineInfo, SynthItem
from qwen3_tts_server.values import Audio, Sampling

#: Start times kept for callers that never collect them (they left mid-call).
MAX_UNCOLLECTED = 4096


class ClockedEngine:
    """An `Engine` that delegates every call and stamps synthesis items with their start."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._starts: OrderedDict[int, tuple[object, float]] = OrderedDict()
        self._lock = threading.Lock()

    def call_started(self, items: Sequence[object]) -> float | None:
        """`time.perf_counter()` when the first model call holding any of `items` began (and
        forget them), or None if no call ran them."""
        with self._lock:
            entries = [self._starts.pop(id(item), None) for item in items]
        starts = [
            started
            for item, entry in zip(items, entries, strict=True)
            if entry is not None
            for owner, started in [entry]
            if owner is item
        ]
        return min(starts, default=None)

    def _stamp(self, items: Sequence[object]) -> None:
        now = time.perf_counter()
        with self._lock:
            for item in items:
                self._starts.setdefault(id(item), (item, now))
            while len(self._starts) > MAX_UNCOLLECTED:
                self._starts.popitem(last=False)

    def info(self) -> EngineInfo:
        return self._engine.info()

    def create_prompt(self, audio: Audio, transcript: str | None) -> bytes:
        return self._engine.create_prompt(audio, transcript)

    def synthesize(self, items: Sequence[SynthItem], sampling: Sampling) -> list[Audio]:
        self._stamp(items)
        return self._engine.synthesize(items, sampling)

    def synthesize_custom(self, items: Sequence[CustomItem], sampling: Sampling) -> list[Audio]:
        self._stamp(items)
        return self._engine.synthesize_custom(items, sampling)

    def design(self, text: str, description: str, language: str, sampling: Sampling) -> Audio:
        return self._engine.design(text, description, language, sampling)

    def warm_up(self) -> None:
        self._engine.warm_up()

    def __getattr__(self, name: str) -> Any:
        """Anything beyond the protocol (e.g. QwenEngine.max_new_tokens_cap) passes through."""
        return getattr(self._engine, name)
