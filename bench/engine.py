"""The step loop against stock qwen-tts, side by side in one run; prints one JSON object.

    .venv/bin/python bench/engine.py [--real-dims] [--data-dir data] [--dtype auto]
        [--frames 40] [--long-frames 125] [--short-frames 25] [--slots 8]
        [--profile 1,16 | --prefill]

What it measures (issue "Engine v2", point 5), every text running to exactly its frame count
(EOS disabled on both sides, as on the random real-dims model, where it never wins), so both
engines make the same frames:
* `s_per_frame_b1`: one text of `--frames` frames alone: stock `generate` + its decode, against
  the step loop's job time (prefill, steps, streaming decode). Ratio = stock / ours.
* `aggregate_frames_per_s` at 1, 4 and 8 concurrent texts: stock = one padded call of N texts
  (what the old scheduler made of N requests arriving together); ours = N streams submitted at
  once through the Scheduler (one user each).
* `first_audio`: a `--long-frames` text (125 frames = 10 s of audio): ours streamed alone
  (time to the first audio piece) against the same text not streamed (the whole job), then
  4 such streams at once (p50/p95 of their first audio). Stock's first audio is its whole call
  (sentence-level streaming could only send a chunk once generated and decoded): one text,
  and 4 texts merged into one call.
* `short_during_max_batch`: a `--short-frames` text (2 s) of another user while one user's
  batch fills every slot (2 x slots texts of `--long-frames`), against the same text on an idle
  engine. Stock's figure is derived, not run: the old scheduler let a new request wait for the
  running call of `slots` texts (on average half of it), then ran it: T(call of slots) / 2 +
  T(short alone), both measured.
`--profile 1,16` prints instead, per batch size, one step's torch ops and host syncs (torch
profiler) and its wall time; `--prefill` prints admission's prefill per prompt kind, stock's
`talker.forward` against the batched prefill (step/prefill.py) of one and of four prompts.
Load average (1-minute, this process included) is reported: the machine is shared; compare
the two engines only within one run. `--real-dims` uses the random
model with the real 0.6B sizes (built once under DATA_DIR/models-real-0.6b, like
bench/speed.py); default: the tiny models.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qwen3_tts_server.engine.base import EngineInfo, Item, SynthItem
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.model.stock_args import generate_kwargs
from qwen3_tts_server.engine.model.tiny import cached_models
from qwen3_tts_server.engine.serving.loop import LoopConfig
from qwen3_tts_server.engine.serving.scheduler import Scheduler
from qwen3_tts_server.engine.step.reference import stock_forward
from qwen3_tts_server.engine.step.stepper import Admission, Slot, StepEngine
from qwen3_tts_server.values import Audio, Sampling

SAMPLING = Sampling()  # the server's defaults, unseeded
#: Long enough that every frame budget below is the bench's cap, never the text's.
TEXT = (
    "The benchmark reads this text aloud at an easy pace, sentence after sentence, so that "
    "the model has more than enough words to fill every frame it is asked to make today. "
) * 2


class Endless:
    """The step engine with EOS disabled and a settable frame cap: every text makes exactly
    `frame_cap` frames (a truncation, so the runaway guard does not retry it)."""

    def __init__(self, inner: StepEngine, frame_cap: int) -> None:
        self.inner = inner
        self.frame_cap = frame_cap

    def info(self) -> EngineInfo:
        return self.inner.info()

    def create_prompt(self, audio: Audio, transcript: str | None) -> bytes:
        return self.inner.create_prompt(audio, transcript)

    @property
    def prefill_tokens(self) -> int:
        return self.inner.prefill_tokens

    def prepare(self, item: Item, sampling: Sampling, budget: int) -> Admission:
        return self.inner.prepare(item, sampling, budget)

    def prefill(self, admissions: Sequence[Admission]) -> list[Slot]:
        slots = self.inner.prefill(admissions)
        for slot in slots:  # the talker may no longer pick EOS (it is no code to decode either)
            slot.lane.table.suppress[slot.row, slot.eos] = True
        return slots

    def step(self, slots: Sequence[Slot]) -> None:
        self.inner.step(slots)

    def release(self, slot: Slot) -> None:
        self.inner.release(slot)

    def warm_up(self) -> None:
        self.inner.warm_up()


def _stock_call(stock: QwenEngine, items: Sequence[Item], frames: int) -> float:
    """Seconds of one stock call (generate + decode) making `frames` frames per text."""
    call = stock.prepare(items)
    vocab = call.model.model.config.talker_config.vocab_size
    # A suppressed id as EOS: generation runs to max_new_tokens (= frames + 1 for stock).
    kwargs = generate_kwargs(SAMPLING, frames + 1) | {"eos_token_id": vocab - 1}
    started = time.perf_counter()
    call.run(kwargs)
    return time.perf_counter() - started


def _reference() -> Audio:
    t = np.arange(3 * 24000, dtype=np.float32) / 24000
    tone = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
    return Audio(tone.astype(np.float32), 24000)


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def _first_audio(scheduler: Scheduler, item: Item, user: int) -> tuple[float, float]:
    """(seconds to the first audio piece, seconds to the end) of one stream."""
    started = time.perf_counter()
    first = None
    async for _ in scheduler.stream([item], SAMPLING, user=user):
        first = first if first is not None else time.perf_counter() - started
    assert first is not None
    return first, time.perf_counter() - started


async def _streams(scheduler: Scheduler, item: Item, n: int) -> list[tuple[float, float]]:
    return await asyncio.gather(*(_first_audio(scheduler, item, user) for user in range(n)))


def run(
    base: Path, dtype: str, frames: int, long_frames: int, short_frames: int, slots: int
) -> dict[str, Any]:
    torch.manual_seed(0)
    stock = QwenEngine.load(base, device="cpu", dtype=dtype)
    engine = Endless(StepEngine(stock), frames)
    prompt = stock.create_prompt(_reference(), "A short reference sentence for the benchmark.")
    item = SynthItem(TEXT, "english", prompt)
    short = SynthItem("A short request from someone else.", "english", prompt)
    scheduler = Scheduler(engine, LoopConfig(slots=slots, reserve=2, user_queue_max=4 * slots))
    scheduler.start()
    _stock_call(stock, [item], 2)  # warm the stock path too
    result: dict[str, Any] = {
        "model": stock.info().base_model_id,
        "dtype": stock.info().dtype,
        "torch_threads": torch.get_num_threads(),
        "slots": slots,
        "loadavg_start": round(os.getloadavg()[0], 2),
    }
    try:
        # s/frame at batch 1
        stock_s = _stock_call(stock, [item], frames)
        ours = asyncio.run(scheduler.generate([item], SAMPLING))
        ours_s = ours.queued_s + ours.model_s
        result["s_per_frame_b1"] = {
            "frames": frames,
            "stock": round(stock_s / frames, 4),
            "ours": round(ours_s / frames, 4),
            "speedup": round(stock_s / ours_s, 2),
        }
        # aggregate frames/s at N concurrent texts
        aggregate: dict[str, Any] = {}
        for n in (1, 4, 8):
            stock_s = _stock_call(stock, [item] * n, frames)
            started = time.perf_counter()
            asyncio.run(_streams(scheduler, item, n))
            ours_s = time.perf_counter() - started
            aggregate[str(n)] = {
                "stock": round(n * frames / stock_s, 2),
                "ours": round(n * frames / ours_s, 2),
                "speedup": round(stock_s / ours_s, 2),
            }
        result["aggregate_frames_per_s"] = aggregate
        # first audio of a 10 s text, alone and with 4 streams
        engine.frame_cap = long_frames
        [(alone_first, alone_total)] = asyncio.run(_streams(scheduler, item, 1))
        whole = asyncio.run(scheduler.generate([item], SAMPLING))
        whole_s = whole.queued_s + whole.model_s
        four = asyncio.run(_streams(scheduler, item, 4))
        firsts = [first for first, _ in four]
        stock_one = _stock_call(stock, [item], long_frames)
        stock_four = _stock_call(stock, [item] * 4, long_frames)
        result["first_audio"] = {
            "frames": long_frames,
            "ours": {
                "alone_first_s": round(alone_first, 3),
                "alone_stream_total_s": round(alone_total, 3),
                "not_streamed_s": round(whole_s, 3),
                "first_vs_not_streamed": round(alone_first / whole_s, 3),
                "four_streams_first_p50_s": round(_pct(firsts, 50), 3),
                "four_streams_first_p95_s": round(_pct(firsts, 95), 3),
                "four_p95_vs_alone": round(_pct(firsts, 95) / alone_first, 2),
            },
            "stock": {"alone_first_s": round(stock_one, 3), "four_first_s": round(stock_four, 3)},
        }
        # a short request while the largest batch runs
        engine.frame_cap = short_frames
        idle = statistics.median(_timed_job(scheduler, short) for _ in range(3))
        engine.frame_cap = long_frames
        busy = asyncio.run(_busy(scheduler, engine, item, short, slots, short_frames))
        stock_batch = _stock_call(stock, [item] * slots, long_frames)
        stock_short = _stock_call(stock, [short], short_frames)
        result["short_during_max_batch"] = {
            "short_frames": short_frames,
            "batch": f"{2 * slots} texts x {long_frames} frames",
            "ours": {
                "idle_s": round(idle, 3),
                "during_batch_s": round(busy, 3),
                "ratio": round(busy / idle, 2),
            },
            "stock_derived": {
                "idle_s": round(stock_short, 3),
                "during_batch_s": round(stock_batch / 2 + stock_short, 3),
                "ratio": round((stock_batch / 2 + stock_short) / stock_short, 2),
            },
        }
    finally:
        scheduler.shutdown(drain_s=0)
    result["loadavg_end"] = round(os.getloadavg()[0], 2)
    return result


#: Profiler events that wait for the device or read a tensor's value on the host.
SYNC_EVENTS = (
    "aten::_local_scalar_dense",
    "aten::item",
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
)


def step_profile(stock: QwenEngine, item: Item, batches: Sequence[int]) -> dict[str, Any]:
    """Per step at each batch size: torch ops and host syncs (torch profiler, one step after
    a warm one) and the mean wall time of 5 steps. The step engine is eager here (no graphs)."""
    engine = Endless(StepEngine(stock, rows=max(batches)), 1000)
    out: dict[str, Any] = {}
    for batch in batches:
        slots = engine.prefill([engine.prepare(item, SAMPLING, 64) for _ in range(batch)])
        engine.step(slots)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            engine.step(slots)
        events = prof.key_averages()
        ops = sum(e.count for e in events if e.key.startswith("aten::"))
        syncs = sum(e.count for e in events if e.key in SYNC_EVENTS)
        started = time.perf_counter()
        for _ in range(5):
            engine.step(slots)
        seconds = (time.perf_counter() - started) / 5
        for slot in slots:
            engine.release(slot)
        out[str(batch)] = {"aten_ops": ops, "host_syncs": syncs, "ms": round(seconds * 1000, 2)}
    return out


def prefill_profile(stock: QwenEngine, rounds: int = 5) -> dict[str, Any]:
    """Admission's prefill per prompt kind (x-vector: a short prompt; ICL: reference codes
    and transcript): stock `talker.forward` of one prompt (what admission ran before) against
    the batched prefill of one and of four, alternating, medians in ms. Prompt building is
    the same for both and not included."""
    engine = StepEngine(stock, rows=4)
    out: dict[str, Any] = {}
    for kind, transcript in (("xvec", None), ("icl", "A short reference sentence.")):
        item = SynthItem(TEXT, "english", stock.create_prompt(_reference(), transcript))
        admission = engine.prepare(item, SAMPLING, 8)
        out[kind] = {"prompt_tokens": admission.tokens} | _prefill_times(engine, admission, rounds)
    out["loadavg"] = round(os.getloadavg()[0], 2)
    return out


@torch.inference_mode()
def _prefill_times(engine: StepEngine, admission: Admission, rounds: int) -> dict[str, float]:
    def ours(batch: int) -> None:
        for slot in engine.prefill([admission] * batch):
            engine.release(slot)

    runs = {
        "stock_b1": lambda: stock_forward(admission.lane.talker, admission.prompt),
        "ours_b1": lambda: ours(1),
        "ours_b4": lambda: ours(4),
    }
    for call in runs.values():
        call()  # warm
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, call in runs.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return {f"{name}_ms": round(statistics.median(ts) * 1000, 1) for name, ts in times.items()}


def _timed_job(scheduler: Scheduler, item: Item) -> float:
    started = time.perf_counter()
    asyncio.run(scheduler.generate([item], SAMPLING))
    return time.perf_counter() - started


async def _busy(
    scheduler: Scheduler, engine: Endless, item: Item, short: Item, slots: int, short_frames: int
) -> float:
    """The short text's latency while 2 x slots long texts of another user run. (A job's
    budgets are fixed when it is submitted, so the cap can change between the two.)"""
    batch = asyncio.ensure_future(scheduler.generate([item] * (2 * slots), SAMPLING, user=-1))
    await asyncio.sleep(0)  # submitted
    while scheduler.active < slots:
        await asyncio.sleep(0.001)
    engine.frame_cap = short_frames
    started = time.perf_counter()
    await scheduler.generate([short], SAMPLING, user=-2)
    seconds = time.perf_counter() - started
    await batch
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-dims", action="store_true", help="the real 0.6B sizes")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="model cache")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--long-frames", type=int, default=125)
    parser.add_argument("--short-frames", type=int, default=25)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument(
        "--profile", default="", help="only the per-step profile at these batch sizes, e.g. 1,16"
    )
    parser.add_argument("--prefill", action="store_true", help="only admission's prefill")
    args = parser.parse_args()
    dims = "real-0.6b" if args.real_dims else "tiny"
    base = cached_models(args.data_dir / f"models-{dims}", dims=dims).base
    if args.prefill:
        stock = QwenEngine.load(base, device="cpu", dtype=args.dtype)
        print(json.dumps(prefill_profile(stock)))
        return
    if args.profile:
        stock = QwenEngine.load(base, device="cpu", dtype=args.dtype)
        prompt = stock.create_prompt(_reference(), "A short reference sentence for the benchmark.")
        batches = [int(b) for b in args.profile.split(",")]
        print(json.dumps(step_profile(stock, SynthItem(TEXT, "english", prompt), batches)))
        return
    figures = (args.frames, args.long_frames, args.short_frames, args.slots)
    print(json.dumps(run(base, args.dtype, *figures), indent=1))


if __name__ == "__main__":
    main()
