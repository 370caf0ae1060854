"""One inference thread owns the engine; the event loop submits jobs and awaits their futures.

Why this shape: qwen-tts is not thread-safe (the talker keeps per-call state on itself) and one
call takes seconds, so calls must be serialised, and the way to serve many requests at once is
to merge them into one padded batch. The thread takes the oldest waiting job and adds waiting
jobs of the same operation with equal sampling settings, up to `max_batch` items, then makes
one engine call and hands each job its own slice of the results. New work that arrives during
a call waits and forms the next batch, so batching costs no added latency.

Guarantees to callers: a full queue is refused at once with QueueFull (→ 429 + Retry-After); a
job whose caller went away (its task was cancelled) or whose deadline passed never runs; a
job's items are never split across calls (one job larger than `max_batch` runs alone, in
chunks); a merged batch that fails on one job's bad input is retried job by job, so only that
job fails; shutdown fails waiting jobs fast with ShuttingDown.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from qwen3_tts_server.engine.base import (
    Audio,
    CustomItem,
    Engine,
    EngineError,
    InvalidInput,
    JobTimeout,
    ModelUnavailable,
    PromptCorrupt,
    PromptMismatch,
    QueueFull,
    Sampling,
    ShuttingDown,
    SynthItem,
)

log = logging.getLogger(__name__)

_BATCHABLE = frozenset({"synthesize", "synthesize_custom"})
#: Errors caused by one job's input: in a merged batch, retry its jobs one by one.
_INPUT_ERRORS = (InvalidInput, PromptMismatch, PromptCorrupt)
_EWMA_ALPHA = 0.3


@dataclass
class SchedulerStats:
    """Counters for /metrics.

    `jobs_cancelled`: dropped before running because the caller went away; `jobs_timed_out`:
    callers that got JobTimeout (the job itself may have finished later, unseen).
    """

    batches_run: int = 0
    items_run: int = 0
    jobs_run: int = 0
    jobs_failed: int = 0
    jobs_cancelled: int = 0
    jobs_timed_out: int = 0
    last_batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=64))


@dataclass(eq=False)
class _Job:
    op: str
    items: tuple[Any, ...]  # batchable ops only
    sampling: Sampling | None
    run_alone: Callable[[Engine], Any] | None  # every other op
    future: Future[Any]
    deadline: float
    timed_out: bool = False

    @property
    def size(self) -> int:
        return max(1, len(self.items))


class Scheduler:
    """Bounded queue + dynamic batching in front of one `Engine`.

    Jobs may be submitted before `start()`; they wait and run after warm-up.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        queue_max: int = 64,
        max_batch: int = 8,
        job_timeout_s: float = 600.0,
    ) -> None:
        if queue_max < 1 or max_batch < 1 or job_timeout_s <= 0:
            raise ValueError("queue_max and max_batch must be >= 1 and job_timeout_s > 0")
        self._engine = engine
        self._queue_max = queue_max
        self._max_batch = max_batch
        self._timeout = job_timeout_s
        self._waiting: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._warm = threading.Event()
        self._warm_done = threading.Event()
        self._warm_up_error: BaseException | None = None
        self._batch_seconds: float | None = None
        self.stats = SchedulerStats()
        #: Called on the inference thread after each engine call: (op, items, seconds).
        self.on_batch: Callable[[str, int, float], None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self, *, wait: bool = True) -> None:
        """Start the inference thread, which warms the engine up before serving.

        With wait=True (the default) block until warm-up ended and re-raise its error, if any.
        """
        if self._thread is not None:
            raise RuntimeError("the scheduler was already started")
        self._thread = threading.Thread(target=self._main, name="qwen3-tts-inference", daemon=True)
        self._thread.start()
        if wait:
            self._warm_done.wait()
            if self._warm_up_error is not None:
                raise self._warm_up_error

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until warm-up ended (or `timeout`); True when ready to serve."""
        self._warm_done.wait(timeout)
        return self.ready

    @property
    def ready(self) -> bool:
        """Warm and serving (False before warm-up, after a failed one, and after shutdown)."""
        return self._warm.is_set() and not self._closing

    @property
    def warm_up_error(self) -> BaseException | None:
        return self._warm_up_error

    @property
    def queue_depth(self) -> int:
        """Jobs waiting to run (not counting the batch running now)."""
        with self._cond:
            return len(self._waiting)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop taking jobs, fail waiting ones with ShuttingDown, let the running call finish."""
        self._close(ShuttingDown("the server is shutting down; retry shortly"))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _close(self, error: EngineError) -> None:
        with self._cond:
            self._closing = True
            pending = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        for job in pending:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(error)

    # ---- event-loop API --------------------------------------------------------------------

    async def synthesize(self, items: Sequence[SynthItem], sampling: Sampling) -> list[Audio]:
        if not items:
            return []
        result: list[Audio] = await self._await(self._submit("synthesize", items, sampling))
        return result

    async def synthesize_custom(
        self, items: Sequence[CustomItem], sampling: Sampling
    ) -> list[Audio]:
        if not items:
            return []
        result: list[Audio] = await self._await(self._submit("synthesize_custom", items, sampling))
        return result

    async def create_prompt(self, audio: Audio, transcript: str | None) -> bytes:
        job = self._submit(
            "create_prompt", run_alone=lambda engine: engine.create_prompt(audio, transcript)
        )
        result: bytes = await self._await(job)
        return result

    async def design(self, text: str, description: str, language: str, sampling: Sampling) -> Audio:
        job = self._submit(
            "design", run_alone=lambda engine: engine.design(text, description, language, sampling)
        )
        result: Audio = await self._await(job)
        return result

    async def _await(self, job: _Job) -> Any:
        """Await a job; on timeout or caller cancellation the job is dropped if not started."""
        try:
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(job.future)), timeout=self._timeout
            )
        except TimeoutError:
            with self._cond:
                job.timed_out = True
                self.stats.jobs_timed_out += 1
            job.future.cancel()
            raise JobTimeout(f"the job did not finish within {self._timeout:g} s") from None
        except asyncio.CancelledError:
            job.future.cancel()
            raise

    def _submit(
        self,
        op: str,
        items: Sequence[Any] = (),
        sampling: Sampling | None = None,
        run_alone: Callable[[Engine], Any] | None = None,
    ) -> _Job:
        future: Future[Any] = Future()
        job = _Job(op, tuple(items), sampling, run_alone, future, time.monotonic() + self._timeout)
        with self._cond:
            if self._closing:
                raise ShuttingDown("the server is shutting down; retry shortly")
            if len(self._waiting) >= self._queue_max:
                raise QueueFull(self._retry_after())
            self._waiting.append(job)
            self._cond.notify()
        future.add_done_callback(lambda done: self._forget(job) if done.cancelled() else None)
        return job

    def _forget(self, job: _Job) -> None:
        """A cancelled job leaves the queue at once, so it stops counting towards queue_max."""
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)
                if not job.timed_out:
                    self.stats.jobs_cancelled += 1

    def _retry_after(self) -> int:
        """Seconds until the queue has likely drained: batches waiting x recent batch time."""
        units = sum(job.size if job.op in _BATCHABLE else self._max_batch for job in self._waiting)
        batches = math.ceil(units / self._max_batch) + 1  # +1: the batch running now
        return max(1, math.ceil((self._batch_seconds or 1.0) * batches))

    # ---- inference thread ------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._engine.warm_up()
        except Exception as exc:
            log.exception("engine warm-up failed")
            self._warm_up_error = exc
            self._warm_done.set()
            self._close(ModelUnavailable(f"the model failed to warm up: {exc}"))
            return
        self._warm.set()
        self._warm_done.set()
        while (batch := self._next_batch()) is not None:
            jobs = [job for job in batch if self._claim(job)]
            if not jobs:
                continue
            if jobs[0].op in _BATCHABLE:
                self._run_batch(jobs)
            else:
                self._run_alone(jobs[0])

    def _next_batch(self) -> list[_Job] | None:
        with self._cond:
            while not self._waiting and not self._closing:
                self._cond.wait()
            if self._closing:
                return None
            head = self._waiting.popleft()
            batch = [head]
            if head.op not in _BATCHABLE or head.sampling is None or head.sampling.seed is not None:
                return batch
            size = head.size
            for job in list(self._waiting):
                if size >= self._max_batch:
                    break
                compatible = job.op == head.op and job.sampling == head.sampling
                if compatible and size + job.size <= self._max_batch:
                    self._waiting.remove(job)
                    batch.append(job)
                    size += job.size
            return batch

    def _claim(self, job: _Job) -> bool:
        """Mark a job running unless its caller cancelled it or its deadline passed."""
        if not job.future.set_running_or_notify_cancel():
            with self._cond:
                if not job.timed_out:
                    self.stats.jobs_cancelled += 1
            return False
        if time.monotonic() > job.deadline:
            with self._cond:
                self.stats.jobs_timed_out += 1
            job.future.set_exception(JobTimeout("the job waited past its deadline"))
            return False
        return True

    def _run_batch(self, jobs: list[_Job]) -> None:
        op, sampling = jobs[0].op, jobs[0].sampling
        method = getattr(self._engine, op)
        items = [item for job in jobs for item in job.items]
        try:
            results: list[Audio] = []
            for start in range(0, len(items), self._max_batch):
                chunk = items[start : start + self._max_batch]
                results += self._call(op, len(chunk), functools.partial(method, chunk, sampling))
            if len(results) != len(items):
                raise EngineError(f"the engine returned {len(results)} results for {len(items)}")
        except _INPUT_ERRORS as exc:
            if len(jobs) == 1:
                self._fail(jobs, exc)
            else:
                for job in jobs:
                    self._run_batch([job])
            return
        except Exception as exc:
            self._fail(jobs, exc)
            return
        self.stats.jobs_run += len(jobs)  # counted before callers wake up and look
        offset = 0
        for job in jobs:
            job.future.set_result(results[offset : offset + job.size])
            offset += job.size

    def _run_alone(self, job: _Job) -> None:
        assert job.run_alone is not None
        run = job.run_alone
        try:
            result = self._call(job.op, 1, lambda: run(self._engine))
        except Exception as exc:
            self._fail([job], exc)
            return
        self.stats.jobs_run += 1
        job.future.set_result(result)

    def _call(self, op: str, n_items: int, call: Callable[[], Any]) -> Any:
        started = time.monotonic()
        result = call()
        seconds = time.monotonic() - started
        self._batch_seconds = (
            seconds
            if self._batch_seconds is None
            else (1 - _EWMA_ALPHA) * self._batch_seconds + _EWMA_ALPHA * seconds
        )
        self.stats.batches_run += 1
        self.stats.items_run += n_items
        self.stats.last_batch_sizes.append(n_items)
        if self.on_batch is not None:
            try:
                self.on_batch(op, n_items, seconds)
            except Exception:
                log.exception("on_batch callback failed")
        return result

    def _fail(self, jobs: list[_Job], error: Exception) -> None:
        if not isinstance(error, EngineError):
            log.error("engine call failed", exc_info=error)
        self.stats.jobs_failed += len(jobs)
        for job in jobs:
            job.future.set_exception(error)
