"""Encode and decode cost per format, as JSON on stdout.

Encode: a 10 s synthetic speech-like signal at the model's 24 kHz, as the engine returns it;
the figure is milliseconds of CPU-bound work per second of audio (median of several runs), i.e.
how much encode-pool time each second of output costs. Decode: the same 10 s as a typical
client upload (44.1 kHz mono, or 48 kHz for Opus) through `decode_upload`, resampling included.
Speed: the same 10 s through `change_speed` (FFmpeg's atempo), per second of input audio.

Run: .venv/bin/python bench/encode.py [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from qwen3_tts_server.audio.decode import decode_upload
from qwen3_tts_server.audio.encode import FORMATS, encode
from qwen3_tts_server.audio.ffmpeg import change_speed
from qwen3_tts_server.values import Audio

MODEL_RATE = 24_000
SECONDS = 10.0
UPLOAD_FORMATS = ("wav", "mp3", "ogg", "opus", "flac")
SPEEDS = (0.25, 0.5, 1.5, 2.0, 4.0)


def speech_like(rate: int) -> Audio:
    """Voiced harmonics with a syllable-rate envelope plus a little noise: codecs work on it
    roughly as on speech (a pure tone or silence would flatter the lossy encoders)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(SECONDS * rate)) / rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None)
    samples = 0.25 * envelope * voiced + 0.01 * rng.standard_normal(t.size)
    return Audio(samples.astype(np.float32), rate)


def median_ms(run: Callable[[], object], repeats: int) -> float:
    run()  # first call pays codec initialisation; not what a warm server sees
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    output = speech_like(MODEL_RATE)
    encode_figures = {}
    for fmt in FORMATS:
        data = encode(output, fmt)
        ms = median_ms(partial(encode, output, fmt), args.repeats)
        encode_figures[fmt] = {
            "ms_per_audio_s": round(ms / SECONDS, 2),
            "kbit_per_s": round(len(data) * 8 / SECONDS / 1000, 1),
        }

    decode_figures = {}
    for fmt in UPLOAD_FORMATS:
        rate = 48_000 if fmt == "opus" else 44_100
        data = encode(speech_like(rate), fmt)
        upload = partial(
            decode_upload, data, min_seconds=1.0, max_seconds=60.0, target_rate=MODEL_RATE
        )
        ms = median_ms(upload, args.repeats)
        decode_figures[fmt] = {
            "upload_rate": rate,
            "bytes": len(data),
            "ms_per_audio_s": round(ms / SECONDS, 2),
        }

    speed_figures = {
        str(speed): round(
            median_ms(partial(change_speed, output, speed), args.repeats) / SECONDS, 2
        )
        for speed in SPEEDS
    }

    print(
        json.dumps(
            {
                "signal_s": SECONDS,
                "repeats": args.repeats,
                "encode_24k_mono": encode_figures,
                "decode_upload_to_24k": decode_figures,
                "speed_ms_per_audio_s": speed_figures,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
