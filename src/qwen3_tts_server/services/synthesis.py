"""Text to audio for /tts and /batchtts: validate, run the model, encode, record, charge.

Long texts are split into sentences and sent as one multi-item job, so the scheduler can batch
them with each other and with other requests, then joined with a short pause. Nothing is kept
for `store=false` but the usage row; a failed call is recorded with its error and costs nothing.
Streamed /tts (services/streaming.py) uses the same checks, join and records: its row is made
before the audio and settled when the stream ends.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from qwen3_tts_server.audio.archive import build_zip
from qwen3_tts_server.audio.encode import FORMATS, encode
from qwen3_tts_server.config import Settings
from qwen3_tts_server.db.models import AudioBlob, Batch, Generation, Voice
from qwen3_tts_server.db.session import transaction
from qwen3_tts_server.engine.base import EngineError, SynthItem
from qwen3_tts_server.engine.textsplit import split_text
from qwen3_tts_server.errors import BadRequest, NotFound
from qwen3_tts_server.services import billing
from qwen3_tts_server.services.languages import normalize_language
from qwen3_tts_server.services.media import MediaLibrary
from qwen3_tts_server.services.runtime import ModelRuntime
from qwen3_tts_server.services.voices import VoiceService
from qwen3_tts_server.values import Audio, Sampling

#: Silence between the sentences of one long text, so joined chunks do not run together.
SENTENCE_PAUSE_S = 0.12
#: Status of a streamed generation's row while its audio is still being sent.
STREAMING = "streaming"


@dataclass(frozen=True)
class SpeechRequest:
    """What /tts and /batchtts share, already type-checked by the schema."""

    voice_id: int
    language: str | None
    format: str
    store: bool
    sampling: Sampling


@dataclass(frozen=True)
class Speech:
    """One finished text: encoded bytes and what the response headers report."""

    generation_id: int
    tokens_used: int
    latency_ms: int
    data: bytes
    media_type: str
    extension: str
    duration_s: float
    sample_rate: int


@dataclass(frozen=True)
class BatchSpeech:
    batch_id: int
    tokens_used: int
    discount_used: float
    latency_ms_total: int
    audio_seconds: float
    archive: bytes
    manifest: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredAudio:
    generation_id: int
    data: bytes
    media_type: str
    extension: str


def _format(name: str) -> str:
    fmt = name.strip().lower()
    if fmt not in FORMATS:
        raise BadRequest(f"Unsupported format {name!r}; use one of: {', '.join(FORMATS)}")
    return fmt


def _error_text(error: BaseException | str) -> str:
    """What a failed generation's row keeps of its error (bounded: messages can be long)."""
    return str(error)[:1000]


def _row(
    user_id: int,
    request: SpeechRequest,
    language: str,
    chars: int,
    *,
    batch_id: int | None = None,
    status: str = "ok",
    error: str | None = None,
) -> Generation:
    """A generation row with what is known before synthesis; nothing charged yet."""
    return Generation(
        user_id=user_id,
        voice_id=request.voice_id,
        batch_id=batch_id,
        format=request.format,
        language=language,
        temperature=request.sampling.temperature,
        chars=chars,
        tokens_used=0,
        store=request.store,
        status=status,
        error=error,
    )


def _batch_row(
    session: Session,
    user_id: int,
    request: SpeechRequest,
    language: str,
    item_count: int,
    chars: int,
    **outcome: Any,
) -> Batch:
    """A batch row, flushed so its id can go on its items; `outcome` is what the call charged
    (tokens_used, discount_used, latency_ms_total) or how it failed (status, error)."""
    batch = Batch(
        user_id=user_id,
        voice_id=request.voice_id,
        format=request.format,
        language=language,
        store=request.store,
        item_count=item_count,
        chars=chars,
        **outcome,
    )
    session.add(batch)
    session.flush()
    return batch


def _count_use(session: Session, voice_id: int) -> None:
    """One more use of the voice, as one atomic UPDATE (no lost counts between replicas).

    A voice deleted while its job ran still gets the use and the job still finishes: it was
    the caller's voice when the call was accepted, and the audio exists by now.
    """
    session.execute(update(Voice).where(Voice.id == voice_id).values(use_count=Voice.use_count + 1))


def join_sentences(parts: Sequence[Audio], *, continues: bool = False) -> Audio:
    """The sentences of one text as one audio, with a short pause between each two.

    `continues`: these sentences follow earlier ones of the same text (a stream sends a text in
    pieces), so the pause also comes first; the pieces, concatenated, are then exactly the
    audio that joining every sentence at once makes.
    """
    rate = parts[0].sample_rate
    pause = np.zeros(int(rate * SENTENCE_PAUSE_S), dtype=np.float32)
    pieces: list[np.ndarray] = []
    for index, part in enumerate(parts):
        if index or continues:
            pieces.append(pause)
        pieces.append(part.samples.astype(np.float32, copy=False))
    return Audio(np.concatenate(pieces), rate)


def _encode_all(chunked: Sequence[Sequence[Audio]], fmt: str) -> list[tuple[Audio, bytes]]:
    joined = [join_sentences(parts) for parts in chunked]
    return [(audio, encode(audio, fmt)) for audio in joined]


class SynthesisService:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        media: MediaLibrary,
        runtime: ModelRuntime,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._media = media
        self._runtime = runtime
        self._policy = billing.DiscountPolicy.from_settings(settings)

    # -- validation ----------------------------------------------------------------------------
    def _check_text(self, text: str, too_long: str) -> str:
        stripped = text.strip()
        if len(stripped) > self._settings.max_text_len:
            raise BadRequest(too_long.format(limit=self._settings.max_text_len))
        return stripped

    def check_single(self, text: str, request: SpeechRequest) -> tuple[str, SpeechRequest, str]:
        """/tts's checks that need no database, in its order (text, format, language).

        Returns the stripped text, the request with its format normalised, and the language.
        """
        if not text.strip():
            raise BadRequest("Text must not be empty")
        text = self._check_text(text, "Text too long (max {limit})")
        request = replace(request, format=_format(request.format))
        return text, request, normalize_language(request.language)

    def _voice(self, session: Session, user_id: int, voice_id: int) -> Voice:
        return VoiceService.owned(session, user_id, voice_id)

    # -- model ---------------------------------------------------------------------------------
    async def _speak(
        self, texts: Sequence[str], prompt: bytes, request: SpeechRequest, language: str
    ) -> tuple[list[list[Audio]], int]:
        """Every text, each split into sentences, in one scheduler job; (audio per text, ms)."""
        model = self._runtime.loaded()
        chunks = [split_text(text, self._settings.chunk_max_chars) for text in texts]
        items = [SynthItem(chunk, language, prompt) for parts in chunks for chunk in parts]
        started = time.perf_counter()
        audio = await model.scheduler.synthesize(items, request.sampling)
        latency_ms = max(1, round((time.perf_counter() - started) * 1000))
        per_text: list[list[Audio]] = []
        offset = 0
        for parts in chunks:
            per_text.append(audio[offset : offset + len(parts)])
            offset += len(parts)
        return per_text, latency_ms

    def _record_failure(
        self,
        user_id: int,
        request: SpeechRequest,
        language: str,
        chars: int,
        error: Exception,
        batch_size: int | None,
    ) -> None:
        """Keep the failed attempt for the user's and operator's history; it costs nothing."""
        with transaction(self._sessions) as session:
            batch_id = None
            if batch_size is not None:
                batch = _batch_row(
                    session,
                    user_id,
                    request,
                    language,
                    batch_size,
                    chars,
                    tokens_used=0,
                    discount_used=0.0,
                    status="error",
                    error=_error_text(error),
                )
                batch_id = batch.id
            session.add(
                _row(
                    user_id,
                    request,
                    language,
                    chars,
                    batch_id=batch_id,
                    status="error",
                    error=_error_text(error),
                )
            )

    def prepare(self, user_id: int, request: SpeechRequest, tokens: int) -> bytes:
        """Checks that need the database: voice ownership and quota. Returns the voice prompt."""
        with self._sessions() as session:
            voice = self._voice(session, user_id, request.voice_id)
            billing.check_quota(session, user_id, tokens)
            return voice.prompt

    # -- /tts ----------------------------------------------------------------------------------
    async def tts(self, user_id: int, text: str, request: SpeechRequest) -> Speech:
        text, request, language = self.check_single(text, request)
        prompt = await run_in_threadpool(self.prepare, user_id, request, len(text))
        try:
            [parts], latency_ms = await self._speak([text], prompt, request, language)
        except EngineError as error:
            await run_in_threadpool(
                self._record_failure, user_id, request, language, len(text), error, None
            )
            raise
        [(audio, data)] = await run_in_threadpool(_encode_all, [parts], request.format)
        generation_id = await run_in_threadpool(
            self._record_tts, user_id, request, language, text, audio, data, latency_ms
        )
        spec = FORMATS[request.format]
        return Speech(
            generation_id=generation_id,
            tokens_used=len(text),
            latency_ms=latency_ms,
            data=data,
            media_type=spec.media_type,
            extension=spec.extension,
            duration_s=audio.duration_s,
            sample_rate=audio.sample_rate,
        )

    def _record_tts(
        self,
        user_id: int,
        request: SpeechRequest,
        language: str,
        text: str,
        audio: Audio,
        data: bytes,
        latency_ms: int,
    ) -> int:
        with transaction(self._sessions) as session:
            generation = _row(user_id, request, language, len(text))
            self._settle_single(session, generation, request, text, audio, data, latency_ms)
        return generation.id

    # -- streamed /tts: a row made before the audio, settled when the stream ends --------------
    def open_generation(
        self, user_id: int, request: SpeechRequest, language: str, chars: int
    ) -> int:
        """A row for a streamed text, made first so the response headers can name it.

        Its status is "streaming" (never counted or charged) until `finish_generation` or
        `abandon_generation` settles it.
        """
        with transaction(self._sessions) as session:
            generation = _row(user_id, request, language, chars, status=STREAMING)
            session.add(generation)
            session.flush()
            return generation.id

    def finish_generation(
        self,
        generation_id: int,
        request: SpeechRequest,
        text: str,
        audio: Audio,
        data: bytes,
        latency_ms: int,
    ) -> None:
        """The stream delivered all its audio: settle its row exactly as /tts records a call."""
        with transaction(self._sessions) as session:
            generation = session.get_one(Generation, generation_id)
            self._settle_single(session, generation, request, text, audio, data, latency_ms)

    def abandon_generation(self, generation_id: int, status: str, error: str) -> None:
        """The stream ended early (`status` "error" or "cancelled"): kept, with no charge."""
        with transaction(self._sessions) as session:
            generation = session.get_one(Generation, generation_id)
            generation.status = status
            generation.error = _error_text(error)

    def _settle_single(
        self,
        session: Session,
        generation: Generation,
        request: SpeechRequest,
        text: str,
        audio: Audio,
        data: bytes,
        latency_ms: int,
    ) -> None:
        """A single text succeeded: charge it, count a use of its voice, and fold its latency
        into the single-request baseline the batch discount is calibrated against."""
        self._fill(session, generation, text, audio, data, len(text), latency_ms)
        _count_use(session, request.voice_id)
        billing.observe_single(session, self._policy, latency_ms, len(text))

    def _generation(
        self,
        session: Session,
        user_id: int,
        request: SpeechRequest,
        language: str,
        text: str,
        audio: Audio,
        data: bytes,
        tokens: int,
        latency_ms: int,
        batch_id: int | None = None,
    ) -> Generation:
        generation = _row(user_id, request, language, len(text), batch_id=batch_id)
        self._fill(session, generation, text, audio, data, tokens, latency_ms)
        return generation

    def _fill(
        self,
        session: Session,
        generation: Generation,
        text: str,
        audio: Audio,
        data: bytes,
        tokens: int,
        latency_ms: int,
    ) -> None:
        """Mark a generation done with what it cost and made; keep text and audio if stored."""
        generation.tokens_used = tokens
        generation.latency_ms = latency_ms
        generation.audio_seconds = audio.duration_s
        generation.status = "ok"
        if generation.store:
            generation.input_text = text
            generation.audio_sha256 = self._media.add(
                session, data, FORMATS[generation.format].media_type, audio.duration_s
            )
        session.add(generation)
        session.flush()

    # -- /batchtts -----------------------------------------------------------------------------
    async def batch(
        self, user_id: int, texts: Sequence[str], request: SpeechRequest
    ) -> BatchSpeech:
        settings = self._settings
        if len(texts) < settings.min_batch_size:
            raise BadRequest(f"Batch too small (min {settings.min_batch_size})")
        if len(texts) > settings.max_batch_size:
            raise BadRequest(f"Batch too large (max {settings.max_batch_size})")
        if any(not text.strip() for text in texts):
            raise BadRequest("All texts must be non-empty")
        cleaned = [self._check_text(text, "Each text must be <= {limit} chars") for text in texts]
        fmt = _format(request.format)
        language = normalize_language(request.language)
        request = replace(request, format=fmt)
        chars = sum(len(text) for text in cleaned)
        with self._sessions() as session:
            discount = billing.current_discount(session, self._policy)
        prompt = await run_in_threadpool(
            self.prepare, user_id, request, billing.batch_tokens(chars, discount)
        )
        try:
            chunked, latency_ms = await self._speak(cleaned, prompt, request, language)
        except EngineError as error:
            await run_in_threadpool(
                self._record_failure, user_id, request, language, chars, error, len(cleaned)
            )
            raise
        encoded = await run_in_threadpool(_encode_all, chunked, fmt)
        return await run_in_threadpool(
            self._record_batch, user_id, request, language, cleaned, encoded, discount, latency_ms
        )

    def _record_batch(
        self,
        user_id: int,
        request: SpeechRequest,
        language: str,
        texts: Sequence[str],
        encoded: Sequence[tuple[Audio, bytes]],
        discount: float,
        latency_ms: int,
    ) -> BatchSpeech:
        chars = sum(len(text) for text in texts)
        tokens = billing.batch_tokens(chars, discount)
        extension = FORMATS[request.format].extension
        with transaction(self._sessions) as session:
            batch = _batch_row(
                session,
                user_id,
                request,
                language,
                len(texts),
                chars,
                tokens_used=tokens,
                discount_used=discount,
                latency_ms_total=latency_ms,
            )
            items = []
            for index, (text, (audio, data)) in enumerate(zip(texts, encoded, strict=True)):
                generation = self._generation(
                    session,
                    user_id,
                    request,
                    language,
                    text,
                    audio,
                    data,
                    billing.batch_tokens(len(text), discount),
                    latency_ms,
                    batch_id=batch.id,
                )
                items.append(
                    {
                        "index": index,
                        "filename": f"{index}.{extension}",  # as in the ZIP below
                        "generation_id": generation.id,
                        "chars": len(text),
                        "tokens": generation.tokens_used,
                        "duration_s": round(audio.duration_s, 3),
                    }
                )
            _count_use(session, request.voice_id)
            billing.observe_batch(session, self._policy, latency_ms, chars)
            batch_id = batch.id
        manifest = {
            "batch_id": batch_id,
            "generation_ids": [item["generation_id"] for item in items],
            "format": request.format,
            "language": language,
            "tokens_used": tokens,
            "batch_discount_used": discount,
            "latency_ms_total": latency_ms,
            "store": request.store,
            "items": items,
        }
        filenames = [f"{index}.{extension}" for index in range(len(encoded))]
        archive = build_zip(
            [(name, data) for name, (_, data) in zip(filenames, encoded, strict=True)], manifest
        )
        audio_seconds = sum(audio.duration_s for audio, _ in encoded)
        return BatchSpeech(batch_id, tokens, discount, latency_ms, audio_seconds, archive, manifest)

    # -- /getstored ----------------------------------------------------------------------------
    def stored(self, user_id: int, generation_id: int) -> StoredAudio:
        with self._sessions() as session:
            generation = session.get(Generation, generation_id)
            blob = (
                session.get(AudioBlob, generation.audio_sha256)
                if generation is not None
                and generation.user_id == user_id
                and generation.audio_sha256
                else None
            )
            if generation is None or blob is None or not self._media.blobs.exists(blob.sha256):
                raise NotFound("Stored generation not found")
            spec = FORMATS[generation.format]
            return StoredAudio(
                generation.id, self._media.read(blob.sha256), spec.media_type, spec.extension
            )
