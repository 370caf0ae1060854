"""Runaway guard decisions on plain arrays: budgets, trailing silence, code loops."""

from __future__ import annotations

import numpy as np
import torch

from qwen3_tts_server.engine.serving.guard import SILENCE, GuardPolicy, RunawayWatch, frame_budget
from qwen3_tts_server.engine.text.bounds import max_new_tokens_for

FRAME = 1920
TEXT = "Hello there."  # 12 units of speech: covered after 10 frames


def noise(frames: int, level: float = 0.3) -> np.ndarray:
    return (level * np.random.default_rng(0).standard_normal(frames * FRAME)).astype(np.float32)


def random_codes(frames: int) -> torch.Tensor:
    return torch.randint(0, 64, (frames, 4), generator=torch.Generator().manual_seed(1))


def test_budget_is_the_texts_unless_the_operator_caps_it() -> None:
    assert frame_budget(TEXT, 2048) == (max_new_tokens_for(TEXT), False)
    assert frame_budget(TEXT, 12) == (12, True)


def test_trailing_silence_ends_a_covered_chunk() -> None:
    watch = RunawayWatch(TEXT, FRAME)
    assert watch.covered == 10
    watch.hear(noise(12))
    watch.hear(np.zeros(24 * FRAME, np.float32))
    assert watch.verdict(random_codes(36)) is None  # 24 silent frames: under 2 s
    watch.hear(np.full(FRAME, 1e-4, np.float32))  # -80 dBFS still counts as silence
    assert watch.verdict(random_codes(37)) == SILENCE


def test_silence_before_the_text_is_covered_is_a_pause() -> None:
    watch = RunawayWatch("A much longer sentence that takes a while to say out loud.", FRAME)
    watch.hear(np.zeros(30 * FRAME, np.float32))
    assert watch.verdict(random_codes(30)) is None


def test_speech_resets_the_silence_count() -> None:
    watch = RunawayWatch(TEXT, FRAME)
    watch.hear(np.zeros(20 * FRAME, np.float32))
    watch.hear(noise(1))
    watch.hear(np.zeros(10 * FRAME, np.float32))
    assert watch.trailing_silent == 10
    assert watch.verdict(random_codes(31)) is None


def test_a_loop_of_codes_ends_a_covered_chunk() -> None:
    watch = RunawayWatch(TEXT, FRAME, GuardPolicy(loop_seconds=2.0))
    looped = torch.cat(
        [random_codes(12), torch.tensor([[5, 1, 1, 1], [9, 2, 2, 2], [7, 3, 3, 3]] * 12)]
    )
    assert watch.verdict(looped[:30]) is None  # loop shorter than 2 s after coverage
    assert watch.verdict(looped) == SILENCE
    assert watch.verdict(random_codes(48)) is None  # no loop
