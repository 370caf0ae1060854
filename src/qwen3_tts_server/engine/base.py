"""The contract between the server and whatever runs the model.

Services speak only these types (items in, float32 audio out); the scheduler drives an `Engine`
step by step (`StepEngine` over the loaded qwen-tts models; `QwenEngine` keeps the stock
`generate` path as the reference for tests and benchmarks). Keeping the contract small is what
lets the scheduler batch work from many requests without knowing about users, storage or HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from qwen3_tts_server.values import Audio, Sampling

if TYPE_CHECKING:  # the engine's own slot type; base.py stays free of model code
    from qwen3_tts_server.engine.step.stepper import Admission, Slot

#: Languages qwen-tts understands ("auto" means: no language id, the model decides).
LANGUAGES: tuple[str, ...] = (
    "auto",
    "chinese",
    "english",
    "japanese",
    "korean",
    "german",
    "french",
    "russian",
    "portuguese",
    "spanish",
    "italian",
)


@dataclass(frozen=True)
class SynthItem:
    """One text to speak with one stored voice prompt (`VoicePrompt` bytes)."""

    text: str
    language: str
    prompt: bytes


@dataclass(frozen=True)
class CustomItem:
    """One text to speak with a preset speaker of the CustomVoice model."""

    text: str
    language: str
    speaker: str
    instruct: str = ""


@dataclass(frozen=True)
class DesignItem:
    """One text to speak in a voice described in words (VoiceDesign model)."""

    text: str
    language: str
    description: str


#: One text to speak, in any of the three ways (clone, preset speaker, designed voice).
Item = SynthItem | CustomItem | DesignItem


@dataclass(frozen=True)
class EngineInfo:
    """What is loaded, for /ready, /metrics and the prompt compatibility check."""

    base_model_id: str
    device: str
    dtype: str
    sample_rate: int
    has_voice_design: bool
    has_custom_voice: bool
    speakers: tuple[str, ...] = field(default_factory=tuple)
    #: Whether the CustomVoice model follows `CustomItem.instruct` (the 1.7B does; qwen-tts
    #: drops instructions for the 0.6B without a word).
    speaker_instructions: bool = False


class EngineError(Exception):
    """Base class of every error the engine or scheduler raises on purpose."""


class ModelUnavailable(EngineError):
    """The operation needs a model that is not loaded (API: 503)."""


class ModelsMissing(EngineError):
    """Model files are not on disk and cannot be downloaded; the message says what to do."""


class PromptMismatch(EngineError):
    """A stored prompt was made by another model (API: 409)."""


class PromptCorrupt(EngineError):
    """Stored prompt bytes cannot be read (API: 409; the voice must be recreated)."""


class InvalidInput(EngineError):
    """The model refused an input the API should have caught (API: 400)."""


class QueueFull(EngineError):
    """Too much work is waiting; the caller should retry later (API: 429 + Retry-After)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the synthesis queue is full; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class JobTimeout(EngineError):
    """A job did not finish within its deadline (API: 503)."""


class ShuttingDown(EngineError):
    """The scheduler stopped before the job ran (API: 503)."""


class Runaway(EngineError):
    """A text used its whole frame budget without ending, also on its retry: the model failed
    to stop (a known Qwen3-TTS failure). Recorded, not charged (API: 503)."""


class Engine(Protocol):
    """The step interface the scheduler drives (`StepEngine` is the real one). Not thread-safe:
    the scheduler's inference thread is its only caller.

    A request is prepared (its prompt built), admitted into a slot (prefilled together with
    the others of its turn), stepped one 80 ms frame at a time together with every other active
    slot, and released when it has finished.
    """

    def info(self) -> EngineInfo: ...

    @property
    def frame_cap(self) -> int:
        """The most frames one chunk may make (the operator's cap; texts get less)."""
        ...

    def create_prompt(self, audio: Audio, transcript: str | None) -> bytes:
        """Encode a reference once into reusable prompt bytes.

        ICL mode (speech codes + text) with a transcript, else x-vector only.
        """
        ...

    @property
    def prefill_tokens(self) -> int:
        """Prompt positions the loop prefills per turn (at least one request): what a burst
        of arrivals may stall the running streams by."""
        ...

    def prepare(self, item: Item, sampling: Sampling, budget: int) -> Admission:
        """Build one request's prompt for a slot that may make up to `budget` frames; raises
        for bad input."""
        ...

    def prefill(self, admissions: Sequence[Admission]) -> list[Slot]:
        """Prefill prepared requests into new slots, together (all or none)."""
        ...

    def step(self, slots: Sequence[Slot]) -> None:
        """Advance every unfinished slot by one frame."""
        ...

    def release(self, slot: Slot) -> None:
        """Free a finished slot's buffers."""
        ...

    def warm_up(self) -> None:
        """Pay every one-time cost (JIT, first resample, allocator) before serving."""
        ...
