"""The contract between the server and whatever runs the model.

Services speak only these types; `QwenEngine` is the one real implementation. Keeping the
contract tiny (bytes in, float32 arrays out) is what lets the scheduler batch work from many
requests without knowing anything about users, storage or HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from qwen3_tts_server.values import Audio, Sampling

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


class Engine(Protocol):
    """What the scheduler needs from a model runner. Not thread-safe: one caller at a time."""

    def info(self) -> EngineInfo: ...

    def create_prompt(self, audio: Audio, transcript: str | None) -> bytes:
        """Encode a reference once into reusable prompt bytes.

        ICL mode (speech codes + text) with a transcript, else x-vector only.
        """
        ...

    def synthesize(self, items: Sequence[SynthItem], sampling: Sampling) -> list[Audio]:
        """Speak every item in one model call; items may use different voices."""
        ...

    def synthesize_custom(self, items: Sequence[CustomItem], sampling: Sampling) -> list[Audio]:
        """Speak every item with preset speakers (CustomVoice model)."""
        ...

    def design(self, text: str, description: str, language: str, sampling: Sampling) -> Audio:
        """Make a reference sample of `text` in a voice described in words (VoiceDesign model)."""
        ...

    def warm_up(self) -> None:
        """Pay every one-time cost (JIT, first resample, allocator) before serving."""
        ...
