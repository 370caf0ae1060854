"""A job (one API call's texts) split into chunks, each of which occupies one slot at a time.

A job's chunks are admitted in order but may run side by side in several slots. Their audio is
handed to a streaming consumer strictly in order: pieces of a later chunk wait until every
earlier chunk has finished. Everything here runs on the inference thread except `cancel()`
(any thread) and the consumer callback, which must only hand the piece over (e.g. to an event
loop) and return.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from qwen3_tts_server.engine.base import Item
from qwen3_tts_server.engine.serving.codec import ChunkSchedule, StreamDecoder
from qwen3_tts_server.engine.serving.guard import RunawayWatch
from qwen3_tts_server.engine.step.stepper import Slot
from qwen3_tts_server.values import Audio, Sampling


@dataclass(frozen=True)
class ChunkResult:
    """One chunk's audio and how its generation ended (eos, length, silence)."""

    audio: Audio
    finish_reason: str
    frames: int
    retried: bool


@dataclass(frozen=True)
class JobResult:
    """Every chunk's result, and where the job's time went: `queued_s` from submission until
    its first chunk was admitted, `model_s` from then until its last chunk finished."""

    chunks: list[ChunkResult]
    queued_s: float
    model_s: float


@dataclass(frozen=True)
class AudioPiece:
    """Newly decoded samples of chunk `index`; `last`: the chunk has ended (samples may be
    empty), `finish_reason` is then set."""

    index: int
    samples: npt.NDArray[np.float32]
    last: bool
    finish_reason: str | None = None


@dataclass(eq=False)
class Chunk:
    """One text of a job and its progress through the loop."""

    job: Job
    index: int
    item: Item
    budget: int
    truncates: bool  # the operator's frame cap, not the text, set the budget
    attempt: int = 0
    slot: Slot | None = None
    decoder: StreamDecoder | None = None
    watch: RunawayWatch | None = None
    pieces: list[npt.NDArray[np.float32]] = field(default_factory=list)
    sent: int = 0  # pieces handed to the consumer
    finish: str | None = None
    frames: int = 0
    started: float = 0.0  # monotonic time of the current attempt's admission

    def reset(self) -> None:
        """Forget a failed attempt's audio before a retry."""
        self.attempt += 1
        self.slot, self.decoder, self.watch = None, None, None
        self.pieces, self.sent, self.finish, self.frames = [], 0, None, 0


class Job:
    """One submitted call: its chunks, its owner, and where its results and audio go."""

    def __init__(
        self,
        user: Hashable,
        items: Sequence[Item],
        budgets: Sequence[tuple[int, bool]],
        sampling: Sampling,
        schedule: ChunkSchedule,
        sample_rate: int,
        on_audio: Callable[[AudioPiece], None] | None = None,
    ) -> None:
        self.user = user
        self.sampling = sampling
        self.schedule = schedule
        self.sample_rate = sample_rate
        self.on_audio = on_audio
        self.future: Future[JobResult] = Future()
        self.submitted = time.perf_counter()
        self.started: float | None = None  # when its first chunk was admitted
        self.chunks = [
            Chunk(self, index, item, budget, truncates)
            for index, (item, (budget, truncates)) in enumerate(zip(items, budgets, strict=True))
        ]
        self._waiting: deque[Chunk] = deque(self.chunks)
        self._emitting = 0
        self._finished = 0
        self.cancelled = False
        self.timed_out = False

    def waiting(self) -> bool:
        return bool(self._waiting) and not self.cancelled and not self.future.done()

    def waiting_count(self) -> int:
        return len(self._waiting) if self.waiting() else 0

    def take(self) -> Chunk:
        """The next chunk to admit (a retried chunk goes first)."""
        return self._waiting.popleft()

    def requeue(self, chunk: Chunk) -> None:
        chunk.reset()
        self._waiting.appendleft(chunk)

    def cancel(self, *, timed_out: bool = False) -> None:
        """The caller went away (or gave up): the loop withdraws the job between steps."""
        self.timed_out = self.timed_out or timed_out
        self.cancelled = True

    @property
    def streamed(self) -> bool:
        return self.on_audio is not None

    def running(self) -> list[Chunk]:
        return [chunk for chunk in self.chunks if chunk.slot is not None]

    def add_audio(self, chunk: Chunk, samples: npt.NDArray[np.float32]) -> None:
        chunk.pieces.append(samples)
        self._flush()

    def complete(self, chunk: Chunk, reason: str) -> bool:
        """A chunk ended well; True when it was the last one (then call `resolve`)."""
        chunk.finish = reason
        chunk.slot = None
        self._finished += 1
        self._flush()
        return self._finished == len(self.chunks)

    def resolve(self) -> None:
        """Hand the caller every chunk's result (after the loop has counted the job)."""
        if self.future.set_running_or_notify_cancel():
            now = time.perf_counter()
            started = self.submitted if self.started is None else self.started
            results = [self._result(c) for c in self.chunks]
            self.future.set_result(JobResult(results, started - self.submitted, now - started))

    def fail(self, error: BaseException) -> None:
        for chunk in self.chunks:
            chunk.slot = None
        self._waiting.clear()
        if not self.future.done() and self.future.set_running_or_notify_cancel():
            self.future.set_exception(error)

    def _result(self, chunk: Chunk) -> ChunkResult:
        samples = np.concatenate(chunk.pieces) if chunk.pieces else np.zeros(0, np.float32)
        return ChunkResult(
            Audio(samples.astype(np.float32, copy=False), self.sample_rate),
            chunk.finish or "",
            chunk.frames,
            chunk.attempt > 0,
        )

    def _flush(self) -> None:
        """Hand the consumer every piece it may have now, in chunk order."""
        if self.on_audio is None:
            return
        while self._emitting < len(self.chunks):
            chunk = self.chunks[self._emitting]
            for samples in chunk.pieces[chunk.sent :]:
                self.on_audio(AudioPiece(chunk.index, samples, False))
            chunk.sent = len(chunk.pieces)
            if chunk.finish is None:
                return
            empty = np.zeros(0, np.float32)
            self.on_audio(AudioPiece(chunk.index, empty, True, chunk.finish))
            self._emitting += 1
