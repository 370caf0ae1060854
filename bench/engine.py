"""Engine and scheduler figures on the tiny models; prints one JSON object.

    .venv/bin/python bench/engine.py [--models-dir DIR] [--jobs 8] [--frames 24]

What it measures, and why:
* `sequential_s`: N single-item engine calls one after another (what a server without batching
  does with N concurrent requests); `scheduled_s`: the same N requests submitted at once
  through the Scheduler, which merges them into padded batches. `speedup` = the ratio.
* `seconds_per_frame`: wall time per generated 80 ms frame in single-item calls (a frame is
  one talker step plus the code-predictor steps; RTF = seconds_per_frame / 0.08).
* `prompt_icl_s` / `prompt_xvector_s`: creating a voice prompt from a 3 s reference at 44.1 kHz
  (resampling, codec encoding, speaker embedding), median of 5.
The tiny model's weights are random, so EOS comes at random: frame counts are reported next to
the times. Numbers on the tiny model show overheads and batching gains, not real-model speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from qwen3_tts_server.engine.base import SynthItem
from qwen3_tts_server.engine.qwen import QwenEngine
from qwen3_tts_server.engine.scheduler import Scheduler
from qwen3_tts_server.engine.tiny import make_tiny_models
from qwen3_tts_server.values import Audio, Sampling

FRAME = 1920


def _reference(seconds: float, sample_rate: int) -> Audio:
    t = np.arange(int(seconds * sample_rate), dtype=np.float32) / sample_rate
    tone = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
    return Audio(tone.astype(np.float32), sample_rate)


def _frames(clips: list[Audio]) -> int:
    return sum(clip.samples.shape[0] // FRAME for clip in clips)


def _median_seconds(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def _scheduled(scheduler: Scheduler, items: list[SynthItem]) -> list[Audio]:
    answers = await asyncio.gather(*(scheduler.synthesize([item], Sampling()) for item in items))
    return [clip for answer in answers for clip in answer]


def run(models_dir: Path, jobs: int, frames: int) -> dict[str, object]:
    torch.manual_seed(0)
    engine = QwenEngine.load(
        models_dir / "base", device="cpu", dtype="float32", max_new_tokens_cap=frames
    )
    engine.warm_up()
    reference = _reference(3.0, 44100)
    prompt = engine.create_prompt(reference, "A short reference sentence for the benchmark.")
    prompt_icl_s = _median_seconds(lambda: engine.create_prompt(reference, "A reference."), 5)
    prompt_xvector_s = _median_seconds(lambda: engine.create_prompt(reference, None), 5)

    items = [
        SynthItem(f"Benchmark sentence number {i}, long enough to fill the cap.", "english", prompt)
        for i in range(jobs)
    ]
    started = time.perf_counter()
    sequential = [clip for item in items for clip in engine.synthesize([item], Sampling())]
    sequential_s = time.perf_counter() - started

    scheduler = Scheduler(engine, queue_max=jobs, max_batch=jobs, job_timeout_s=600)
    scheduler.start()
    started = time.perf_counter()
    scheduled = asyncio.run(_scheduled(scheduler, items))
    scheduled_s = time.perf_counter() - started
    batches = list(scheduler.stats.last_batch_sizes)
    scheduler.shutdown()

    return {
        "model": engine.info().base_model_id,
        "torch_threads": torch.get_num_threads(),
        "jobs": jobs,
        "max_new_tokens": frames,
        "sequential_s": round(sequential_s, 3),
        "sequential_frames": _frames(sequential),
        "scheduled_s": round(scheduled_s, 3),
        "scheduled_frames": _frames(scheduled),
        "scheduled_batch_sizes": batches,
        "speedup": round(sequential_s / scheduled_s, 2),
        "seconds_per_frame": round(sequential_s / max(1, _frames(sequential)), 4),
        "prompt_icl_s": round(prompt_icl_s, 4),
        "prompt_xvector_s": round(prompt_xvector_s, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models-dir", type=Path, help="tiny models (built in a temp dir if unset)"
    )
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--frames", type=int, default=24, help="max_new_tokens cap per call")
    args = parser.parse_args()
    if args.models_dir is not None:
        result = run(args.models_dir, args.jobs, args.frames)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            make_tiny_models(tmp)
            result = run(Path(tmp), args.jobs, args.frames)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
