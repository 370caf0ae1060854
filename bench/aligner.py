"""Word timestamps: the aligner's cost per second of audio, and what it does to running streams.

    .venv/bin/python bench/aligner.py [--data-dir bench-data] [--dims real-0.6b]
        [--seconds 5 10 20] [--repeats 3] [--stall-s 20]

Prints one JSON object:
- `align`: Qwen3-ForcedAligner at the published 0.6B sizes (random weights, built once under
  DATA_DIR by aligner/tiny.py; `--dims tiny` for a quick run), through the server's own
  `ForcedAligner.align` (qwen-asr's code), on speech-like audio of each length with a text of
  2.5 words a second: median seconds per call and per second of audio, and a sentence batch
  (the way /tts/timestamps aligns a text: one passage per sentence chunk, one call).
- `streams`: the step loop (tiny TTS models, the server's Scheduler) stepping streams without
  and then with alignments running on the aligner's thread (`AlignerWorker`, as the server
  runs it): the time between consecutive steps (median, p95, max) in both phases, next to how
  long each alignment took. The design goal is that the loop never waits for an alignment: the
  longest gap between steps stays far below one alignment's time. On a CPU the two threads
  share the cores, so steps do slow down while the aligner computes; that is the cost shown.
Random weights: the times say nothing about alignment quality, only about compute.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qwen3_tts_server.aligner.model import ForcedAligner, Passage
from qwen3_tts_server.aligner.tiny import cached_aligner
from qwen3_tts_server.aligner.worker import AlignerWorker
from qwen3_tts_server.engine.base import CustomItem
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.model.tiny import cached_models
from qwen3_tts_server.engine.serving.loop import LoopConfig
from qwen3_tts_server.engine.serving.scheduler import Scheduler
from qwen3_tts_server.engine.step.stepper import StepEngine
from qwen3_tts_server.values import Audio, Sampling
from qwen3_tts_server.wiring import TINY_MAX_FRAMES

WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven")
RATE = 24000


def _speech_like(seconds: float, seed: int = 0) -> Audio:
    """Noise shaped by a syllable-rate envelope: audio the size of speech (not speech)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    voiced = 0.3 * np.sin(2 * np.pi * 150 * t) + 0.05 * rng.standard_normal(t.size)
    return Audio((envelope * voiced).astype(np.float32), RATE)


def _text(seconds: float) -> str:
    count = max(1, round(2.5 * seconds))
    return " ".join(WORDS[i % len(WORDS)] for i in range(count)) + "."


def _timed(aligner: ForcedAligner, passages: list[Passage], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        aligner.align(passages)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_alignment(aligner: ForcedAligner, lengths: list[float], repeats: int) -> dict[str, Any]:
    aligner.align([Passage(_speech_like(1.0), "warm up", "english")])
    rows = []
    for seconds in lengths:
        passage = Passage(_speech_like(seconds), _text(seconds), "english")
        took = _timed(aligner, [passage], repeats)
        rows.append(
            {
                "audio_s": seconds,
                "words": len(passage.text.split()),
                "s_per_call": round(took, 3),
                "s_per_audio_s": round(took / seconds, 4),
            }
        )
    total = sum(lengths)
    sentences = [Passage(_speech_like(s, i), _text(s), "english") for i, s in enumerate(lengths)]
    took = _timed(aligner, sentences, repeats)
    batch = {"passages": len(lengths), "audio_s": total, "s_per_call": round(took, 3)}
    return {"single": rows, "batch": batch | {"s_per_audio_s": round(took / total, 4)}}


class StepClock:
    """The scheduler's on_step hook: when each step ended."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def __call__(self, slots: int, seconds: float) -> None:
        self.ends.append(time.perf_counter())

    def gaps_between(self, start: float, stop: float) -> list[float]:
        ends = [end for end in self.ends if start <= end <= stop]
        return [b - a for a, b in itertools.pairwise(ends)]


def _summary(gaps: list[float]) -> dict[str, Any]:
    if not gaps:
        return {"steps": 0}
    ms = sorted(1000 * gap for gap in gaps)
    return {
        "steps": len(ms) + 1,
        "median_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
        "max_ms": round(ms[-1], 2),
    }


async def _keep_streaming(scheduler: Scheduler, until: float) -> None:
    item = CustomItem(" ".join(WORDS) + ".", "english", "vivian")
    sampling = Sampling()

    async def one(user: int) -> None:
        while time.perf_counter() < until:
            async for _ in scheduler.stream([item], sampling, user=user):
                pass

    await asyncio.gather(one(1), one(2))


def measure_streams(
    tts_dir: Path, aligner: ForcedAligner, phase_s: float, passage_s: float
) -> dict[str, Any]:
    stock = QwenEngine.load(
        tts_dir / "base",
        custom_voice=tts_dir / "custom_voice",
        device="cpu",
        dtype="float32",
        max_new_tokens_cap=TINY_MAX_FRAMES,  # as `make demo`: random weights rarely say EOS
    )
    clock = StepClock()
    scheduler = Scheduler(StepEngine(stock), LoopConfig(slots=4, reserve=1), on_step=clock)
    scheduler.start()
    worker = AlignerWorker(aligner)
    worker.start()
    passage = Passage(_speech_like(passage_s), _text(passage_s), "english")
    alignments: list[float] = []
    try:
        quiet_start = time.perf_counter()
        asyncio.run(_keep_streaming(scheduler, quiet_start + phase_s))
        quiet_stop = busy_start = time.perf_counter()
        stop = threading.Event()

        def align_continuously() -> None:
            while not stop.is_set():
                alignments.append(worker.submit([passage]).result().seconds)

        aligning = threading.Thread(target=align_continuously)
        aligning.start()
        asyncio.run(_keep_streaming(scheduler, busy_start + phase_s))
        busy_stop = time.perf_counter()
        stop.set()
        aligning.join()
    finally:
        worker.stop()
        scheduler.shutdown()
    return {
        "tts": stock.info().base_model_id,
        "alignment_audio_s": passage_s,
        "alignments": len(alignments),
        "alignment_s_median": round(statistics.median(alignments), 3) if alignments else None,
        "step_gaps_without_aligner": _summary(clock.gaps_between(quiet_start, quiet_stop)),
        "step_gaps_while_aligning": _summary(clock.gaps_between(busy_start, busy_stop)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("bench-data"))
    parser.add_argument("--dims", default="real-0.6b", choices=["tiny", "real-0.6b"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0, 10.0, 20.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stall-s", type=float, default=20.0, help="seconds per phase")
    args = parser.parse_args()

    started = time.perf_counter()
    path = cached_aligner(args.data_dir / f"aligner-{args.dims}", dims=args.dims)
    built_s = time.perf_counter() - started
    aligner = ForcedAligner.load(path, device="cpu", dtype=args.dtype)
    result: dict[str, Any] = {
        "aligner": args.dims,
        "dtype": args.dtype,
        "parameters_m": round(aligner.parameter_count / 1e6, 1),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "loadavg_start": round(os.getloadavg()[0], 2),
        "build_or_reuse_s": round(built_s, 1),
        "align": measure_alignment(aligner, args.seconds, args.repeats),
    }
    tts_dir = args.data_dir / "tiny-tts"
    cached_models(tts_dir)
    result["streams"] = measure_streams(tts_dir, aligner, args.stall_s, max(args.seconds))
    result["loadavg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
