"""Uploads are decoded from their content, checked, and turned into mono audio at the model rate.

Inputs are real files made by libsndfile's own encoders (through `encode` or `soundfile.write`),
so these tests exercise the same codecs a client's upload would.
"""

from __future__ import annotations

import io
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from qwen3_tts_server.audio.decode import DecodedUpload, decode_upload
from qwen3_tts_server.audio.encode import encode
from qwen3_tts_server.audio.errors import (
    AudioError,
    AudioTooLong,
    AudioTooShort,
    EmptyAudio,
    SilentAudio,
    UndecodableAudio,
)
from qwen3_tts_server.audio.sniff import sniff
from qwen3_tts_server.values import Audio

MODEL_RATE = 24_000

UPLOAD_TYPES = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
}


def decode(data: bytes, max_seconds: float = 10.0) -> DecodedUpload:
    return decode_upload(data, min_seconds=1.0, max_seconds=max_seconds, target_rate=MODEL_RATE)


def tone(seconds: float, rate: int, freq: float = 440.0) -> npt.NDArray[np.float32]:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def upload(fmt: str, seconds: float = 2.0, rate: int = 48_000) -> bytes:
    return encode(Audio(tone(seconds, rate), rate), fmt)


def wav(samples: npt.NDArray[np.float32], rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def dominant_hz(audio: Audio) -> float:
    spectrum = np.abs(np.fft.rfft(audio.samples))
    return float(np.argmax(spectrum)) * audio.sample_rate / audio.samples.size


@pytest.mark.parametrize("fmt", sorted(UPLOAD_TYPES))
def test_each_upload_format_round_trips(fmt: str) -> None:
    decoded = decode(upload(fmt))

    assert decoded.media_type == UPLOAD_TYPES[fmt]
    assert decoded.duration_s == pytest.approx(2.0, abs=0.06)  # lossy codecs pad a little
    assert decoded.audio.sample_rate == MODEL_RATE
    assert decoded.audio.samples.dtype == np.float32
    assert decoded.audio.samples.ndim == 1
    assert decoded.audio.duration_s == pytest.approx(decoded.duration_s, abs=1e-3)
    assert dominant_hz(decoded.audio) == pytest.approx(440, abs=2)
    assert np.abs(decoded.audio.samples).max() <= 1.0


@pytest.mark.parametrize("fmt", ["wav", "mp3", "ogg", "flac"])
def test_type_comes_from_content_not_filename(tmp_path: Path, fmt: str) -> None:
    misleading = tmp_path / "voice.txt"
    misleading.write_bytes(upload(fmt))

    assert decode(misleading.read_bytes()).media_type == UPLOAD_TYPES[fmt]


@pytest.mark.parametrize("rate", [8_000, 16_000, 22_050, 44_100, 48_000])
def test_any_rate_is_resampled_to_the_model_rate(rate: int) -> None:
    decoded = decode(wav(tone(2.0, rate), rate))

    assert decoded.audio.sample_rate == MODEL_RATE
    assert decoded.audio.samples.size == pytest.approx(2 * MODEL_RATE, abs=2)
    assert decoded.duration_s == pytest.approx(2.0)
    assert dominant_hz(decoded.audio) == pytest.approx(440, abs=1)


def test_stereo_is_mixed_to_mono() -> None:
    left = tone(2.0, MODEL_RATE)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)

    decoded = decode(wav(stereo, MODEL_RATE))

    assert decoded.audio.samples.shape == (2 * MODEL_RATE,)
    assert np.abs(decoded.audio.samples).max() == pytest.approx(0.15, abs=0.01)


def test_float_wav_above_full_scale_is_scaled_not_clipped() -> None:
    loud = tone(2.0, MODEL_RATE) * 10  # peak 3.0, legal in a float WAV

    samples = decode(wav(loud, MODEL_RATE, "FLOAT")).audio.samples

    assert np.abs(samples).max() == pytest.approx(1.0, abs=1e-3)
    assert np.corrcoef(samples, loud)[0, 1] > 0.999  # same shape: nothing was flattened


def test_a_truncated_mp3_decodes_what_is_there() -> None:
    data = upload("mp3", seconds=4.0)

    decoded = decode(data[: len(data) // 2])

    assert decoded.media_type == "audio/mpeg"
    assert 1.0 < decoded.duration_s < 3.0


@pytest.mark.parametrize(
    "data",
    [
        b"Hello, this is a transcript, not audio.\n" * 50,
        bytes(random.Random(1).randbytes(20_000)),
        b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 64,  # a WAV header and no data chunk
        upload("ogg")[:2000],  # Ogg Vorbis cut inside its headers: no samples left
        upload("pcm"),  # headerless PCM is an output format, not a self-describing upload
    ],
    ids=["text", "random", "wav-header-only", "truncated-ogg", "raw-pcm"],
)
def test_undecodable_bytes_are_a_typed_error(data: bytes) -> None:
    with pytest.raises(UndecodableAudio, match="send WAV, MP3, OGG"):
        decode(data)


def test_formats_libsndfile_reads_but_we_do_not_accept_are_refused() -> None:
    buffer = io.BytesIO()
    sf.write(buffer, tone(2.0, MODEL_RATE), MODEL_RATE, format="AIFF")

    with pytest.raises(UndecodableAudio):
        decode(buffer.getvalue())


def test_empty_upload() -> None:
    with pytest.raises(EmptyAudio, match="empty"):
        decode(b"")


def test_too_short() -> None:
    with pytest.raises(AudioTooShort, match=r"0\.50 s long; send at least 1 s"):
        decode(wav(tone(0.5, MODEL_RATE), MODEL_RATE))


@pytest.mark.parametrize("fmt", ["wav", "opus"])
def test_too_long_stops_decoding_at_the_limit(fmt: str) -> None:
    data = upload(fmt, seconds=3.0)

    with pytest.raises(AudioTooLong, match="at most 2 s"):
        decode(data, max_seconds=2.0)


def test_exactly_the_maximum_is_accepted() -> None:
    assert decode(wav(tone(2.0, MODEL_RATE), MODEL_RATE), max_seconds=2.0).duration_s == 2.0


@pytest.mark.parametrize("level", [0.0, 1e-4])
def test_silence_is_refused(level: float) -> None:
    quiet = np.full(2 * MODEL_RATE, level, dtype=np.float32)

    with pytest.raises(SilentAudio, match="silent"):
        decode(wav(quiet, MODEL_RATE, "FLOAT"))


def test_nan_samples_are_refused() -> None:
    samples = tone(2.0, MODEL_RATE)
    samples[100] = np.nan

    with pytest.raises(UndecodableAudio, match="NaN"):
        decode(wav(samples, MODEL_RATE, "FLOAT"))


@pytest.mark.parametrize("fmt", sorted(UPLOAD_TYPES))
def test_corrupted_files_only_ever_raise_audio_errors(fmt: str) -> None:
    """Truncations and flipped bytes anywhere: libsndfile's failures must not leak."""
    original = upload(fmt, seconds=1.5)
    rng = random.Random(fmt)
    variants = [original[:cut] for cut in range(0, len(original), max(1, len(original) // 40))]
    for _ in range(60):
        damaged = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        variants.append(bytes(damaged))

    for data in variants:
        try:
            decoded = decode(data)
        except AudioError:
            continue
        assert np.isfinite(decoded.audio.samples).all()
        assert np.abs(decoded.audio.samples).max() <= 1.0


def test_sniff_skips_an_id3_tag_and_rejects_lookalikes() -> None:
    mp3 = upload("mp3")
    id3 = b"ID3\x04\x00\x00" + bytes([0, 0, 0, 20]) + b"\x00" * 20
    adts_aac = b"\xff\xf1\x50\x80" + b"\x00" * 100
    ogg_speex = upload("ogg").replace(b"\x01vorbis", b"Speex   ", 1)

    assert sniff(id3 + mp3) == "audio/mpeg"
    assert sniff(id3 + upload("flac")) == "audio/flac"
    assert sniff(adts_aac) is None
    assert sniff(ogg_speex) is None
    assert decode(id3 + mp3).duration_s == pytest.approx(2.0, abs=0.06)


def test_concurrent_decoding_gives_the_same_audio_as_serial() -> None:
    uploads = [upload(fmt, seconds=2.0 + i / 10) for i in range(2) for fmt in UPLOAD_TYPES] * 2
    serial = [decode(data).audio.samples for data in uploads]

    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda data: decode(data).audio.samples, uploads))

    for expected, got in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(got, expected)
