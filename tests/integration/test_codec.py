"""Incremental decoding on the tiny model's real 12 Hz decoder: pieces against one-shot audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen3_tts_server.engine.serving.codec import (
    MAX_DECODE_BATCH,
    STREAMING,
    ChunkSchedule,
    Codec,
    StreamDecoder,
)
from qwen3_tts_server.engine.step.stepper import StepEngine

FRAME = 1920


@pytest.fixture(scope="module")
def codec(engine: StepEngine) -> Codec:
    return engine.lane("base").codec


def codes(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 64, (frames, 4), generator=torch.Generator().manual_seed(seed))


def streamed(codec: Codec, frames: torch.Tensor, schedule: ChunkSchedule) -> list[np.ndarray]:
    decoder = StreamDecoder(codec, schedule)
    pieces = []
    for end in range(1, frames.shape[0] + 1):
        if decoder.due(end, final=end == frames.shape[0]):
            pieces.append(decoder.decode(frames[:end]))
    return pieces


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - other) ** 2)))


def test_pieces_follow_the_schedule_and_join_close_to_one_shot(codec: Codec) -> None:
    frames = codes(60)
    pieces = streamed(codec, frames, STREAMING)
    assert [p.shape[0] // FRAME for p in pieces] == [4, 25, 25, 6]
    joined = np.concatenate(pieces)
    whole = codec.decode(frames)
    assert joined.shape == whole.shape == (60 * FRAME,)
    # nothing before the first piece: the same samples up to float rounding (other shapes)
    assert np.allclose(joined[: 4 * FRAME], whole[: 4 * FRAME], atol=1e-5)
    assert snr_db(whole, joined) > 30  # context 8 frames: bench/codec.py measures it
    without_context = np.concatenate(streamed(codec, frames, ChunkSchedule(4, 25, context=0)))
    assert snr_db(whole, without_context) < snr_db(whole, joined)


def test_an_icl_reference_is_left_context_not_output(codec: Codec) -> None:
    reference, frames = codes(30, seed=1), codes(10, seed=2)
    first = StreamDecoder(codec, STREAMING, reference).decode(frames)
    assert first.shape == (10 * FRAME,)
    joined = codec.decode(torch.cat([reference, frames]))[30 * FRAME :]
    assert snr_db(joined, first) > 30  # what stock's decode of reference + output gives
    assert not np.array_equal(first, codec.decode(frames))


def test_windows_decoded_together_equal_their_own_decodes(codec: Codec) -> None:
    windows = [(codes(20, seed=3), 16), (codes(4, seed=4), 0), (codes(41, seed=5), 16)]
    together = codec.decode_many(windows)
    for (window, skip), samples in zip(windows, together, strict=True):
        assert samples.shape == ((window.shape[0] - skip) * FRAME,)
        assert np.allclose(samples, codec.decode(window, skip), atol=1e-5)


def test_more_windows_than_one_call_takes_come_back_in_order(codec: Codec) -> None:
    count = MAX_DECODE_BATCH * 2 + 3
    windows = [(codes(3 + i % 5, seed=10 + i), i % 2) for i in range(count)]
    together = codec.decode_many(windows)
    assert len(together) == count
    for (window, skip), samples in zip(windows, together, strict=True):
        assert np.allclose(samples, codec.decode(window, skip), atol=1e-5)
