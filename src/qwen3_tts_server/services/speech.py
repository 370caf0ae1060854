"""What /tts, streamed /tts and /batchtts share: the request, its checks, and sentence joining.

A request that passes `SpeechChecks` becomes an `Order` (what the ledger records) and the
`Sampling` the model gets; both are built here only, so every path validates, defaults and
records alike. Long texts are split into sentences (`split_text`), spoken as one job, and joined
with a short pause.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qwen3_tts_server.audio.encode import FORMATS, encode
from qwen3_tts_server.audio.ffmpeg import MAX_SPEED, MIN_SPEED, change_speed
from qwen3_tts_server.config import Settings
from qwen3_tts_server.errors import BadRequest
from qwen3_tts_server.services.generations import Order
from qwen3_tts_server.services.languages import normalize_language
from qwen3_tts_server.values import Audio, Sampling

#: Silence between the sentences of one long text, so joined chunks do not run together.
SENTENCE_PAUSE_S = 0.12


@dataclass(frozen=True)
class SpeechRequest:
    """What /tts and /batchtts share, already type-checked by the schema. `temperature` None
    means the server's default (SAMPLING_TEMPERATURE). The voice is a stored one (`voice_id`)
    or a preset `speaker`, exactly one; `instruct` asks either to speak a certain way, and
    `speed` changes the tempo of the finished audio (pitch kept)."""

    voice_id: int | None
    language: str | None
    format: str
    store: bool
    temperature: float | None = None
    seed: int | None = None
    speaker: str | None = None
    instruct: str = ""
    speed: float = 1.0


def _format(name: str) -> str:
    fmt = name.strip().lower()
    if fmt not in FORMATS:
        raise BadRequest(f"Unsupported format {name!r}; use one of: {', '.join(FORMATS)}")
    return fmt


class SpeechChecks:
    """The checks that need no database, in the order the original server made them."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def single(self, user_id: int, text: str, request: SpeechRequest) -> tuple[Order, Sampling]:
        """/tts: text, then format, then language."""
        if not text.strip():
            raise BadRequest("Text must not be empty")
        text = self._text(text, "Text too long (max {limit})")
        return self._order(user_id, (text,), request)

    def batch(
        self, user_id: int, texts: Sequence[str], request: SpeechRequest
    ) -> tuple[Order, Sampling]:
        """/batchtts: count, then each text, then format and language."""
        settings = self._settings
        if len(texts) < settings.min_batch_size:
            raise BadRequest(f"Batch too small (min {settings.min_batch_size})")
        if len(texts) > settings.max_batch_size:
            raise BadRequest(f"Batch too large (max {settings.max_batch_size})")
        if any(not text.strip() for text in texts):
            raise BadRequest("All texts must be non-empty")
        cleaned = tuple(self._text(text, "Each text must be <= {limit} chars") for text in texts)
        return self._order(user_id, cleaned, request)

    def _text(self, text: str, too_long: str) -> str:
        stripped = text.strip()
        if len(stripped) > self._settings.max_text_len:
            raise BadRequest(too_long.format(limit=self._settings.max_text_len))
        return stripped

    def _order(
        self, user_id: int, texts: tuple[str, ...], request: SpeechRequest
    ) -> tuple[Order, Sampling]:
        if (request.voice_id is None) == (request.speaker is None):
            raise BadRequest("Send exactly one of voice_id (your voice) or speaker (a preset)")
        if not MIN_SPEED <= request.speed <= MAX_SPEED:
            raise BadRequest(f"speed must be between {MIN_SPEED} and {MAX_SPEED}")
        fmt = _format(request.format)
        sampling = self._settings.sampling(request.temperature, request.seed)
        order = Order(
            user_id=user_id,
            voice_id=request.voice_id,
            format=fmt,
            media_type=FORMATS[fmt].media_type,
            language=normalize_language(request.language),
            temperature=sampling.temperature,
            store=request.store,
            texts=texts,
            speaker=request.speaker,
            instruct=request.instruct.strip(),
            speed=request.speed,
        )
        return order, sampling


def sentence_pause(sample_rate: int) -> np.ndarray:
    """The silence /tts puts between two sentences of one text (streams put the same)."""
    return np.zeros(int(sample_rate * SENTENCE_PAUSE_S), dtype=np.float32)


def join_sentences(parts: Sequence[Audio], *, continues: bool = False) -> Audio:
    """The sentences of one text as one audio, with a short pause between each two.

    `continues`: these sentences follow earlier ones of the same text (a stream sends a text in
    pieces), so the pause also comes first; the pieces, concatenated, are then exactly the
    audio that joining every sentence at once makes.
    """
    rate = parts[0].sample_rate
    pause = sentence_pause(rate)
    pieces: list[np.ndarray] = []
    for index, part in enumerate(parts):
        if index or continues:
            pieces.append(pause)
        pieces.append(part.samples.astype(np.float32, copy=False))
    return Audio(np.concatenate(pieces), rate)


def encode_texts(
    per_text: Sequence[Sequence[Audio]], fmt: str, speed: float = 1.0
) -> list[tuple[Audio, bytes]]:
    """Each text's sentences joined, its tempo changed to `speed`, then encoded: (audio, file
    bytes) per text."""
    joined = [change_speed(join_sentences(parts), speed) for parts in per_text]
    return [(audio, encode(audio, fmt)) for audio in joined]
