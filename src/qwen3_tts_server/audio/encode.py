"""Encode model output into the formats clients ask for, in memory.

libsndfile bundles LAME/mpg123, Vorbis, Opus and FLAC; AAC, which it lacks, is FFmpeg's encoder
linked in through PyAV (`ffmpeg.py`). Neither needs an ffmpeg process or a temp file. Each call
works on its own in-memory buffer and codec handle, and both libraries release the GIL inside
the codec, so `encode` is safe and useful to run from a thread pool.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from qwen3_tts_server.audio.errors import EncodeFailed, UnknownFormat
from qwen3_tts_server.audio.ffmpeg import AAC_RATES, encode_aac
from qwen3_tts_server.audio.resample import resample
from qwen3_tts_server.values import Audio

_MP3_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
_OPUS_RATES = frozenset({8000, 12000, 16000, 24000, 48000})
#: The one container written by FFmpeg instead of libsndfile.
ADTS = "ADTS"


@dataclass(frozen=True)
class AudioFormat:
    """An output format: what the client sees and how libsndfile (or FFmpeg) writes it."""

    media_type: str
    extension: str
    container: str  # libsndfile major format, or ADTS (written by FFmpeg's AAC encoder)
    subtype: str
    endian: str = "FILE"
    rates: frozenset[int] | None = None  # rates the codec accepts; None means any

    def rate_for(self, rate: int) -> int:
        """`rate` if the codec takes it, else the nearest accepted rate above (or the top one)."""
        if self.rates is None or rate in self.rates:
            return rate
        return min((r for r in self.rates if r > rate), default=max(self.rates))


#: Output formats by the name clients use in `format`. Lossy codecs use libsndfile's default
#: quality (VBR, about 40-50 kbit/s for 24 kHz mono speech: transparent enough for speech).
FORMATS: dict[str, AudioFormat] = {
    "wav": AudioFormat("audio/wav", "wav", "WAV", "PCM_16"),
    "mp3": AudioFormat("audio/mpeg", "mp3", "MP3", "MPEG_LAYER_III", rates=_MP3_RATES),
    "ogg": AudioFormat("audio/ogg", "ogg", "OGG", "VORBIS"),
    "opus": AudioFormat("audio/ogg; codecs=opus", "opus", "OGG", "OPUS", rates=_OPUS_RATES),
    "flac": AudioFormat("audio/flac", "flac", "FLAC", "PCM_16"),
    # Headerless signed 16-bit little-endian mono at the audio's own rate (OpenAI's "pcm"):
    # the client must learn the rate elsewhere, so the API should say it in a header.
    "pcm": AudioFormat("audio/pcm", "pcm", "RAW", "PCM_16", endian="LITTLE"),
    # AAC-LC at 64 kbit/s in ADTS frames, as OpenAI's `aac` (see ffmpeg.encode_aac).
    "aac": AudioFormat("audio/aac", "aac", ADTS, "AAC_LC", rates=AAC_RATES),
}


def encode(audio: Audio, fmt: str) -> bytes:
    """`audio` as a complete file in format `fmt` (a key of `FORMATS`).

    Samples are clipped to [-1, 1] (NaN becomes silence) after any resampling: the model can
    overshoot, and libsndfile would otherwise saturate differently per codec. A rate the codec
    does not accept is resampled to the nearest one it does (Opus at 22.05 kHz is written at
    24 kHz).
    """
    spec = FORMATS.get(fmt)
    if spec is None:
        raise UnknownFormat(fmt, sorted(FORMATS))
    rate = spec.rate_for(audio.sample_rate)
    finite = np.nan_to_num(audio.samples, nan=0.0, posinf=1.0, neginf=-1.0)
    samples = np.clip(resample(finite, audio.sample_rate, rate), -1.0, 1.0)
    if spec.container == ADTS:
        return encode_aac(samples, rate)
    buffer = io.BytesIO()
    try:
        sf.write(
            buffer,
            samples,
            rate,
            format=spec.container,
            subtype=spec.subtype,
            endian=spec.endian,
        )
    except sf.LibsndfileError as error:
        reason = error.error_string.removeprefix("Error : ").rstrip(".")
        raise EncodeFailed(fmt, reason) from error
    return buffer.getvalue()
