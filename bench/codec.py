"""Chunked 12 Hz decoding against one-shot decoding; prints one JSON object.

    .venv/bin/python bench/codec.py [--model-dir DIR] [--frames 100] [--dtype float32]

Why: frame-level streaming decodes a few frames at a time with `context` frames of left context
(engine/serving/codec.py). This measures, per context size and chunk schedule, how far the
joined chunks are from decoding all frames at once (max |difference| and SNR in dB, signal = the
one-shot decode) and what the chunks cost in decoder time relative to the one-shot decode.
Random codes on random weights: the numbers describe the decoder's architecture (receptive
field), not speech quality. `--model-dir` takes any model directory (tiny by default; a
real-dimension one measures real cost).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from qwen3_tts_server.engine.model.compat import import_qwen_tts
from qwen3_tts_server.engine.model.tiny import make_tiny_models
from qwen3_tts_server.engine.serving.codec import ChunkSchedule, Codec, StreamDecoder


def _snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(np.sum((reference - other) ** 2))
    signal = float(np.sum(reference**2))
    return float("inf") if noise == 0 else round(10 * np.log10(signal / noise), 1)


def _chunked(codec: Codec, codes: torch.Tensor, schedule: ChunkSchedule) -> np.ndarray:
    stream = StreamDecoder(codec, schedule)
    pieces = []
    for end in range(1, codes.shape[0] + 1):
        if stream.due(end, final=end == codes.shape[0]):
            pieces.append(stream.decode(codes[:end]))
    return np.concatenate(pieces)


def run(model_dir: Path, frames: int, dtype: str) -> dict[str, object]:
    model = import_qwen_tts().Qwen3TTSModel.from_pretrained(
        str(model_dir), device_map="cpu", dtype=getattr(torch, dtype)
    )
    codec = Codec(model.model.speech_tokenizer)
    config = model.model.speech_tokenizer.model.decoder.config
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(
        0, config.codebook_size, (frames, config.num_quantizers), generator=generator
    )
    codec.decode(codes[:4])  # warm-up
    started = time.perf_counter()
    whole = codec.decode(codes)
    whole_s = time.perf_counter() - started
    rows = []
    for context in (0, 4, 8, 16, 25, 50):
        for first, step in ((4, 12), (4, 25), (50, 50)):
            schedule = ChunkSchedule(first=first, next=step, context=context)
            started = time.perf_counter()
            joined = _chunked(codec, codes, schedule)
            seconds = time.perf_counter() - started
            rows.append(
                {
                    "context": context,
                    "first": first,
                    "next": step,
                    "same_length": joined.shape == whole.shape,
                    "max_abs_diff": float(np.max(np.abs(joined - whole))),
                    "snr_db": _snr_db(whole, joined),
                    "cost_vs_one_shot": round(seconds / whole_s, 2),
                }
            )
    return {
        "model_dir": str(model_dir),
        "dtype": dtype,
        "frames": frames,
        "torch_threads": torch.get_num_threads(),
        "one_shot_s": round(whole_s, 3),
        "one_shot_ms_per_frame": round(1000 * whole_s / frames, 2),
        "peak": float(np.max(np.abs(whole))),
        "chunked": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="a model directory (tiny if unset)")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()
    if args.model_dir is not None:
        result = run(args.model_dir, args.frames, args.dtype)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            make_tiny_models(tmp)
            result = run(Path(tmp) / "base", args.frames, args.dtype)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
