"""What services call: async methods on the event loop over the step loop's thread.

Every text becomes one chunk job in the loop (the services split long texts into sentence
chunks first), so a long text or a batch interleaves with other users' work instead of
holding the model until it ends. `user` names whose share a job counts against (fair
admission); None is one shared anonymous user.

Waiting callers never block the event loop: results come back through futures, streamed audio
through an asyncio queue fed from the inference thread. A caller that goes away (its task is
cancelled) or runs past `job_timeout_s` has its job withdrawn between two steps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from qwen3_tts_server.engine.base import (
    CustomItem,
    DesignItem,
    Engine,
    Item,
    JobTimeout,
    SynthItem,
)
from qwen3_tts_server.engine.serving.codec import STREAMING
from qwen3_tts_server.engine.serving.guard import frame_budget
from qwen3_tts_server.engine.serving.jobs import AudioPiece, Job, JobResult
from qwen3_tts_server.engine.serving.loop import LoopConfig, LoopStats, StepLoop
from qwen3_tts_server.values import Audio, Sampling

_END = object()


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve a result nobody awaits any more (asyncio would log it as never retrieved)."""
    if not future.cancelled():
        future.exception()


class AudioStream:
    """A streamed job's audio as it is decoded: iterate the pieces, in chunk order.

    Iteration ends when every chunk has ended (`result` then holds them) and raises the job's
    error if it failed. Call `close()` however the consumer ends: an unfinished job is withdrawn.
    """

    def __init__(self, loop: StepLoop, job: Job, timeout_s: float) -> None:
        self._loop = loop
        self._job = job
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._deadline = time.monotonic() + timeout_s
        self.result: JobResult | None = None
        event_loop = asyncio.get_running_loop()

        def put(item: object) -> None:
            try:
                event_loop.call_soon_threadsafe(self._queue.put_nowait, item)
            except RuntimeError:  # the event loop is gone: nobody is listening
                loop.withdraw(job)

        job.on_audio = put
        job.future.add_done_callback(lambda _: put(_END))

    @property
    def queued_s(self) -> float:
        """Seconds from submission until the first chunk got a slot (so far, if not yet)."""
        job = self._job
        return (job.started or time.perf_counter()) - job.submitted

    def __aiter__(self) -> AudioStream:
        return self

    async def __anext__(self) -> AudioPiece:
        try:
            item = await asyncio.wait_for(self._queue.get(), self._deadline - time.monotonic())
        except TimeoutError:
            self._loop.withdraw(self._job, timed_out=True)
            raise JobTimeout("the stream did not finish within its deadline") from None
        if item is _END:
            self.result = self._job.future.result()  # raises the job's error
            raise StopAsyncIteration
        assert isinstance(item, AudioPiece)
        return item

    async def close(self) -> None:
        if not self._job.future.done():
            self._loop.withdraw(self._job)


class Scheduler:
    """Async front of the step loop, with the call shapes the services use."""

    def __init__(
        self,
        engine: Engine,
        config: LoopConfig | None = None,
        *,
        job_timeout_s: float = 600,
        on_step: Callable[[int, float], None] | None = None,
    ) -> None:
        """`on_step(slots, seconds)` is called on the inference thread after every step."""
        if job_timeout_s <= 0:
            raise ValueError("job_timeout_s must be > 0")
        self.loop = StepLoop(engine, config)
        self.loop.on_step = on_step
        self._engine = engine
        self._timeout = job_timeout_s
        self._sample_rate = engine.info().sample_rate

    # ---- lifecycle, as the runtime and /metrics see it --------------------------------------

    def start(self, *, wait: bool = True) -> None:
        self.loop.start(wait=wait)

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.loop.wait_ready(timeout)

    @property
    def ready(self) -> bool:
        return self.loop.ready

    @property
    def warm_up_error(self) -> BaseException | None:
        return self.loop.warm_up_error

    @property
    def queue_depth(self) -> int:
        return self.loop.queue_depth

    @property
    def active(self) -> int:
        """Chunks in slots now."""
        return self.loop.active

    @property
    def stats(self) -> LoopStats:
        return self.loop.stats

    def shutdown(self, timeout: float | None = None, *, drain_s: float | None = None) -> None:
        self.loop.shutdown(drain_s=drain_s, timeout=timeout)

    # ---- work --------------------------------------------------------------------------------

    async def generate(
        self, items: Sequence[Item], sampling: Sampling, *, user: Hashable = None
    ) -> JobResult:
        """Speak every item (one chunk each): results in order, with finish reasons, and how
        long the job waited and ran."""
        if not items:
            return JobResult([], 0.0, 0.0)
        job = self._job(items, sampling, user)
        self.loop.submit(job)
        wrapped = asyncio.wrap_future(job.future)
        try:
            return await asyncio.wait_for(asyncio.shield(wrapped), timeout=self._timeout)
        except TimeoutError:
            wrapped.add_done_callback(_consume)
            self.loop.withdraw(job, timed_out=True)
            raise JobTimeout(f"the job did not finish within {self._timeout:g} s") from None
        except asyncio.CancelledError:
            wrapped.add_done_callback(_consume)
            self.loop.withdraw(job)
            raise

    def stream(
        self, items: Sequence[Item], sampling: Sampling, *, user: Hashable = None
    ) -> AudioStream:
        """Queue the items now (raises QueueFull / ShuttingDown at once) and return their audio
        as it is made. Call from the event loop."""
        if not items:
            raise ValueError("a stream needs at least one item")
        job = self._job(items, sampling, user)
        stream = AudioStream(self.loop, job, self._timeout)
        self.loop.submit(job)
        return stream

    async def synthesize(
        self, items: Sequence[SynthItem], sampling: Sampling, *, user: Hashable = None
    ) -> list[Audio]:
        result = await self.generate(items, sampling, user=user)
        return [chunk.audio for chunk in result.chunks]

    async def synthesize_custom(
        self, items: Sequence[CustomItem], sampling: Sampling, *, user: Hashable = None
    ) -> list[Audio]:
        result = await self.generate(items, sampling, user=user)
        return [chunk.audio for chunk in result.chunks]

    async def design(
        self,
        text: str,
        description: str,
        language: str,
        sampling: Sampling,
        *,
        user: Hashable = None,
    ) -> Audio:
        item = DesignItem(text, language, description)
        [chunk] = (await self.generate([item], sampling, user=user)).chunks
        return chunk.audio

    async def create_prompt(self, audio: Audio, transcript: str | None) -> bytes:
        engine = self._engine
        future = self.loop.call(lambda: engine.create_prompt(audio, transcript))
        wrapped = asyncio.wrap_future(future)
        try:
            result: bytes = await asyncio.wait_for(asyncio.shield(wrapped), self._timeout)
        except TimeoutError:
            wrapped.add_done_callback(_consume)
            future.cancel()
            raise JobTimeout(f"the job did not finish within {self._timeout:g} s") from None
        except asyncio.CancelledError:
            wrapped.add_done_callback(_consume)
            future.cancel()
            raise
        return result

    def _job(self, items: Sequence[Item], sampling: Sampling, user: Hashable) -> Job:
        cap = self._engine.frame_cap
        budgets = [frame_budget(item.text, cap) for item in items]
        return Job(user, items, budgets, sampling, STREAMING, self._sample_rate)
