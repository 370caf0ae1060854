"""Scheduler over the real tiny-model engine, wrapped in a proxy that records every call.

Jobs are mostly queued *before* the scheduler starts, which makes batching deterministic without
sleeping: when the inference thread wakes, every job is already waiting. Where a job must be
running while others wait, the proxy holds the engine call at a gate the test opens.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import pytest

from qwen3_tts_server.engine.base import (
    Audio,
    CustomItem,
    InvalidInput,
    JobTimeout,
    ModelUnavailable,
    QueueFull,
    Sampling,
    ShuttingDown,
    SynthItem,
)
from qwen3_tts_server.engine.qwen import QwenEngine
from qwen3_tts_server.engine.scheduler import Scheduler

T = TypeVar("T")
FRAME = 1920


class RecordingEngine:
    """The real engine, plus a log of calls and an optional gate that holds synthesis calls."""

    def __init__(self, inner: QwenEngine) -> None:
        self.inner = inner
        self.calls: list[tuple[str, list[Any]]] = []
        self.results: list[list[Audio]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.fail_on: str | None = None

    def info(self) -> Any:
        return self.inner.info()

    def warm_up(self) -> None:
        self.inner.warm_up()

    def create_prompt(self, audio: Audio, transcript: str | None) -> bytes:
        self.calls.append(("create_prompt", [transcript]))
        return self.inner.create_prompt(audio, transcript)

    def design(self, text: str, description: str, language: str, sampling: Sampling) -> Audio:
        self.calls.append(("design", [text]))
        return self.inner.design(text, description, language, sampling)

    def synthesize(self, items: Sequence[SynthItem], sampling: Sampling) -> list[Audio]:
        return self._record("synthesize", items, lambda: self.inner.synthesize(items, sampling))

    def synthesize_custom(self, items: Sequence[CustomItem], sampling: Sampling) -> list[Audio]:
        return self._record(
            "synthesize_custom", items, lambda: self.inner.synthesize_custom(items, sampling)
        )

    def _record(
        self, op: str, items: Sequence[Any], call: Callable[[], list[Audio]]
    ) -> list[Audio]:
        self.calls.append((op, list(items)))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(60)
        if self.fail_on is not None and any(self.fail_on in item.text for item in items):
            raise RuntimeError("the GPU caught fire")
        result = call()
        self.results.append(result)
        return result

    def texts(self) -> list[list[str]]:
        return [[item.text for item in items] for op, items in self.calls if op.startswith("synth")]


SchedulerFactory = Callable[..., tuple[Scheduler, RecordingEngine]]


@pytest.fixture
def make_scheduler(engine: QwenEngine) -> Iterator[SchedulerFactory]:
    made: list[tuple[Scheduler, RecordingEngine]] = []

    def factory(**kwargs: Any) -> tuple[Scheduler, RecordingEngine]:
        recorder = RecordingEngine(engine)
        options = {"queue_max": 64, "max_batch": 8, "job_timeout_s": 120.0} | kwargs
        scheduler = Scheduler(recorder, **options)
        made.append((scheduler, recorder))
        return scheduler, recorder

    yield factory
    for scheduler, recorder in made:
        if recorder.gate is not None:
            recorder.gate.set()
        scheduler.shutdown()


async def queued(coro: Awaitable[T]) -> asyncio.Task[T]:
    """Start a job's task and let it reach the queue."""
    task = asyncio.ensure_future(coro)
    await asyncio.sleep(0)
    return task


def items_for(job: int, count: int, prompts: dict[str, bytes]) -> list[SynthItem]:
    voices = ("icl", "xvec")
    return [
        SynthItem(f"Job {job} item {i}.", "english", prompts[voices[(job + i) % 2]])
        for i in range(count)
    ]


def assert_answers_match_calls(
    recorder: RecordingEngine, jobs: list[list[SynthItem]], answers: list[list[Audio]]
) -> None:
    """Each caller got exactly the clips the engine produced for its own items, in its order."""
    produced: dict[str, np.ndarray] = {}
    for (_, items), clips in zip(recorder.calls, recorder.results, strict=True):
        for item, clip in zip(items, clips, strict=True):
            produced[item.text] = clip.samples
    for items, answer in zip(jobs, answers, strict=True):
        assert len(answer) == len(items)
        for item, clip in zip(items, answer, strict=True):
            assert clip.sample_rate == 24000
            # whole frames within the cap (+1 sample: qwen-tts's ICL cut rounds down)
            assert FRAME <= clip.samples.shape[0] <= 12 * FRAME + 1
            assert clip.samples.shape[0] % FRAME <= 1
            assert np.array_equal(clip.samples, produced[item.text])


def test_concurrent_jobs_are_batched(
    make_scheduler: SchedulerFactory, voice_prompts: dict[str, bytes]
) -> None:
    scheduler, recorder = make_scheduler(max_batch=8)
    jobs = [items_for(job, 1, voice_prompts) for job in range(8)]

    async def scenario() -> list[list[Audio]]:
        tasks = [await queued(scheduler.synthesize(items, Sampling())) for items in jobs]
        assert scheduler.queue_depth == 8
        scheduler.start(wait=False)
        return list(await asyncio.gather(*tasks))

    answers = asyncio.run(scenario())
    assert len(recorder.calls) < 8
    assert recorder.texts() == [[items[0].text for items in jobs]]  # one call, oldest first
    assert_answers_match_calls(recorder, jobs, answers)
    assert scheduler.stats.batches_run >= 1 and scheduler.stats.last_batch_sizes[-1] == 8


def test_batches_respect_max_batch_and_never_split_a_job(
    make_scheduler: SchedulerFactory, voice_prompts: dict[str, bytes]
) -> None:
    scheduler, recorder = make_scheduler(max_batch=4)
    batches: list[tuple[str, int]] = []
    scheduler.on_batch = lambda op, n, seconds: batches.append((op, n))
    jobs = [items_for(job, size, voice_prompts) for job, size in enumerate([3, 2, 2, 1, 5])]

    async def scenario() -> list[list[Audio]]:
        tasks = [await queued(scheduler.synthesize(items, Sampling())) for items in jobs]
        scheduler.start(wait=False)
        return list(await asyncio.gather(*tasks))

    answers = asyncio.run(scenario())
    sizes = [len(texts) for texts in recorder.texts()]
    # [3 + 1], [2 + 2], then the 5-item job alone in chunks of 4 and 1
    assert sizes == [4, 4, 4, 1]
    assert recorder.texts()[0] == [item.text for item in jobs[0] + jobs[3]]
    assert batches[-4:] == [("synthesize", n) for n in sizes]
    assert_answers_match_calls(recorder, jobs, answers)


def test_only_compatible_jobs_share_a_call(
    make_scheduler: SchedulerFactory, voice_prompts: dict[str, bytes]
) -> None:
    scheduler, recorder = make_scheduler()
    prompt = voice_prompts["icl"]
    seeded = [SynthItem("Seeded words.", "english", prompt)]

    async def scenario() -> list[Any]:
        tasks = [
            await queued(scheduler.synthesize([SynthItem("Warm.", "english", prompt)], Sampling())),
            await queued(
                scheduler.synthesize(
                    [SynthItem("Cold.", "english", prompt)], Sampling(temperature=0.5)
                )
            ),
            await queued(
                scheduler.synthesize_custom(
                    [CustomItem("Preset.", "english", "vivian")], Sampling()
                )
            ),
            await queued(scheduler.synthesize(seeded, Sampling(seed=7))),
            await queued(scheduler.synthesize(seeded, Sampling(seed=7))),
            await queued(
                scheduler.synthesize([SynthItem("Warm again.", "english", prompt)], Sampling())
            ),
        ]
        scheduler.start(wait=False)
        return list(await asyncio.gather(*tasks))

    answers = asyncio.run(scenario())
    assert [(op, [item.text for item in items]) for op, items in recorder.calls] == [
        ("synthesize", ["Warm.", "Warm again."]),
        ("synthesize", ["Cold."]),
        ("synthesize_custom", ["Preset."]),
        ("synthesize", ["Seeded words."]),
        ("synthesize", ["Seeded words."]),
    ]
    assert np.array_equal(answers[3][0].samples, answers[4][0].samples)  # same seed, same audio


def test_prompt_and_design_jobs(
    make_scheduler: SchedulerFactory, make_audio: Callable[..., Audio]
) -> None:
    scheduler, recorder = make_scheduler()
    scheduler.start()
    assert scheduler.ready

    async def scenario() -> tuple[bytes, Audio]:
        prompt = await scheduler.create_prompt(make_audio(sample_rate=22050), "My voice.")
        designed = await scheduler.design("Designed.", "A bright voice.", "english", Sampling())
        [clip] = await scheduler.synthesize(
            [SynthItem("With the new voice.", "auto", prompt)], Sampling()
        )
        assert clip.samples.shape[0] > 0
        return prompt, designed

    prompt, designed = asyncio.run(scenario())
    assert prompt and designed.samples.shape[0] % FRAME <= 1
    assert [op for op, _ in recorder.calls] == ["create_prompt", "design", "synthesize"]


def test_full_queue_is_refused_at_once(
    make_scheduler: SchedulerFactory, voice_prompts: dict[str, bytes]
) -> None:
    scheduler, _ = make_scheduler(queue_max=2)

    async def scenario() -> None:
        tasks = [
            await queued(scheduler.synthesize(items_for(job, 1, voice_prompts), Sampling()))
            for job in range(2)
        ]
        with pytest.raises(QueueFull) as full:
            await scheduler.synthesize(items_for(2, 1, voice_prompts), Sampling())
        assert full.value.retry_after_s >= 1
        scheduler.start(wait=False)
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_a_cancelled_job_never_runs(
    make_scheduler: SchedulerFactory, voice_prompts: dict[str, bytes]
) -> None:
    scheduler, recorder = make_scheduler()
    jobs = [items_for(job, 1, voice_prompts) for job in range(3)]

    async def scenario() -> None:
        tasks = [await queued(scheduler.synthesize(items, Sampling())) for items in jobs]
        tasks[1].cancel()  # the client went away
        await asyncio.gather(tasks[1], return_exceptions=True)
        assert scheduler.queue_depth == 2  # it left the queue at once
        scheduler.start(wait=False)
        await asyncio.gather(tasks[0], tasks[2])
        assert tasks[1].cancelled()

    asyncio.run(scenario())
    ran = [text for texts in recorder.texts() for text in texts]
    assert ran == [jobs[0][0].text, jobs[2][0].text]
    assert scheduler.stats.jobs_cancelled == 1 and scheduler.stats.jobs_run == 2


def test_jobs_time_out_and_late_jobs_never_run(
    make_scheduler: SchedulerFactory, voice_prompts: dict[str, bytes]
) -> None:
    scheduler, recorder = make_scheduler(job_timeout_s=0.5)
    recorder.gate = threading.Event()
    scheduler.start()

    async def scenario() -> None:
        running = await queued(scheduler.synthesize(items_for(0, 1, voice_prompts), Sampling()))
        await asyncio.to_thread(recorder.entered.wait, 60)
        waiting = await queued(scheduler.synthesize(items_for(1, 1, voice_prompts), Sampling()))
        for task in (running, waiting):
            with pytest.raises(JobTimeout):
                await task
        assert recorder.gate is not None
        recorder.gate.set()

    asyncio.run(scenario())
    scheduler.shutdown()
    assert recorder.texts() == [[items_for(0, 1, voice_prompts)[0].text]]
    assert scheduler.stats.jobs_timed_out == 2 and scheduler.stats.jobs_cancelled == 0


def test_shutdown_fails_waiting_jobs_fast(
    make_scheduler: SchedulerFactory, voice_prompts: dict[str, bytes]
) -> None:
    scheduler, recorder = make_scheduler()
    recorder.gate = threading.Event()
    scheduler.start()

    async def scenario() -> None:
        running = await queued(scheduler.synthesize(items_for(0, 1, voice_prompts), Sampling()))
        await asyncio.to_thread(recorder.entered.wait, 60)
        waiting = [
            await queued(scheduler.synthesize(items_for(job, 1, voice_prompts), Sampling(seed=job)))
            for job in (1, 2)
        ]
        stopping = asyncio.ensure_future(asyncio.to_thread(scheduler.shutdown))
        for task in waiting:
            with pytest.raises(ShuttingDown):
                await task
        with pytest.raises(ShuttingDown):
            await scheduler.synthesize(items_for(3, 1, voice_prompts), Sampling())
        assert not scheduler.ready
        assert recorder.gate is not None
        recorder.gate.set()  # the running call finishes and its caller still gets its audio
        [clip] = await running
        assert clip.samples.shape[0] > 0
        await stopping

    asyncio.run(scenario())
    assert len(recorder.calls) == 1


def test_engine_errors_fail_only_their_jobs(
    make_scheduler: SchedulerFactory, voice_prompts: dict[str, bytes]
) -> None:
    scheduler, recorder = make_scheduler()
    recorder.fail_on = "boom"
    prompt = voice_prompts["xvec"]

    async def scenario() -> list[Any]:
        tasks = [
            await queued(
                scheduler.synthesize([SynthItem("Fine one.", "english", prompt)], Sampling())
            ),
            await queued(
                scheduler.synthesize([SynthItem("Bad tongue.", "klingon", prompt)], Sampling())
            ),
            await queued(
                scheduler.synthesize([SynthItem("Fine two.", "english", prompt)], Sampling())
            ),
            await queued(
                scheduler.synthesize([SynthItem("boom", "english", prompt)], Sampling(seed=3))
            ),
            await queued(
                scheduler.synthesize([SynthItem("After.", "english", prompt)], Sampling(seed=4))
            ),
        ]
        scheduler.start(wait=False)
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    fine, bad, fine_too, boom, after = asyncio.run(scenario())
    assert isinstance(bad, InvalidInput) and "klingon" in str(bad)
    assert isinstance(boom, RuntimeError) and "fire" in str(boom)
    for answer in (fine, fine_too, after):
        assert isinstance(answer, list) and answer[0].samples.shape[0] > 0
    # the merged call failed on one job's input, so its jobs were retried one by one
    assert recorder.texts()[:4] == [
        ["Fine one.", "Bad tongue.", "Fine two."],
        ["Fine one."],
        ["Bad tongue."],
        ["Fine two."],
    ]
    assert scheduler.stats.jobs_failed == 2


def test_failed_warm_up_is_reported(engine: QwenEngine, voice_prompts: dict[str, bytes]) -> None:
    class Broken(RecordingEngine):
        def warm_up(self) -> None:
            raise RuntimeError("no GPU memory")

    blocking = Scheduler(Broken(engine), queue_max=4, max_batch=2, job_timeout_s=10)
    with pytest.raises(RuntimeError, match="no GPU memory"):
        blocking.start()
    assert not blocking.ready and isinstance(blocking.warm_up_error, RuntimeError)

    background = Scheduler(Broken(engine), queue_max=4, max_batch=2, job_timeout_s=10)

    async def scenario() -> None:
        task = await queued(background.synthesize(items_for(0, 1, voice_prompts), Sampling()))
        background.start(wait=False)
        with pytest.raises(ModelUnavailable, match="failed to warm up"):
            await task

    asyncio.run(scenario())
    assert background.wait_ready(10) is False
    for scheduler in (blocking, background):
        scheduler.shutdown()


def test_bad_settings_are_refused(engine: QwenEngine) -> None:
    with pytest.raises(ValueError, match="queue_max"):
        Scheduler(engine, queue_max=0)
