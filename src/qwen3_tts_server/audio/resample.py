"""Sample-rate conversion shared by the decoder (uploads → model rate) and the encoder (codecs
that only accept some rates)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr  # librosa's own resampling backend: already installed, thread-safe, fast


def resample(
    samples: npt.NDArray[np.float32], from_rate: int, to_rate: int
) -> npt.NDArray[np.float32]:
    """Mono float32 `samples` at `to_rate`; the input itself when the rates already match."""
    if from_rate == to_rate:
        return samples
    out = soxr.resample(samples, from_rate, to_rate, quality="HQ")
    return np.asarray(out, dtype=np.float32)
