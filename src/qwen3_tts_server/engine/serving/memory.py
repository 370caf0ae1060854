"""Running out of memory: how to tell, and how the step loop sheds load after it happens.

An out-of-memory error is an outage, not a bug and not the caller's doing: the API answers 503
with Retry-After, records the call and charges nothing (services/failures.py). What raises it
depends on where memory ran out: `MemoryError` (Python, numpy), `torch.OutOfMemoryError`
(`torch.cuda.OutOfMemoryError` is the same class) on a GPU, and a plain RuntimeError from
torch's CPU allocator ("DefaultCPUAllocator: not enough memory", "can't allocate memory").

On a GPU one step of many slots can need more memory than is free while fewer would fit. The
loop then halves how many slots it keeps active (`LoadShedder.shed`) and puts the step's chunks
back in the queue where that is safe, instead of failing every stream in flight; the limit
grows back by one slot every RECOVER_S without another out-of-memory step.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from qwen3_tts_server.engine.base import EngineError

#: Seconds without running out of memory after which one more slot may be active again.
RECOVER_S = 10.0
#: What a client is told to wait before retrying a call that ran out of memory.
RETRY_AFTER_S = 5

#: How torch's CPU allocator words its failures (it raises a plain RuntimeError).
_CPU_ALLOCATOR_MESSAGES = ("out of memory", "not enough memory", "can't allocate memory")


class OutOfMemory(EngineError):
    """The model ran out of memory for this work (API: 503 + Retry-After, free)."""

    retry_after_s = RETRY_AFTER_S

    def __init__(self, cause: BaseException) -> None:
        detail = str(cause).splitlines()[0][:200] if str(cause) else type(cause).__name__
        super().__init__(f"out of memory ({detail})")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` means memory ran out (on the CPU or on a GPU)."""
    if isinstance(error, MemoryError | torch.OutOfMemoryError | OutOfMemory):
        return True
    if isinstance(error, RuntimeError):
        text = str(error).lower()
        return any(message in text for message in _CPU_ALLOCATOR_MESSAGES)
    return False


class LoadShedder:
    """How many slots the loop may keep active: all of them, or fewer after running out of
    memory, growing back by one every RECOVER_S. The inference thread sheds; reading the
    limit changes nothing, so /metrics may read it from any thread."""

    def __init__(
        self, slots: int, recover_s: float = RECOVER_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.slots = slots
        self._recover_s = recover_s
        self._clock = clock
        self._limit = slots
        self._since = clock()

    def limit(self) -> int:
        """Slots that may be active now."""
        grown = int((self._clock() - self._since) // self._recover_s)
        return min(self.slots, self._limit + grown)

    def shed(self, active: int) -> int:
        """A step of `active` slots ran out of memory: allow half as many (at least one)."""
        self._limit = max(1, min(self.limit(), active) // 2)
        self._since = self._clock()
        return self._limit
