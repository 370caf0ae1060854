"""Runaway guard: a frame budget per chunk, and early stop when speech has clearly ended.

A known Qwen3-TTS failure (≈0.3-0.5 % of real generations) is a talker that never emits EOS:
room tone or babble until the token limit. Three defences, per chunk:

* a frame budget from the chunk's text (bounds.py: expected frames x2 headroom + 2 s), so slow
  speech fits and a runaway ends; a chunk that uses it all without EOS finishes "length" and is
  treated as a failure (the scheduler retries it once with a new seed, then fails the request,
  uncharged), unless the operator's frame cap, not the text, set the budget: then "length" is
  a truncation the operator asked for;
* once the text should be covered (its expected frames, no headroom), a long run of trailing
  silence in the decoded audio ends the chunk as "silence" (a success: the speech is there);
* likewise a loop: the talker's codes repeating with a short period for `loop_seconds`.

The thresholds are deliberately far from normal speech: speech pauses are well under 2 s, and
exact code loops of several seconds do not occur in speech.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from qwen3_tts_server.engine.text.bounds import (
    FRAMES_PER_SECOND,
    LATIN_CHARS_PER_SECOND,
    max_new_tokens_for,
    speech_units,
)

#: Finish reasons of a chunk, as recorded on generations and sent as X-Finish-Reason.
EOS, LENGTH, SILENCE, CANCELLED = "eos", "length", "silence", "cancelled"


@dataclass(frozen=True)
class GuardPolicy:
    """When a chunk that should be finished is stopped early."""

    silence_seconds: float = 2.0
    silence_dbfs: float = -50.0
    loop_seconds: float = 3.0
    loop_max_period: int = 8


def frame_budget(text: str, cap: int) -> tuple[int, bool]:
    """Frames a chunk may generate, and whether the operator's cap (not the text) set it."""
    text_budget = max_new_tokens_for(text)
    return min(text_budget, cap), cap < text_budget


def covered_frames(text: str) -> int:
    """Frames after which the text should have been spoken at an ordinary pace."""
    return math.ceil(speech_units(text) * FRAMES_PER_SECOND / LATIN_CHARS_PER_SECOND)


class RunawayWatch:
    """Watches one chunk's decoded audio and codes for the end of speech."""

    def __init__(self, text: str, frame_samples: int, policy: GuardPolicy | None = None) -> None:
        self.policy = policy or GuardPolicy()
        self.covered = covered_frames(text)
        self.frame_samples = frame_samples
        self._threshold = 10 ** (self.policy.silence_dbfs / 20)
        self._silence_frames = math.ceil(self.policy.silence_seconds * FRAMES_PER_SECOND)
        self._loop_frames = math.ceil(self.policy.loop_seconds * FRAMES_PER_SECOND)
        self.trailing_silent = 0

    def hear(self, samples: npt.NDArray[np.float32]) -> None:
        """Fold newly decoded samples (whole frames) into the trailing-silence count."""
        frames = samples[: samples.shape[0] - samples.shape[0] % self.frame_samples]
        for frame in frames.reshape(-1, self.frame_samples):
            rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float64))))
            self.trailing_silent = self.trailing_silent + 1 if rms < self._threshold else 0

    def verdict(self, codes: torch.Tensor) -> str | None:
        """SILENCE when a covered chunk has gone silent or loops; None to go on.

        `codes`: the chunk's frames so far (frames, groups).
        """
        count = codes.shape[0]
        if count < self.covered:
            return None
        if self.trailing_silent >= self._silence_frames:
            return SILENCE
        if count >= self.covered + self._loop_frames and self._loops(codes[:, 0]):
            return SILENCE
        return None

    def _loops(self, tokens: torch.Tensor) -> bool:
        window = self._loop_frames
        tail = tokens[-window - self.policy.loop_max_period :]
        for period in range(1, self.policy.loop_max_period + 1):
            if bool(torch.equal(tail[period:][-window:], tail[:-period][-window:])):
                return True
        return False
