"""Plain value types shared by the engine, the audio codecs and the services.

They live outside every layer so that `audio` can speak of `Audio` without importing the engine,
and services can describe sampling settings without importing model code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples in [-1, 1] at `sample_rate`."""

    samples: npt.NDArray[np.float32]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return float(self.samples.shape[0]) / float(self.sample_rate)


@dataclass(frozen=True)
class Sampling:
    """Generation settings shared by every item of one model call.

    qwen-tts applies sampling per call, not per item, so only jobs with equal `Sampling` may be
    merged into one batch. A seeded job is never merged: padding next to other texts would make
    its output depend on its neighbours, and a seed promises reproducible audio.
    """

    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    seed: int | None = None
