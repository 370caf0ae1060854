"""Text to audio for /tts and /batchtts: validate, run the model, encode, record, charge.

Long texts are split into sentences and sent as one multi-item job, so the scheduler can batch
them with each other and with other requests, then joined with a short pause. Nothing is kept
for `store=false` but the usage row; a failed call is recorded with its error and costs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from qwen3_tts_server.audio.archive import build_zip
from qwen3_tts_server.audio.encode import FORMATS, encode
from qwen3_tts_server.config import Settings
from qwen3_tts_server.db.models import AudioBlob, Batch, Generation, Voice
from qwen3_tts_server.db.session import transaction
from qwen3_tts_server.engine.base import Audio, EngineError, Sampling, SynthItem
from qwen3_tts_server.engine.textsplit import split_text
from qwen3_tts_server.errors import BadRequest, NotFound
from qwen3_tts_server.services import billing
from qwen3_tts_server.services.languages import normalize_language
from qwen3_tts_server.services.media import MediaLibrary
from qwen3_tts_server.services.runtime import ModelRuntime
from qwen3_tts_server.services.voices import VoiceService

#: Silence between the sentences of one long text, so joined chunks do not run together.
SENTENCE_PAUSE_S = 0.12


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


def _join(parts: Sequence[Audio]) -> Audio:
    rate = parts[0].sample_rate
    pause = np.zeros(int(rate * SENTENCE_PAUSE_S), dtype=np.float32)
    pieces: list[np.ndarray] = []
    for index, part in enumerate(parts):
        if index:
            pieces.append(pause)
        pieces.append(part.samples.astype(np.float32, copy=False))
    return Audio(np.concatenate(pieces), rate)


def _encode_all(chunked: Sequence[Sequence[Audio]], fmt: str) -> list[tuple[Audio, bytes]]:
    joined = [_join(parts) for parts in chunked]
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
        voice_id: int,
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
                batch = Batch(
                    user_id=user_id,
                    voice_id=voice_id,
                    format=request.format,
                    language=language,
                    store=request.store,
                    item_count=batch_size,
                    chars=chars,
                    tokens_used=0,
                    discount_used=0.0,
                    status="error",
                    error=str(error)[:1000],
                )
                session.add(batch)
                session.flush()
                batch_id = batch.id
            session.add(
                Generation(
                    user_id=user_id,
                    voice_id=voice_id,
                    batch_id=batch_id,
                    format=request.format,
                    language=language,
                    temperature=request.sampling.temperature,
                    chars=chars,
                    tokens_used=0,
                    store=request.store,
                    status="error",
                    error=str(error)[:1000],
                )
            )

    def _prepare(self, user_id: int, request: SpeechRequest, tokens: int) -> bytes:
        """Checks that need the database: voice ownership and quota. Returns the voice prompt."""
        with self._sessions() as session:
            voice = self._voice(session, user_id, request.voice_id)
            billing.check_quota(session, user_id, tokens)
            return voice.prompt

    # -- /tts ----------------------------------------------------------------------------------
    async def tts(self, user_id: int, text: str, request: SpeechRequest) -> Speech:
        if not text.strip():
            raise BadRequest("Text must not be empty")
        text = self._check_text(text, "Text too long (max {limit})")
        fmt = _format(request.format)
        language = normalize_language(request.language)
        request = replace(request, format=fmt)
        prompt = await run_in_threadpool(self._prepare, user_id, request, len(text))
        try:
            [parts], latency_ms = await self._speak([text], prompt, request, language)
        except EngineError as error:
            await run_in_threadpool(
                self._record_failure,
                user_id,
                request.voice_id,
                request,
                language,
                len(text),
                error,
                None,
            )
            raise
        [(audio, data)] = await run_in_threadpool(_encode_all, [parts], fmt)
        generation_id = await run_in_threadpool(
            self._record_tts, user_id, request, language, text, audio, data, latency_ms
        )
        spec = FORMATS[fmt]
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
            generation = self._generation(
                session, user_id, request, language, text, audio, data, len(text), latency_ms
            )
            self._voice(session, user_id, request.voice_id).use_count += 1
            billing.observe_single(session, self._policy, latency_ms, len(text))
        if generation.audio_sha256:
            self._media.restore(data, generation.audio_sha256)
        return generation.id

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
        generation = Generation(
            user_id=user_id,
            voice_id=request.voice_id,
            batch_id=batch_id,
            format=request.format,
            language=language,
            temperature=request.sampling.temperature,
            chars=len(text),
            tokens_used=tokens,
            latency_ms=latency_ms,
            audio_seconds=audio.duration_s,
            store=request.store,
            status="ok",
        )
        if request.store:
            generation.input_text = text
            generation.audio_sha256 = self._media.add(
                session, data, FORMATS[request.format].media_type, audio.duration_s
            )
        session.add(generation)
        session.flush()
        return generation

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
            self._prepare, user_id, request, billing.batch_tokens(chars, discount)
        )
        try:
            chunked, latency_ms = await self._speak(cleaned, prompt, request, language)
        except EngineError as error:
            await run_in_threadpool(
                self._record_failure,
                user_id,
                request.voice_id,
                request,
                language,
                chars,
                error,
                len(cleaned),
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
            batch = Batch(
                user_id=user_id,
                voice_id=request.voice_id,
                format=request.format,
                language=language,
                store=request.store,
                item_count=len(texts),
                chars=chars,
                tokens_used=tokens,
                discount_used=discount,
                latency_ms_total=latency_ms,
                status="ok",
            )
            session.add(batch)
            session.flush()
            items = []
            generations = []
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
                generations.append(generation)
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
            self._voice(session, user_id, request.voice_id).use_count += 1
            billing.observe_batch(session, self._policy, latency_ms, chars)
            batch_id = batch.id
        for generation, (_, data) in zip(generations, encoded, strict=True):
            if generation.audio_sha256:
                self._media.restore(data, generation.audio_sha256)
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
