"""The serving step on one device, without HTTP: graphs, syncs, step time, fidelity; one JSON.

    .venv/bin/python bench/gpu_check.py [--dims real-0.6b] [--device cuda] [--rows 256]
        [--context 1024] [--batches 1,8,32,64,128,256] [--steps 20] [--data-dir data]

Runs on CPU too (the dry run before a GPU session: `--dims tiny --device cpu --rows 16
--batches 1,8,16`). Random weights at the preset's sizes (models built once under DATA_DIR):

* `warm_up_s`: StepEngine.warm_up, the capture of every (rows, span) graph bucket included;
* `admission_ms`: admission's parts (item checks and prompt building, the prefill of one
  prompt, of 8 and of 32 in one batch);
* `sync_check`: 20 steps of 4 rows under `torch.cuda.set_sync_debug_mode("error")` (CUDA only):
  "ok" or the error of the first implicit host sync;
* `step_ms[B]`: mean wall time of one step of B rows (EOS suppressed so every row runs), host
  work and the one copy of the codes included, and `x_realtime[B]` = B x 80 ms / step time;
* `logits`: teacher-forced talker logits against stock (engine/step/reference.py) at 1 and 8
  rows: the largest |ours - stock| relative to stock's largest |logit|, and the share of frames
  whose argmax agrees;
* `seeded`: a seeded text alone twice (identical: true/false) and the share of its frames equal
  when it shares its steps with 15 others;
* `codec_ms_16x33`: one decoder call of 16 windows of 33 frames;
* `peak_gib`: the device's peak allocated memory; `triton`: whether Triton imports.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qwen3_tts_server.engine.base import SynthItem
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.model.tiny import cached_models
from qwen3_tts_server.engine.step.reference import reference_logits
from qwen3_tts_server.engine.step.stepper import Slot, StepEngine
from qwen3_tts_server.values import Audio, Sampling

TEXT = "The benchmark reads this sentence aloud at an easy pace, word after word. " * 3


def _tone() -> Audio:
    t = np.arange(3 * 24000, dtype=np.float32) / 24000
    return Audio((0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 24000)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _admit(
    engine: StepEngine, item: SynthItem, n: int, sampling: Sampling, budget: int
) -> list[Slot]:
    slots = []
    for _ in range(n):
        slot = engine.admit(item, sampling, budget)
        slot.lane.table.suppress[slot.row, slot.eos] = True  # every row runs its whole budget
        slots.append(slot)
    return slots


def _run(engine: StepEngine, slots: Sequence[Slot]) -> None:
    while not all(slot.done for slot in slots):
        engine.step(slots)
    for slot in slots:
        engine.release(slot)


def step_times(
    engine: StepEngine, item: SynthItem, batches: list[int], steps: int
) -> dict[str, Any]:
    device = engine.lane("base").device
    out: dict[str, Any] = {"step_ms": {}, "x_realtime": {}}
    for batch in batches:
        slots = _admit(engine, item, batch, Sampling(), steps + 8)
        for _ in range(3):
            engine.step(slots)
        _sync(device)
        started = time.perf_counter()
        for _ in range(steps):
            engine.step(slots)
        _sync(device)
        seconds = (time.perf_counter() - started) / steps
        for slot in slots:
            engine.release(slot)
        out["step_ms"][batch] = round(seconds * 1000, 2)
        out["x_realtime"][batch] = round(batch * 0.08 / seconds, 1)
    return out


def admission_ms(engine: StepEngine, item: SynthItem, n: int = 16) -> dict[str, float]:
    """Mean ms of admission's parts: `prepare` (item checks, the stored prompt, qwen-tts's
    prompt building), `prefill` of that one prompt (step/prefill.py, the row's state, the first
    token), and `prefill_xK`: K prompts in one batch, what a burst of K arrivals costs a turn."""
    device = engine.lane("base").device
    free = engine.lane("base").table.free_rows
    times: dict[str, float] = {}

    def timed(name: str, run: Callable[[], Any]) -> Any:
        _sync(device)
        started = time.perf_counter()
        out = run()
        _sync(device)
        times[name] = times.get(name, 0.0) + time.perf_counter() - started
        return out

    for _ in range(n):
        admission = timed("prepare", lambda: engine.prepare(item, Sampling(), 50))
        for k in (1, 8, 32):
            if k <= free:
                name = "prefill" if k == 1 else f"prefill_x{k}"
                for slot in timed(name, functools.partial(engine.prefill, [admission] * k)):
                    engine.release(slot)
    return {key: round(value * 1000 / n, 2) for key, value in times.items()}


def sync_check(engine: StepEngine, item: SynthItem) -> str:
    if engine.lane("base").device.type != "cuda":
        return "skipped (no CUDA)"
    slots = _admit(engine, item, 4, Sampling(seed=1), 30)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(20):
            engine.step(slots)
        return "ok"
    except RuntimeError as exc:
        return f"failed: {exc}"
    finally:
        torch.cuda.set_sync_debug_mode(0)
        for slot in slots:
            engine.release(slot)


def logits_check(
    stock: QwenEngine, engine: StepEngine, item: SynthItem, frames: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for batch in (1, 8):
        slots = [engine.admit(item, Sampling(temperature=0), frames) for _ in range(batch)]
        kept: list[list[torch.Tensor]] = [[] for _ in slots]
        while not all(slot.done for slot in slots):
            live = [(i, slot) for i, slot in enumerate(slots) if not slot.done]
            engine.step(slots)
            for i, slot in live:
                assert slot.lane.table.logits is not None
                kept[i].append(slot.lane.table.logits[slot.row].to("cpu", copy=True))
        errors, agree, total = [], 0, 0
        for slot, rows in zip(slots, kept, strict=True):
            engine.release(slot)
            ours = torch.stack(rows)
            reference = reference_logits(stock, item, slot.frames).cpu()
            errors.append(float((ours - reference).abs().max() / reference.abs().max()))
            agree += int((ours.argmax(-1) == reference.argmax(-1)).sum())
            total += ours.shape[0]
        out[f"batch_{batch}"] = {"max_rel_error": max(errors), "argmax_agree": agree / total}
    return out


def seeded_check(engine: StepEngine, item: SynthItem, frames: int) -> dict[str, Any]:
    seeded = Sampling(seed=1234)
    alone = []
    for _ in range(2):
        [slot] = _admit(engine, item, 1, seeded, frames)
        _run(engine, [slot])
        alone.append(slot.frames.clone())
    others = _admit(engine, item, 15, Sampling(), frames)
    [mine] = _admit(engine, item, 1, seeded, frames)
    _run(engine, [*others, mine])
    equal = (mine.frames == alone[0]).all(dim=1).float().mean()
    return {"alone_twice_identical": bool(torch.equal(*alone)), "in_batch_16_equal": float(equal)}


def codec_time(engine: StepEngine) -> float:
    lane = engine.lane("base")
    codebook = int(lane.predictor.config.vocab_size)
    windows = [(torch.randint(0, codebook, (33, lane.groups)), 8) for _ in range(16)]
    codec = lane.codec
    codec.decode_many(windows)
    started = time.perf_counter()
    codec.decode_many(windows)
    return round((time.perf_counter() - started) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="real-0.6b", choices=("tiny", "real-0.6b", "real-1.7b"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--batches", default="1,8,32,64,128,256")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",") if int(b) <= args.rows]
    base = cached_models(args.data_dir / f"models-{args.dims}", dims=args.dims).base
    stock = QwenEngine.load(base, device=args.device, dtype=args.dtype)
    engine = StepEngine(stock, rows=args.rows, context=args.context)
    started = time.perf_counter()
    engine.warm_up()
    result: dict[str, Any] = {
        "dims": args.dims,
        "device": stock.info().device,
        "dtype": stock.info().dtype,
        "rows": args.rows,
        "context": args.context,
        "warm_up_s": round(time.perf_counter() - started, 1),
        "load_1min": os.getloadavg()[0],
    }
    item = SynthItem(TEXT, "english", stock.create_prompt(_tone(), "A tone for the benchmark."))
    result["sync_check"] = sync_check(engine, item)
    result["admission_ms"] = admission_ms(engine, item)
    result |= step_times(engine, item, batches, args.steps)
    del engine
    checker = StepEngine(stock, rows=16, context=args.context, keep_logits=True)
    result["logits"] = logits_check(stock, checker, item, 24)
    result["seeded"] = seeded_check(checker, item, 24)
    result["codec_ms_16x33"] = codec_time(checker)
    if torch.cuda.is_available():
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    try:
        import triton  # noqa: F401

        result["triton"] = True
    except ImportError:
        result["triton"] = False
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
