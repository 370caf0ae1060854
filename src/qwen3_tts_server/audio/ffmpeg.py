"""What libsndfile cannot do, done with FFmpeg's libraries in process (PyAV): AAC and tempo.

libsndfile has no AAC encoder and no time-stretch; FFmpeg has both (its native `aac` encoder and
the `atempo` filter). PyAV links FFmpeg's libraries into this process: no ffmpeg executable, no
subprocess, no temp file. Every call builds its own container, codec and filter graph, and
PyAV releases the GIL inside FFmpeg, so both functions are safe to run from a thread pool.
"""

from __future__ import annotations

import io

import av
import numpy as np
import numpy.typing as npt

from qwen3_tts_server.values import Audio

#: Rates ADTS can signal (its sampling-frequency index table); any other must be resampled.
AAC_RATES = frozenset(
    {7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000}
)
#: AAC-LC bit rate for mono speech: transparent for 24 kHz speech, half of 128 kbit/s stereo.
AAC_BIT_RATE = 64_000

#: The speeds OpenAI's `speed` accepts; `atempo` itself takes 0.5-2.0 per stage.
MIN_SPEED = 0.25
MAX_SPEED = 4.0
_STAGE_MIN = 0.5
_STAGE_MAX = 2.0


def _frame(samples: npt.NDArray[np.float32], rate: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1), format="flt", layout="mono"
    )
    frame.sample_rate = rate
    return frame


def encode_aac(samples: npt.NDArray[np.float32], rate: int) -> bytes:
    """Mono float32 `samples` (already in [-1, 1], `rate` in AAC_RATES) as AAC-LC in ADTS.

    ADTS is what OpenAI's `aac` is and what `audio/aac` means: a bare stream of AAC frames,
    each with a 7-byte header, that ffprobe, browsers and phones play as a file, and that can
    be cut between frames and still played (so it could stream). MP4/M4A would need the
    whole file before its index is written. The encoder's priming adds ~43 ms of leading
    silence (1024 samples), which ADTS cannot mark for removal.
    """
    if rate not in AAC_RATES:
        raise ValueError(f"AAC in ADTS cannot carry {rate} Hz; resample to one of {AAC_RATES}")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="adts") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        stream.bit_rate = AAC_BIT_RATE
        if samples.size:
            container.mux(stream.encode(_frame(samples, rate)))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def tempo_stages(speed: float) -> list[float]:
    """`speed` as a product of factors in atempo's 0.5-2.0, fewest stages first at the limit.

    One stage past 2.0 (newer FFmpeg allows it) skips input instead of overlapping it, which
    sounds choppy; chained stages within 0.5-2.0 are how FFmpeg's own documentation does 4x.
    """
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, not {speed}")
    stages: list[float] = []
    rest = speed
    while rest > _STAGE_MAX:
        stages.append(_STAGE_MAX)
        rest /= _STAGE_MAX
    while rest < _STAGE_MIN:
        stages.append(_STAGE_MIN)
        rest /= _STAGE_MIN
    if rest != 1.0 or not stages:
        stages.append(rest)
    return stages


def change_speed(audio: Audio, speed: float) -> Audio:
    """`audio` played `speed` times as fast at the same pitch: duration x 1/speed.

    FFmpeg's `atempo` (overlap-add of waveform-similar segments, WSOLA-like) keeps the pitch
    and the formants, unlike resampling, which would make a fast voice squeaky.
    """
    stages = tempo_stages(speed)
    if speed == 1.0 or not audio.samples.size:
        return audio
    graph = av.filter.Graph()
    node = graph.add_abuffer(format="flt", sample_rate=audio.sample_rate, layout="mono")
    source = node
    for factor in stages:
        stage = graph.add("atempo", f"{factor:.6f}")
        node.link_to(stage)
        node = stage
    sink = graph.add("abuffersink")
    node.link_to(sink)
    graph.configure()
    source.push(_frame(audio.samples, audio.sample_rate))
    source.push(None)
    parts: list[npt.NDArray[np.float32]] = []
    while True:
        try:
            out = sink.pull()
        except (av.error.EOFError, av.error.BlockingIOError):
            break
        assert isinstance(out, av.AudioFrame)  # an audio graph's sink yields audio frames
        parts.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
    samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return Audio(samples, audio.sample_rate)
