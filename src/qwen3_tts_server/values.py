"""Plain value types shared by the engine, the audio codecs, the database and the services.

They live outside every layer so that `audio` can speak of `Audio` without importing the engine,
services can describe sampling settings without importing model code, and the ledger, usage
totals and the database schema agree on one set of generation statuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

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

    These defaults are the only statement of each default: `Settings` takes its SAMPLING_*
    defaults from here, and services build every request's sampling from `Settings.sampling`.
    (`temperature` 1.0 is the original API's documented default.)
    """

    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    seed: int | None = None


class GenerationStatus(StrEnum):
    """Where a generation or batch row stands; stored as its string value.

    `OK` rows are counted and charged, and so is a `CANCELLED` stream for the audio it was sent
    before the client left. `STREAMING` is a stream still sending audio; `INTERRUPTED` is a
    stream the server stopped without settling (a crash, found at start-up).
    """

    OK = "ok"
    ERROR = "error"
    CANCELLED = "cancelled"
    STREAMING = "streaming"
    INTERRUPTED = "interrupted"


class FinishReason(StrEnum):
    """Why the model stopped speaking a text (the step-loop engine reports it per request)."""

    EOS = "eos"
    LENGTH = "length"
    SILENCE = "silence"
    CANCELLED = "cancelled"


_MIB = 1024 * 1024


def format_size(n_bytes: int) -> str:
    """A configured byte limit as an operator wrote it: whole MiB as "20 MiB", else bytes.

    Decimal megabytes ("20.9715 MB" for 20 MiB) named no number anybody configured.
    """
    if n_bytes >= _MIB and n_bytes % _MIB == 0:
        return f"{n_bytes // _MIB} MiB"
    return f"{n_bytes} bytes"


@dataclass(frozen=True)
class Word:
    """One word of a text and when it is spoken: seconds from the start of the audio.

    `text` is the word as written in the text, punctuation attached (for Chinese, one
    character; for Japanese and Korean, one unit of the aligner's word splitter).
    """

    text: str
    start: float
    end: float

    def as_dict(self) -> dict[str, object]:
        return {"text": self.text, "start": self.start, "end": self.end}
