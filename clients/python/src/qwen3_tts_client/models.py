"""What the calls return: plain frozen dataclasses read from the server's JSON, headers and ZIPs.

Field names follow the server's wire contract (README of the server; `schemas.py` there).
Times are timezone-aware datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


def _save(data: bytes, path: str | Path) -> Path:
    target = Path(path)
    target.write_bytes(data)
    return target


@dataclass(frozen=True)
class Voice:
    """One of your voices, as GET /voices lists it."""

    voice_id: int
    name: str
    created_at: datetime
    use_count: int
    language: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Voice:
        return cls(
            voice_id=int(data["voice_id"]),
            name=str(data["name"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            use_count=int(data["use_count"]),
            language=str(data["language"]),
        )


@dataclass(frozen=True)
class VoiceDetail(Voice):
    """GET /voices/{id}: the list entry plus how the voice was made."""

    ref_text: str = ""
    voice_description: str | None = None
    kind: str = ""  # "clone" | "design"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VoiceDetail:
        summary = Voice.from_json(data)
        return cls(
            **vars(summary),
            ref_text=str(data["ref_text"]),
            voice_description=data.get("voice_description"),
            kind=str(data["kind"]),
        )


@dataclass(frozen=True)
class VoiceCreated:
    """What /clonevoice and /designvoice answer: the new voice's id and what it cost."""

    voice_id: int
    tokens_used: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VoiceCreated:
        return cls(voice_id=int(data["voice_id"]), tokens_used=int(data["tokens_used"]))


@dataclass(frozen=True)
class VoiceSample:
    """GET /voices/{id}/sample: the reference audio exactly as stored, and its transcript
    (None when the server left it out of the headers for its length: see `voice()`)."""

    audio: bytes
    media_type: str
    transcript: str | None

    def save(self, path: str | Path) -> Path:
        return _save(self.audio, path)


@dataclass(frozen=True)
class Speaker:
    """A preset speaker of the server's CustomVoice model (GET /speakers)."""

    name: str
    native_language: str
    languages: list[str]
    description: str
    supports_instructions: bool
    openai_voices: list[str]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Speaker:
        return cls(
            name=str(data["name"]),
            native_language=str(data["native_language"]),
            languages=[str(item) for item in data["languages"]],
            description=str(data["description"]),
            supports_instructions=bool(data["supports_instructions"]),
            openai_voices=[str(item) for item in data["openai_voices"]],
        )


@dataclass(frozen=True)
class Usage:
    """GET /usage: your totals. `tokens_used_total` includes `tokens_used_voices`."""

    tokens_used_total: int
    tokens_used_tts: int
    tokens_used_batch: int
    tokens_used_voices: int
    voices_created: int
    tts_calls: int
    batch_calls: int
    audio_seconds_total: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Usage:
        return cls(
            tokens_used_total=int(data["tokens_used_total"]),
            tokens_used_tts=int(data["tokens_used_tts"]),
            tokens_used_batch=int(data["tokens_used_batch"]),
            tokens_used_voices=int(data["tokens_used_voices"]),
            voices_created=int(data["voices_created"]),
            tts_calls=int(data["tts_calls"]),
            batch_calls=int(data["batch_calls"]),
            audio_seconds_total=float(data["audio_seconds_total"]),
        )


@dataclass(frozen=True)
class Speech:
    """One /tts answer: the audio file and what its X- headers said.

    `latency_ms` is model time only, `queue_ms` the wait for the model, `finish_reason` how
    the model stopped (`eos`, `silence` or `length`)."""

    audio: bytes
    media_type: str
    generation_id: int
    tokens_used: int
    sample_rate: int | None
    latency_ms: int | None
    queue_ms: int | None
    finish_reason: str | None

    def save(self, path: str | Path) -> Path:
        return _save(self.audio, path)


@dataclass(frozen=True)
class StreamInfo:
    """The headers of a streamed /tts, known before the first audio piece.

    There is no latency or finish reason yet when they are sent (the server records both);
    `first_audio_ms` is the time to the first audio, queue wait included."""

    media_type: str
    generation_id: int
    tokens_used: int
    sample_rate: int | None
    first_audio_ms: int | None
    queue_ms: int | None


@dataclass(frozen=True)
class BatchItem:
    """One text of a batch: its audio file and its line of the manifest."""

    index: int
    filename: str
    audio: bytes
    generation_id: int
    chars: int
    tokens: int
    duration_s: float
    finish_reason: str

    def save(self, path: str | Path) -> Path:
        return _save(self.audio, path)


@dataclass(frozen=True)
class Batch:
    """One /batchtts answer, unpacked: the items in input order and the batch's totals.

    `archive` is the ZIP as received (`0.wav`, `1.wav`, ... and manifest.json)."""

    batch_id: int
    tokens_used: int
    discount_used: float
    latency_ms_total: int | None
    queue_ms: int | None
    sample_rate: int
    format: str
    items: list[BatchItem]
    manifest: dict[str, Any] = field(repr=False)
    archive: bytes = field(repr=False)


@dataclass(frozen=True)
class StoredAudio:
    """GET /getstored/{id}: a generation kept with `store=True`, in its original format."""

    audio: bytes
    media_type: str
    generation_id: int

    def save(self, path: str | Path) -> Path:
        return _save(self.audio, path)
