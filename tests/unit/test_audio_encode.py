"""Model output is encoded in memory into every offered format, safely from many threads."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from qwen3_tts_server.audio.encode import FORMATS, encode
from qwen3_tts_server.audio.errors import UnknownFormat
from qwen3_tts_server.values import Audio

RATE = 24_000
#: Formats libsndfile writes as files (and reads back); AAC has its own tests (test_audio_ffmpeg).
FILE_FORMATS = sorted(set(FORMATS) - {"pcm", "aac"})


def speech_like(seconds: float = 1.0, rate: int = RATE) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    samples = 0.3 * envelope * np.sin(2 * np.pi * 180 * t) + 0.1 * np.sin(2 * np.pi * 900 * t)
    return Audio(samples.astype(np.float32), rate)


def read(data: bytes) -> npt.NDArray[np.float32]:
    samples, _ = sf.read(io.BytesIO(data), dtype="float32")
    return samples


def test_the_format_table() -> None:
    assert {name: (f.media_type, f.extension) for name, f in FORMATS.items()} == {
        "wav": ("audio/wav", "wav"),
        "mp3": ("audio/mpeg", "mp3"),
        "ogg": ("audio/ogg", "ogg"),
        "opus": ("audio/ogg; codecs=opus", "opus"),
        "flac": ("audio/flac", "flac"),
        "pcm": ("audio/pcm", "pcm"),
        "aac": ("audio/aac", "aac"),
    }


@pytest.mark.parametrize(
    ("fmt", "container", "subtype"),
    [
        ("wav", "WAV", "PCM_16"),
        ("mp3", "MP3", "MPEG_LAYER_III"),
        ("ogg", "OGG", "VORBIS"),
        ("opus", "OGG", "OPUS"),
        ("flac", "FLAC", "PCM_16"),
    ],
)
def test_each_file_format_is_a_real_file_of_that_kind(
    fmt: str, container: str, subtype: str
) -> None:
    data = encode(speech_like(2.0), fmt)
    info = sf.info(io.BytesIO(data))

    assert (info.format, info.subtype, info.samplerate, info.channels) == (
        container,
        subtype,
        RATE,
        1,
    )
    assert info.duration == pytest.approx(2.0, abs=0.06)
    assert np.abs(read(data)).max() == pytest.approx(0.4, abs=0.05)


def test_lossless_formats_keep_the_samples() -> None:
    audio = speech_like()
    for fmt in ("wav", "flac"):
        samples = read(encode(audio, fmt))
        np.testing.assert_allclose(samples, audio.samples, atol=1 / 32767)


def test_pcm_is_headerless_s16le() -> None:
    audio = Audio(np.array([0.0, 0.5, -0.5, 1.0, -1.0], dtype=np.float32), RATE)

    data = encode(audio, "pcm")

    assert np.frombuffer(data, "<i2").tolist() == [0, 16384, -16384, 32767, -32768]


def test_out_of_range_and_nan_samples_are_clipped_not_wrapped() -> None:
    audio = Audio(np.array([3.0, -3.0, np.nan, np.inf, -np.inf], dtype=np.float32), RATE)

    values = np.frombuffer(encode(audio, "pcm"), "<i2").tolist()

    assert values == [32767, -32768, 0, 32767, -32768]


@pytest.mark.parametrize(
    ("fmt", "rate", "written"), [("opus", 22_050, 24_000), ("mp3", 96_000, 48_000)]
)
def test_a_rate_the_codec_refuses_is_resampled(fmt: str, rate: int, written: int) -> None:
    info = sf.info(io.BytesIO(encode(speech_like(1.0, rate), fmt)))

    assert info.samplerate == written
    assert info.duration == pytest.approx(1.0, abs=0.06)


def test_unknown_format_names_the_valid_ones() -> None:
    with pytest.raises(UnknownFormat, match="use one of: aac, flac, mp3, ogg, opus, pcm, wav"):
        encode(speech_like(), "m4a")


def test_concurrent_encoding_gives_the_same_audio_as_serial() -> None:
    """Many threads at once (as from the encode pool) must not corrupt each other's output."""
    inputs = [speech_like(1.0 + i / 10) for i in range(4)]
    jobs = [(audio, fmt) for audio in inputs for fmt in FILE_FORMATS] * 2
    serial = [read(encode(audio, fmt)) for audio, fmt in jobs]

    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda job: read(encode(*job)), jobs))

    for expected, got in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(got, expected)
