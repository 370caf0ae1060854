"""The step loop over the real tiny-model engine: results, streaming, fairness, withdrawal,
the runaway guard and shutdown. No timing assertions: orderings and counters only."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from qwen3_tts_server.engine.base import (
    CustomItem,
    InvalidInput,
    ModelUnavailable,
    QueueFull,
    Runaway,
    ShuttingDown,
    SynthItem,
)
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.serving.guard import EOS, LENGTH, frame_budget
from qwen3_tts_server.engine.serving.loop import LoopConfig
from qwen3_tts_server.engine.serving.scheduler import Scheduler
from qwen3_tts_server.engine.step import stepper
from qwen3_tts_server.engine.step.stepper import StepEngine
from qwen3_tts_server.values import Audio, Sampling

FRAME = 1920
GREEDY = Sampling(temperature=0)
#: Greedy decoding of this text with the "xvec" voice never reaches EOS within its budget on
#: the tiny models (checked by `runaway_item`).
RUNAWAY_TEXT = "Hi."

Factory = Callable[..., Scheduler]


@pytest.fixture(scope="module")
def uncapped(tiny_models_dir: Path) -> StepEngine:
    """A step engine without the tests' 12-frame cap: chunks get their texts' budgets."""
    return StepEngine(QwenEngine.load(tiny_models_dir / "base", device="cpu", dtype="float32"))


@pytest.fixture
def make_scheduler(engine: StepEngine, uncapped: StepEngine) -> Iterator[Factory]:
    made: list[Scheduler] = []

    def factory(*, capped: bool = True, **config: Any) -> Scheduler:
        chosen = engine if capped else uncapped
        scheduler = Scheduler(chosen, LoopConfig(**config), job_timeout_s=120)
        scheduler.start()
        made.append(scheduler)
        return scheduler

    yield factory
    for scheduler in made:
        scheduler.shutdown(drain_s=0)


def items(prompts: dict[str, bytes], count: int, voice: str = "xvec") -> list[SynthItem]:
    return [
        SynthItem(f"Sentence number {i} to speak.", "english", prompts[voice]) for i in range(count)
    ]


async def settle(scheduler: Scheduler) -> None:
    """Wait until the loop is idle (nothing active or queued)."""
    for _ in range(2000):
        if scheduler.loop.active == 0 and len(scheduler.loop._queue) == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the loop never went idle")


def test_results_carry_audio_frames_and_finish_reasons(
    make_scheduler: Factory, voice_prompts: dict[str, bytes]
) -> None:
    scheduler = make_scheduler()
    result = asyncio.run(scheduler.generate(items(voice_prompts, 5, "icl"), Sampling(), user=1))
    results = result.chunks
    assert len(results) == 5 and result.queued_s >= 0 and result.model_s > 0
    for result in results:
        assert result.finish_reason in (EOS, LENGTH)
        assert 1 <= result.frames <= 12
        assert result.audio.sample_rate == 24000
        assert result.audio.samples.shape == (result.frames * FRAME,)
        assert not result.retried  # the cap (12 frames) is below every text budget: truncation
    assert scheduler.stats.jobs_run == 1 and scheduler.stats.runaways == 0
    assert sum(scheduler.stats.finish_reasons.values()) == 5


def test_old_call_shapes_still_work(
    make_scheduler: Factory, make_audio: Callable[..., Any]
) -> None:
    scheduler = make_scheduler()

    async def calls() -> None:
        prompt = await scheduler.create_prompt(make_audio(), "A transcript.")
        clips = await scheduler.synthesize([SynthItem("Hello.", "english", prompt)], Sampling())
        custom = await scheduler.synthesize_custom(
            [CustomItem("Hi.", "english", "ryan")], Sampling()
        )
        designed = await scheduler.design("Hi.", "A calm voice.", "english", Sampling())
        assert [len(clips), len(custom)] == [1, 1]
        for clip in (*clips, *custom, designed):
            assert clip.samples.shape[0] % FRAME == 0 and clip.samples.shape[0] > 0
        with pytest.raises(InvalidInput):
            await scheduler.synthesize([SynthItem("  ", "english", prompt)], Sampling())

    asyncio.run(calls())


def test_streamed_pieces_come_in_order_and_join_to_the_results(
    make_scheduler: Factory, voice_prompts: dict[str, bytes]
) -> None:
    scheduler = make_scheduler()

    async def stream() -> tuple[list[Any], list[Any]]:
        audio = scheduler.stream(items(voice_prompts, 3, "icl"), GREEDY, user=1)
        pieces = [piece async for piece in audio]
        assert audio.result is not None
        return pieces, audio.result.chunks

    pieces, results = asyncio.run(stream())
    assert [p.index for p in pieces] == sorted(p.index for p in pieces)
    for index, result in enumerate(results):
        mine = [p for p in pieces if p.index == index]
        assert mine[-1].last and mine[-1].finish_reason == result.finish_reason
        assert not any(p.last for p in mine[:-1])
        joined = np.concatenate([p.samples for p in mine])
        assert np.array_equal(joined, result.audio.samples)
        if result.frames > 4:  # the first piece is a small one (4 frames), for first audio soon
            assert mine[0].samples.shape[0] == 4 * FRAME


def test_a_flooding_user_gets_queue_full_and_others_are_served(
    make_scheduler: Factory, voice_prompts: dict[str, bytes]
) -> None:
    scheduler = make_scheduler(user_queue_max=2, queue_max=10)

    async def flood() -> None:
        floods = [scheduler.generate(items(voice_prompts, 2), Sampling(), user="flood")]
        floods.append(scheduler.generate(items(voice_prompts, 2), Sampling(), user="flood"))
        tasks = [asyncio.ensure_future(job) for job in floods]
        await asyncio.sleep(0)  # both are queued now
        with pytest.raises(QueueFull) as refused:
            await scheduler.generate(items(voice_prompts, 1), Sampling(), user="flood")
        assert refused.value.retry_after_s >= 1
        other = [
            scheduler.generate(items(voice_prompts, 1), Sampling(), user="other") for _ in range(2)
        ]
        answers = await asyncio.gather(*other, *tasks)
        assert [len(answer.chunks) for answer in answers] == [1, 1, 2, 2]

    asyncio.run(flood())


def test_a_short_request_runs_beside_a_batch_that_fills_every_slot(
    make_scheduler: Factory, engine: StepEngine, voice_prompts: dict[str, bytes]
) -> None:
    batch = items(voice_prompts, 1)[:1] * 12
    solo = engine.admit(batch[0], GREEDY, 12)
    while not solo.done:
        engine.step([solo])
    engine.release(solo)
    assert solo.count >= 8  # precondition: each batch chunk takes several steps
    scheduler = make_scheduler(slots=2, reserve=1)

    async def race() -> None:
        big = asyncio.ensure_future(scheduler.generate(batch, GREEDY, user="batch"))
        while scheduler.loop.active < 2:
            await asyncio.sleep(0.005)
        done = await scheduler.generate(items(voice_prompts, 1, "icl"), GREEDY, user="short")
        assert done.chunks[0].frames >= 1
        assert not big.done()  # the batch still has most of its chunks ahead of it
        assert len((await big).chunks) == 12

    asyncio.run(race())


class PrefillLog:
    """The real engine with a chosen prefill budget, noting the texts of every prefill and
    refusing to prepare the texts in `refuse` (as it refuses bad input)."""

    def __init__(self, inner: StepEngine, prefill_tokens: int, refuse: set[str]) -> None:
        self.inner, self.prefill_tokens, self.refuse = inner, prefill_tokens, refuse
        self.batches: list[list[str]] = []

    def prepare(self, item: Any, sampling: Sampling, budget: int) -> stepper.Admission:
        if item.text in self.refuse:
            raise InvalidInput(f"scripted refusal of {item.text!r}")
        return self.inner.prepare(item, sampling, budget)

    def prefill(self, admissions: Any) -> list[stepper.Slot]:
        self.batches.append([admission.item.text for admission in admissions])
        return self.inner.prefill(admissions)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _run_logged(
    engine: StepEngine,
    texts: list[str],
    prefill_tokens: int,
    refuse: frozenset[str] = frozenset(),
    config: LoopConfig | None = None,
) -> tuple[PrefillLog, Any]:
    """One job of `texts` through a loop over PrefillLog; its result or its error."""
    log = PrefillLog(engine, prefill_tokens, set(refuse))
    scheduler = Scheduler(log, config or LoopConfig(), job_timeout_s=120)  # type: ignore[arg-type]
    scheduler.start()
    prompt = engine.create_prompt(Audio(np.zeros(16000, dtype=np.float32), 16000), None)
    job = [SynthItem(text, "english", prompt) for text in texts]
    try:
        try:
            outcome: Any = asyncio.run(scheduler.generate(job, GREEDY, user=1))
        except InvalidInput as exc:
            outcome = exc
        assert engine.lane("base").table.free_rows == 8  # nothing held after the job
    finally:
        scheduler.shutdown(drain_s=0)
    return log, outcome


@pytest.mark.parametrize("tokens", [1, 100_000])
def test_a_turn_prefills_its_arrivals_together_within_its_token_budget(
    engine: StepEngine, tokens: int
) -> None:
    texts = [f"Sentence number {i} to speak." for i in range(5)]
    log, result = _run_logged(engine, texts, tokens)
    assert len(result.chunks) == 5
    sizes = [len(batch) for batch in log.batches]
    assert sorted(text for batch in log.batches for text in batch) == sorted(texts)
    if tokens == 1:  # at least one request a turn, and no more once its prompt fills the budget
        assert sizes == [1] * 5
    else:  # five prompts prepared in well under a turn's time start in one batch
        assert max(sizes) > 1, sizes
        # ... as many as the user may hold: 2 of 2 slots (the third is kept for other users)
        log, _ = _run_logged(engine, texts, tokens, config=LoopConfig(slots=2, reserve=1))
        assert max(len(batch) for batch in log.batches) == 2


def test_a_job_refused_on_a_later_chunk_prefills_none_of_its_chunks(engine: StepEngine) -> None:
    texts = ["First sentence.", "Second sentence.", "Refused sentence.", "Fourth sentence."]
    log, error = _run_logged(engine, texts, 100_000, refuse=frozenset({"Refused sentence."}))
    assert isinstance(error, InvalidInput) and "scripted refusal" in str(error)
    assert log.batches == []  # its earlier chunks were prepared, never prefilled


def test_a_caller_who_leaves_has_its_work_withdrawn_between_steps(
    make_scheduler: Factory, voice_prompts: dict[str, bytes]
) -> None:
    scheduler = make_scheduler(slots=2)

    async def leave() -> None:
        task = asyncio.ensure_future(scheduler.generate(items(voice_prompts, 20), Sampling()))
        while scheduler.loop.active == 0:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await settle(scheduler)
        # the loop counts a withdrawn job after releasing its slots
        for _ in range(2000):
            if scheduler.stats.jobs_cancelled:
                break
            await asyncio.sleep(0.01)

    asyncio.run(leave())
    stats = scheduler.stats
    assert stats.jobs_cancelled == 1 and stats.jobs_run == 0
    assert stats.finish_reasons["cancelled"] >= 1
    assert sum(stats.finish_reasons.values()) < 20  # most chunks never ran


@pytest.fixture(scope="module")
def runaway_item(engine: StepEngine, voice_prompts: dict[str, bytes]) -> SynthItem:
    item = SynthItem(RUNAWAY_TEXT, "english", voice_prompts["xvec"])
    budget, _ = frame_budget(RUNAWAY_TEXT, 2048)
    slot = engine.admit(item, GREEDY, budget)
    while not slot.done:
        engine.step([slot])
    engine.release(slot)
    assert slot.finish == LENGTH  # precondition of the runaway tests
    return item


def test_a_runaway_is_retried_once_then_fails(
    make_scheduler: Factory, runaway_item: SynthItem
) -> None:
    scheduler = make_scheduler(capped=False)
    with pytest.raises(Runaway, match="frame"):
        asyncio.run(scheduler.generate([runaway_item], GREEDY))  # greedy: the retry runs away too
    stats = scheduler.stats
    assert (stats.chunks_retried, stats.runaways, stats.jobs_failed) == (1, 1, 1)
    assert stats.finish_reasons[LENGTH] == 2


def test_a_seeded_or_streamed_runaway_fails_without_retry(
    make_scheduler: Factory, runaway_item: SynthItem
) -> None:
    scheduler = make_scheduler(capped=False)
    seeded = Sampling(temperature=0, seed=3)
    with pytest.raises(Runaway):
        asyncio.run(scheduler.generate([runaway_item], seeded))

    async def stream() -> None:
        audio = scheduler.stream([runaway_item], GREEDY)
        with pytest.raises(Runaway):
            async for _ in audio:
                pass

    asyncio.run(stream())
    assert scheduler.stats.chunks_retried == 0 and scheduler.stats.runaways == 2


def test_a_runaway_retry_with_a_new_seed_can_succeed(
    make_scheduler: Factory,
    engine: StepEngine,
    voice_prompts: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    item = SynthItem(RUNAWAY_TEXT, "english", voice_prompts["xvec"])
    budget, _ = frame_budget(RUNAWAY_TEXT, 2048)
    outcome: dict[str, int] = {}
    for seed in range(200):  # one seed that runs away, one that ends by EOS
        slot = engine.admit(item, Sampling(), budget, seed=seed)
        while not slot.done:
            engine.step([slot])
        engine.release(slot)
        outcome.setdefault(slot.finish or "", seed)
        if len(outcome) == 2:
            break
    scheduler = make_scheduler(capped=False)  # warmed up before the seeds are fixed
    seeds = iter([outcome[LENGTH], outcome[EOS]])
    monkeypatch.setattr(stepper, "random_seed", lambda: next(seeds))
    [result] = asyncio.run(scheduler.generate([item], Sampling())).chunks
    assert (result.finish_reason, result.retried) == (EOS, True)
    assert scheduler.stats.chunks_retried == 1 and scheduler.stats.runaways == 0


def test_same_seed_and_text_alone_give_the_same_audio(
    make_scheduler: Factory, voice_prompts: dict[str, bytes]
) -> None:
    """The reproducibility promise (README): a seeded request that runs alone is reproducible."""
    scheduler = make_scheduler()
    job = items(voice_prompts, 1, "icl")
    first, second, other = (
        asyncio.run(scheduler.generate(job, Sampling(seed=seed))).chunks[0] for seed in (5, 5, 6)
    )
    assert np.array_equal(first.audio.samples, second.audio.samples)
    assert not np.array_equal(first.audio.samples, other.audio.samples)


def test_shutdown_drains_running_work_then_cancels_the_rest(
    make_scheduler: Factory, voice_prompts: dict[str, bytes]
) -> None:
    draining = make_scheduler(slots=1)
    cut = make_scheduler(slots=1)

    async def started(scheduler: Scheduler) -> None:
        while scheduler.loop.active == 0:
            await asyncio.sleep(0.002)

    async def shut() -> None:
        kept = asyncio.ensure_future(draining.generate(items(voice_prompts, 4), Sampling()))
        await started(draining)
        await asyncio.to_thread(draining.shutdown, drain_s=120)
        assert len((await kept).chunks) == 4
        with pytest.raises(ShuttingDown):
            await draining.generate(items(voice_prompts, 1), Sampling())
        dropped = asyncio.ensure_future(cut.generate(items(voice_prompts, 30), Sampling()))
        await started(cut)
        await asyncio.to_thread(cut.shutdown, drain_s=0)
        with pytest.raises(ShuttingDown):
            await dropped

    asyncio.run(shut())
    assert not draining.ready and not cut.ready
    assert cut.loop._thread is not None and not cut.loop._thread.is_alive()


class FaultyAccelerator:
    """The real engine, whose steps start failing as a GPU does after a device-side assert
    (injected at the engine boundary: no GPU here)."""

    def __init__(self, inner: StepEngine) -> None:
        self.inner = inner
        self.broken = False

    def step(self, slots: Any) -> None:
        if self.broken:
            raise torch.AcceleratorError("CUDA error: device-side assert triggered")
        self.inner.step(slots)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_fatal_accelerator_error_fails_everything_as_unavailable_and_stops_readiness(
    engine: StepEngine, voice_prompts: dict[str, bytes]
) -> None:
    faulty = FaultyAccelerator(engine)
    scheduler = Scheduler(faulty, LoopConfig(slots=2), job_timeout_s=120)  # type: ignore[arg-type]
    scheduler.start()
    try:
        assert scheduler.ready
        faulty.broken = True

        async def run() -> None:
            first = asyncio.ensure_future(scheduler.generate(items(voice_prompts, 1), Sampling()))
            waiting = asyncio.ensure_future(scheduler.generate(items(voice_prompts, 3), Sampling()))
            for job in (first, waiting):
                with pytest.raises(ModelUnavailable, match="must be restarted"):
                    await job
            with pytest.raises(ModelUnavailable, match="must be restarted"):
                await scheduler.generate(items(voice_prompts, 1), Sampling())

        asyncio.run(run())
        assert not scheduler.ready
        assert scheduler.loop.engine.inner.lane("base").table.free_rows == 8  # nothing held
    finally:
        scheduler.shutdown(drain_s=0)
