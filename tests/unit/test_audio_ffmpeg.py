"""AAC output and speed changes, done by FFmpeg's libraries in process (PyAV).

Files are read back with libavformat's own probe and decoder, which are what ffprobe and
ffmpeg use, so "ffprobe reads it" is checked without needing the ffmpeg executables.
"""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import numpy.typing as npt
import pytest

from qwen3_tts_server.audio.encode import encode
from qwen3_tts_server.audio.ffmpeg import (
    AAC_RATES,
    MAX_SPEED,
    MIN_SPEED,
    change_speed,
    encode_aac,
    tempo_stages,
)
from qwen3_tts_server.values import Audio

RATE = 24_000
#: Samples of silence FFmpeg's AAC encoder puts first (ADTS cannot tell a decoder to drop them).
PRIMING = 1024


def tone(seconds: float, pitch: float = 300.0, rate: int = RATE) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    return Audio((0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32), rate)


def dominant_hz(audio: Audio) -> float:
    spectrum = np.abs(np.fft.rfft(audio.samples * np.hanning(audio.samples.size)))
    return float(np.argmax(spectrum)) * audio.sample_rate / audio.samples.size


def decode(data: bytes) -> tuple[av.container.InputContainer, npt.NDArray[np.float32]]:
    container = av.open(io.BytesIO(data))
    samples = np.concatenate(
        [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
    )
    return container, samples.astype(np.float32)


# -- aac -----------------------------------------------------------------------------------------
def test_aac_is_adts_lc_mono_that_ffmpeg_probes_and_decodes() -> None:
    audio = tone(2.0)

    data = encode(audio, "aac")

    # ADTS: every frame starts with a 12-bit sync word; MPEG-4, no CRC; profile 1 = AAC LC;
    # sampling index 6 = 24 kHz; one channel.
    assert data[0] == 0xFF and data[1] & 0xF6 == 0xF0
    assert data[2] >> 6 == 1 and (data[2] >> 2) & 0xF == 6
    assert ((data[2] & 1) << 2 | data[3] >> 6) == 1
    container, samples = decode(data)
    stream = container.streams.audio[0]
    assert container.format.name == "aac"
    assert (stream.codec_context.name, stream.codec_context.profile) == ("aac", "LC")
    assert (stream.sample_rate, stream.channels) == (RATE, 1)
    # The encoder's priming (1024 samples) and last-frame padding, no more.
    assert 2.0 <= samples.size / RATE <= 2.0 + 2 * PRIMING / RATE
    # Past the priming, the waveform is the input's (lossy, so not sample-exact).
    aligned = samples[PRIMING : PRIMING + audio.samples.size]
    assert np.corrcoef(aligned, audio.samples)[0, 1] > 0.99
    assert len(data) / 2.0 * 8 < 80_000  # about 64 kbit/s


def test_aac_at_a_rate_adts_cannot_carry_is_resampled() -> None:
    container, _ = decode(encode(tone(1.0, rate=22_000), "aac"))

    assert container.streams.audio[0].sample_rate == 22_050  # the nearest rate above
    assert 22_000 not in AAC_RATES


def test_aac_refuses_a_rate_it_cannot_signal() -> None:
    with pytest.raises(ValueError, match="cannot carry 22000 Hz"):
        encode_aac(tone(0.5).samples, 22_000)


def test_concurrent_aac_encoding_gives_the_same_bytes_as_serial() -> None:
    inputs = [tone(1.0 + i / 10, pitch=200.0 + 50 * i) for i in range(4)] * 2
    serial = [encode(audio, "aac") for audio in inputs]

    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda audio: encode(audio, "aac"), inputs))

    assert parallel == serial


# -- speed ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("speed", [0.25, 0.3, 0.5, 0.8, 1.5, 2.0, 3.0, 4.0])
def test_speed_scales_duration_by_its_inverse_and_keeps_the_pitch(speed: float) -> None:
    audio = tone(4.0, pitch=300.0)

    out = change_speed(audio, speed)

    assert out.sample_rate == RATE
    assert out.duration_s == pytest.approx(4.0 / speed, rel=0.02)
    # Resampling would move 300 Hz to 300 x speed; a time-stretch keeps it.
    assert dominant_hz(out) == pytest.approx(300.0, abs=2.0)
    assert np.abs(out.samples).max() == pytest.approx(0.3, abs=0.05)


def test_speed_one_is_the_audio_unchanged() -> None:
    audio = tone(1.0)

    assert change_speed(audio, 1.0) is audio


def test_speed_of_empty_audio_is_empty() -> None:
    empty = Audio(np.zeros(0, dtype=np.float32), RATE)

    assert change_speed(empty, 2.0).samples.size == 0


@pytest.mark.parametrize("speed", [0.25, 0.3, 0.49, 0.5, 0.75, 1.0, 1.99, 2.0, 2.5, 3.99, 4.0])
def test_tempo_stages_stay_within_atempos_range_and_multiply_to_the_speed(speed: float) -> None:
    stages = tempo_stages(speed)

    assert all(0.5 <= stage <= 2.0 for stage in stages)
    assert math.prod(stages) == pytest.approx(speed)
    assert len(stages) <= 2


@pytest.mark.parametrize("speed", [MIN_SPEED - 0.01, MAX_SPEED + 0.01, 0.0, -1.0])
def test_speed_outside_openais_range_is_refused(speed: float) -> None:
    with pytest.raises(ValueError, match=r"between 0\.25 and 4\.0"):
        change_speed(tone(0.5), speed)
