"""Turn an uploaded reference recording into the mono float32 audio the model wants.

Everything happens in memory with libsndfile (through soundfile): no ffmpeg, no temp files, no
paths handed to the model. The format comes from the bytes (see `sniff`), never the filename.
Every way an upload can be unusable ends as an `AudioError` with a message for the client;
libsndfile's own exceptions never escape.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soundfile as sf

from qwen3_tts_server.audio import sniff as media
from qwen3_tts_server.audio.errors import (
    AudioTooLong,
    AudioTooShort,
    EmptyAudio,
    SilentAudio,
    UndecodableAudio,
)
from qwen3_tts_server.audio.resample import resample
from qwen3_tts_server.values import Audio

#: Below this RMS (-60 dBFS) a clip holds no usable speech, only noise floor or digital zero.
SILENCE_RMS = 10 ** (-60 / 20)

#: Samples (frames x channels) read per step: bounds memory whatever the header claims.
_BLOCK_SAMPLES = 1 << 18

#: What libsndfile must report for each sniffed type; a disagreement means a disguised file.
_SNDFILE_FORMATS: dict[str, frozenset[str]] = {
    media.WAV: frozenset({"WAV", "WAVEX", "RF64"}),
    media.MP3: frozenset({"MP3"}),
    media.OGG: frozenset({"OGG"}),
    media.FLAC: frozenset({"FLAC"}),
}


@dataclass(frozen=True)
class DecodedUpload:
    """A usable reference: audio for the model plus what to record about the original."""

    audio: Audio  # mono, at the requested rate, peak <= 1
    media_type: str  # of the bytes as uploaded, for storing and serving them back unchanged
    duration_s: float  # of the upload itself, before resampling


def decode_upload(
    data: bytes, *, min_seconds: float, max_seconds: float, target_rate: int
) -> DecodedUpload:
    """Decode, check and convert an upload; raise an `AudioError` subclass if it is unusable.

    The byte-size limit is the caller's: it must stop reading an oversized upload before the
    bytes are all in memory (`UploadTooLarge`). The duration limit is enforced while decoding,
    so a small, highly compressed file cannot expand into hours of samples.
    """
    if not data:
        raise EmptyAudio()
    media_type = media.sniff(data)
    if media_type is None:
        raise UndecodableAudio()
    samples, rate = _read_mono(data, media_type, max_seconds)
    duration_s = samples.size / rate
    if duration_s < min_seconds:
        raise AudioTooShort(duration_s, min_seconds)
    if not np.isfinite(samples).all():
        raise UndecodableAudio("it contains NaN or infinite samples")
    if float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) < SILENCE_RMS:
        raise SilentAudio()
    out = resample(samples, rate, target_rate)
    peak = float(np.max(np.abs(out)))
    if peak > 1.0:
        # Float WAVs and lossy decoders overshoot; scaling keeps the waveform, clipping would not.
        out = out / np.float32(peak)
    return DecodedUpload(Audio(out, target_rate), media_type, duration_s)


def _read_mono(
    data: bytes, media_type: str, max_seconds: float
) -> tuple[npt.NDArray[np.float32], int]:
    """Decode at most `max_seconds` (+1 frame, to detect overflow), averaging channels."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.format not in _SNDFILE_FORMATS[media_type]:
                raise UndecodableAudio(f"its content is {f.format}, which is not accepted")
            rate = int(f.samplerate)
            limit = int(max_seconds * rate) + 1
            block = max(1, _BLOCK_SAMPLES // f.channels)
            parts: list[npt.NDArray[np.float32]] = []
            total = 0
            while total < limit:
                chunk = f.read(min(block, limit - total), dtype="float32", always_2d=True)
                if not len(chunk):
                    break
                parts.append(chunk.mean(axis=1, dtype=np.float32))
                total += len(chunk)
    except UndecodableAudio:
        raise
    except (sf.SoundFileError, RuntimeError, ValueError) as exc:
        # LibsndfileError is a RuntimeError; ValueError covers soundfile's own argument checks
        # on absurd header values. Either way the bytes are at fault, not the server.
        raise UndecodableAudio("the file is corrupt or truncated") from exc
    if total >= limit:
        raise AudioTooLong(max_seconds)
    if total == 0:
        raise UndecodableAudio("it contains no audio samples; it may be truncated")
    return np.concatenate(parts), rate
