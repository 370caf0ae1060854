"""The scheduler of the step loop: one inference thread admits, steps, decodes and releases.

Each turn of the loop, between two steps: withdraw the work of callers that went away; run
waiting one-off calls (voice prompts); admit waiting chunks into free slots, fairly per user
(admission.py); run one step for every active slot (stepper.py); decode the audio that became
due and hand it to its consumer (codec.py); apply the runaway guard (guard.py); release finished
slots. A request that arrives during a long batch starts at the next step instead of after the
batch, and a chunk that ends frees its slot for the next waiting one at once.

Outcomes: a chunk ends "eos" (the model stopped), "silence" (stopped early: speech had ended),
"length" (used its frame budget: a truncation if the operator's cap set the budget, else a
runaway, retried once with a new seed when unseeded and not streamed, then the job fails with
Runaway, uncharged) or is cancelled with its job. Shutdown stops taking work, lets the loop
drain until a deadline, then fails what is left with ShuttingDown.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from qwen3_tts_server.engine.base import (
    Engine,
    EngineError,
    ModelUnavailable,
    QueueFull,
    Runaway,
    ShuttingDown,
)
from qwen3_tts_server.engine.serving.admission import FairQueue, Refused
from qwen3_tts_server.engine.serving.codec import Codec, StreamDecoder
from qwen3_tts_server.engine.serving.guard import CANCELLED, LENGTH, GuardPolicy, RunawayWatch
from qwen3_tts_server.engine.serving.jobs import Chunk, Job
from qwen3_tts_server.engine.serving.memory import LoadShedder, OutOfMemory, is_out_of_memory
from qwen3_tts_server.engine.step.stepper import Admission, Slot

log = logging.getLogger(__name__)
_EWMA_ALPHA = 0.2
_FATAL = "the GPU reported a fatal error; the server must be restarted (see its log)"
#: Time a turn of the loop spends admitting (prompt building and prefill) before it steps the
#: running slots again. With a GPU step of ~10-30 ms, a turn stays under one 80 ms frame, so
#: running streams keep ahead of real time while a burst of arrivals is taken in.
ADMIT_SECONDS_PER_TURN = 0.05


@dataclass
class LoopStats:
    """Counters for /metrics (cumulative since start)."""

    steps: int = 0
    frames: int = 0
    jobs_run: int = 0
    jobs_failed: int = 0
    jobs_cancelled: int = 0
    jobs_timed_out: int = 0
    chunks_retried: int = 0
    runaways: int = 0
    out_of_memory: int = 0
    finish_reasons: Counter[str] = field(default_factory=Counter)
    #: Seconds the loop thread spent per phase of its turns: "admit" (prompts and prefill),
    #: "step" (the engine step, its codes on the host), "decode" (audio, guard, hand-over).
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    last_step_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=64))


@dataclass(frozen=True)
class LoopConfig:
    """Bounds of the loop (see admission.py for the fairness ones)."""

    slots: int = 8
    reserve: int = 2
    user_slots: int | None = None
    queue_max: int = 64
    user_queue_max: int = 16
    drain_s: float = 10.0
    guard: GuardPolicy = field(default_factory=GuardPolicy)


class StepLoop:
    """Owns the step engine on one thread; other threads submit jobs and one-off calls."""

    def __init__(self, engine: Engine, config: LoopConfig | None = None) -> None:
        self.engine = engine
        self.config = config = config or LoopConfig()
        self._queue: FairQueue[Job] = FairQueue(
            slots=config.slots,
            reserve=config.reserve,
            user_slots=config.user_slots or config.slots,
            max_jobs=config.queue_max,
            user_jobs=config.user_queue_max,
        )
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._active: list[Chunk] = []
        self._cond = threading.Condition()
        self._closing = False
        self._drain_until = math.inf
        self._thread: threading.Thread | None = None
        self._warm = threading.Event()
        self._warm_done = threading.Event()
        self.warm_up_error: BaseException | None = None
        #: A device error that leaves the GPU unusable (a device-side assert): from then on the
        #: loop refuses work and /ready fails, so the orchestrator restarts the process.
        self.fatal_error: BaseException | None = None
        self._chunk_seconds = 1.0
        self.stats = LoopStats()
        #: Fewer active slots for a while after a step ran out of memory (memory.py).
        self.shedder = LoadShedder(config.slots + config.reserve)
        #: Called on the inference thread after each step: (slots stepped, seconds incl. decode).
        self.on_step: Callable[[int, float], None] | None = None

    # ---- lifecycle (any thread) ------------------------------------------------------------

    def start(self, *, wait: bool = True) -> None:
        """Start the inference thread (it warms the engine up first); with wait, block until
        warm-up ended and re-raise its error."""
        if self._thread is not None:
            raise RuntimeError("the loop was already started")
        self._thread = threading.Thread(target=self._main, name="qwen3-tts-loop", daemon=True)
        self._thread.start()
        if wait:
            self._warm_done.wait()
            if self.warm_up_error is not None:
                raise self.warm_up_error

    def wait_ready(self, timeout: float | None = None) -> bool:
        self._warm_done.wait(timeout)
        return self.ready

    @property
    def ready(self) -> bool:
        return self._warm.is_set() and not self._closing and self.fatal_error is None

    @property
    def queue_depth(self) -> int:
        """Chunks waiting for a slot."""
        with self._cond:
            return sum(job.waiting_count() for job in self._queue)

    @property
    def active(self) -> int:
        return len(self._active)

    def shutdown(self, drain_s: float | None = None, timeout: float | None = None) -> None:
        """Take no new work; finish what runs and waits for up to `drain_s` seconds (default
        LoopConfig.drain_s), then fail the rest with ShuttingDown. Joins the thread."""
        drain = self.config.drain_s if drain_s is None else drain_s
        with self._cond:
            self._closing = True
            self._drain_until = min(self._drain_until, time.monotonic() + drain)
            self._cond.notify_all()
        if self._thread is None:
            self._fail_everything(ShuttingDown("the server is shutting down; retry shortly"))
        elif self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # ---- submission (any thread) -----------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a job, or raise ShuttingDown / QueueFull (with a Retry-After estimate)."""
        with self._cond:
            if self._closing:
                raise ShuttingDown("the server is shutting down; retry shortly")
            if self.fatal_error is not None:
                raise ModelUnavailable(_FATAL)
            try:
                self._queue.add(job)
            except Refused:
                raise QueueFull(self._retry_after(job.user)) from None
            self._cond.notify()

    def call(self, run: Callable[[], Any]) -> Future[Any]:
        """Run a one-off engine call (e.g. a voice prompt) between two steps."""
        future: Future[Any] = Future()
        with self._cond:
            if self._closing:
                raise ShuttingDown("the server is shutting down; retry shortly")
            self._calls.append((run, future))
            self._cond.notify()
        return future

    def withdraw(self, job: Job, *, timed_out: bool = False) -> None:
        """The caller went away: drop the job's waiting chunks and stop its running ones."""
        job.cancel(timed_out=timed_out)
        with self._cond:
            self._cond.notify()

    def _retry_after(self, user: Hashable) -> int:
        """Seconds until this user's queued work has likely drained (at least 1)."""
        chunks = sum(job.waiting_count() for job in self._queue if job.user == user)
        rounds = math.ceil((chunks + 1) / max(1, self.config.slots))
        return max(1, min(3600, math.ceil(self._chunk_seconds * rounds)))

    # ---- the inference thread --------------------------------------------------------------

    def _main(self) -> None:
        try:
            self.engine.warm_up()
        except Exception as exc:
            log.exception("engine warm-up failed")
            self.warm_up_error = exc
            self._warm_done.set()
            with self._cond:
                self._closing = True
            self._fail_everything(ModelUnavailable(f"the model failed to warm up: {exc}"))
            return
        self._warm.set()
        self._warm_done.set()
        while self._wait_for_work():
            try:
                self._withdraw()
                self._run_calls()
                self._admit()
                if self._active:
                    self._step()
            except Exception as exc:  # a bug: fail what is in flight, keep serving
                log.exception("the step loop failed; failing the work in flight")
                failure = (
                    OutOfMemory(exc)
                    if is_out_of_memory(exc)
                    else EngineError(f"the engine failed: {exc}")
                )
                self._fail_everything(failure)
        self._fail_everything(ShuttingDown("the server shut down before this work ran"))

    def _wait_for_work(self) -> bool:
        """Block until there is something to do; False when the loop must end."""
        with self._cond:
            while True:
                pending = self._active or self._calls or any(j.waiting() for j in self._queue)
                if self._closing and (not pending or time.monotonic() >= self._drain_until):
                    return False
                if pending or any(job.cancelled for job in self._queue):
                    return True
                timeout = None if not self._closing else self._drain_until - time.monotonic()
                self._cond.wait(timeout)

    def _withdraw(self) -> None:
        with self._cond:
            gone = [job for job in self._queue if job.cancelled]
            for job in gone:
                self._queue.remove(job)
        for job in gone:
            for chunk in job.running():
                self._release(chunk, CANCELLED)
            if job.timed_out:
                self.stats.jobs_timed_out += 1
            else:
                self.stats.jobs_cancelled += 1
            job.fail(ShuttingDown("the request was withdrawn"))

    def _run_calls(self) -> None:
        while True:
            with self._cond:
                if not self._calls:
                    return
                run, future = self._calls.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(run())
            except Exception as exc:
                future.set_exception(OutOfMemory(exc) if is_out_of_memory(exc) else exc)

    def _admit(self) -> None:
        """Admit waiting chunks into free slots (as many as the load shedder allows) for up to
        ADMIT_SECONDS_PER_TURN (at least one chunk): a burst of arrivals is spread over a few
        steps instead of stalling every running stream for all of their prefills at once."""
        started = time.perf_counter()
        try:
            self._admit_until(started + ADMIT_SECONDS_PER_TURN)
        finally:
            self.stats.seconds["admit"] += time.perf_counter() - started

    def _admit_until(self, deadline: float) -> None:
        """Prepare waiting chunks until the deadline, the free slots or the turn's prefill
        tokens run out, then prefill them together (one batched forward per model)."""
        pending: list[tuple[Chunk, Admission]] = []
        tokens = 0
        while (
            time.perf_counter() < deadline
            and len(self._active) + len(pending) < self.shedder.limit()
            and tokens < self.engine.prefill_tokens
        ):
            with self._cond:
                held = Counter(chunk.job.user for chunk in self._active)
                held.update(chunk.job.user for chunk, _ in pending)
                job = self._queue.pick(dict(held))
                if job is None:
                    break
                chunk = job.take()
            try:
                # Unseeded slots draw a fresh random seed, so a retry is a new attempt.
                admission = self.engine.prepare(chunk.item, job.sampling, chunk.budget)
            except Exception as exc:
                self._fail(job, exc)
                continue
            pending.append((chunk, admission))
            tokens += admission.tokens
        # a job that failed on a later chunk's prepare takes its earlier chunks with it
        pending = [(chunk, adm) for chunk, adm in pending if not chunk.job.future.done()]
        if not pending:
            return
        try:
            slots = self.engine.prefill([admission for _, admission in pending])
        except Exception as exc:
            for job in dict.fromkeys(chunk.job for chunk, _ in pending):
                self._fail(job, exc)
            return
        for (chunk, _), slot in zip(pending, slots, strict=True):
            self._start(chunk, slot)

    def _start(self, chunk: Chunk, slot: Slot) -> None:
        if chunk.job.started is None:
            chunk.job.started = time.perf_counter()
        chunk.slot = slot
        chunk.decoder = StreamDecoder(slot.lane.codec, chunk.job.schedule, slot.context)
        chunk.watch = RunawayWatch(chunk.item.text, slot.lane.codec.upsample, self.config.guard)
        chunk.started = time.monotonic()
        self._active.append(chunk)

    def _step(self) -> None:
        chunks = list(self._active)
        started = time.perf_counter()
        try:
            self.engine.step([chunk.slot for chunk in chunks if chunk.slot is not None])
        except Exception as exc:
            if is_out_of_memory(exc):
                self._out_of_memory(chunks, exc)
                return
            log.exception("engine step failed")
            for job in {chunk.job for chunk in chunks}:
                self._fail(job, exc)
            return
        stepped = time.perf_counter()
        self.stats.seconds["step"] += stepped - started
        self.stats.steps += 1
        self.stats.frames += len(chunks)
        self.stats.last_step_sizes.append(len(chunks))
        self._decode_due([c for c in chunks if c.slot is not None])
        for chunk in chunks:
            if chunk.slot is not None:
                self._advance(chunk)
        self.stats.seconds["decode"] += time.perf_counter() - stepped
        if self.on_step is not None:
            try:
                self.on_step(len(chunks), time.perf_counter() - started)
            except Exception:
                log.exception("on_step callback failed")

    def _out_of_memory(self, chunks: list[Chunk], error: Exception) -> None:
        """A step ran out of memory: allow fewer slots, and put the step's chunks back in the
        queue to start over, unless a chunk's audio has reached its consumer already (it
        cannot be unsent) or it ran alone (fewer slots cannot help): those jobs fail."""
        self.stats.out_of_memory += 1
        limit = self.shedder.shed(len(chunks))
        log.warning("a step of %d slots ran out of memory; now at most %d", len(chunks), limit)
        for chunk in chunks:
            self._release(chunk, CANCELLED)
        for chunk in chunks:
            job = chunk.job
            if job.future.done():
                continue
            if len(chunks) > 1 and chunk.sent == 0:
                job.requeue(chunk)
            else:
                self._fail(job, OutOfMemory(error))

    def _decode_due(self, chunks: list[Chunk]) -> None:
        """Decode the audio that became due in this step, one decoder call per model for all
        slots (the first pieces of streams that started together come out together)."""
        by_codec: dict[Codec, list[tuple[Chunk, tuple[torch.Tensor, int]]]] = {}
        for chunk in chunks:
            slot, decoder = chunk.slot, chunk.decoder
            assert slot is not None and decoder is not None
            if decoder.due(slot.count, final=slot.done):
                window = decoder.window(slot.frames)
                by_codec.setdefault(decoder.codec, []).append((chunk, window))
        for codec, group in by_codec.items():
            try:
                pieces = codec.decode_many([window for _, window in group])
            except Exception as exc:  # out of memory, say: these jobs fail, the rest go on
                log.exception("decoding failed")
                for job in {chunk.job for chunk, _ in group}:
                    self._fail(job, exc)
                continue
            for (chunk, _), samples in zip(group, pieces, strict=True):
                assert chunk.watch is not None
                chunk.watch.hear(samples)
                chunk.job.add_audio(chunk, samples)

    def _advance(self, chunk: Chunk) -> None:
        """After the step's decode: stop a chunk whose speech has ended, finish a done one."""
        slot, decoder, watch = chunk.slot, chunk.decoder, chunk.watch
        assert slot is not None and decoder is not None and watch is not None
        if not slot.done:
            verdict = watch.verdict(slot.frames)
            if verdict is None:
                return
            slot.finish = verdict
            if decoder.due(slot.count, final=True):
                chunk.job.add_audio(chunk, decoder.decode(slot.frames))
        self._finish(chunk)

    def _finish(self, chunk: Chunk) -> None:
        slot, job = chunk.slot, chunk.job
        assert slot is not None and slot.finish is not None
        reason = slot.finish
        chunk.frames = slot.count
        self._release(chunk, reason)
        seconds = time.monotonic() - chunk.started
        self._chunk_seconds += _EWMA_ALPHA * (seconds - self._chunk_seconds)
        if reason == LENGTH and not chunk.truncates:
            if chunk.attempt == 0 and job.sampling.seed is None and not job.streamed:
                self.stats.chunks_retried += 1
                job.requeue(chunk)
                return
            self.stats.runaways += 1
            self._fail(
                job,
                Runaway(
                    f"the model did not finish speaking a text within its {chunk.budget}-frame "
                    "budget (a known failure of the model); retry, or rephrase the text"
                ),
            )
            return
        if job.complete(chunk, reason):
            with self._cond:
                self._queue.remove(job)
            self.stats.jobs_run += 1  # counted before the caller wakes up and looks
            job.resolve()

    def _release(self, chunk: Chunk, reason: str) -> None:
        if chunk.slot is not None:
            self.engine.release(chunk.slot)
            chunk.slot = None
        if chunk in self._active:
            self._active.remove(chunk)
        self.stats.finish_reasons[reason] += 1

    def _fail(self, job: Job, error: BaseException) -> None:
        fatal = isinstance(error, torch.AcceleratorError) and self.fatal_error is None
        if fatal:
            log.critical("the accelerator failed; refusing work until restarted", exc_info=error)
            self.fatal_error = error
            error = ModelUnavailable(_FATAL)
        elif is_out_of_memory(error) and not isinstance(error, OutOfMemory):
            error = OutOfMemory(error)
        if not isinstance(error, EngineError):
            log.error("engine work failed", exc_info=error)
        for chunk in job.running():
            self._release(chunk, CANCELLED)
        with self._cond:
            self._queue.remove(job)
        self.stats.jobs_failed += 1
        job.fail(error)
        if fatal:
            self._fail_everything(ModelUnavailable(_FATAL))

    def _fail_everything(self, error: EngineError) -> None:
        with self._cond:
            jobs = list(self._queue)
            calls = list(self._calls)
            self._calls.clear()
        for job in jobs:
            self._fail(job, error)
        for _, future in calls:
            if future.set_running_or_notify_cancel():
                future.set_exception(error)
