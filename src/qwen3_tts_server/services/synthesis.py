"""Text to audio for /tts and /batchtts: check, run the model, encode, record through the ledger.

Long texts are split into sentences and sent as one job of sentence chunks, which the scheduler
runs side by side in its slots, interleaved with other users' work, then joined with a short
pause. Each text records why its generation ended (`finish_reason`: the least clean of its
chunks'). Nothing is kept for `store=false` but the usage row. A call reserves its tokens
before any work (`prepare`, services/quota.py); from then on, whatever raises (the model, a
runaway generation, the encoder, the database, memory) is recorded with its error and releases
the reservation, so a failed call costs nothing. Streamed /tts (services/streaming.py) uses the
same checks, `prepare` and ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from qwen3_tts_server.aligner import captions
from qwen3_tts_server.aligner.words import words_from_json
from qwen3_tts_server.aligner.worker import AlignerWorker
from qwen3_tts_server.audio.archive import build_zip
from qwen3_tts_server.audio.encode import FORMATS
from qwen3_tts_server.db.models import AudioBlob, Generation
from qwen3_tts_server.engine.text.textsplit import split_text
from qwen3_tts_server.errors import NotFound
from qwen3_tts_server.services import billing
from qwen3_tts_server.services.generations import GenerationLedger, Order, Outcome, Spoken
from qwen3_tts_server.services.media import MediaLibrary
from qwen3_tts_server.services.quota import Amounts, Hold, Quotas
from qwen3_tts_server.services.runtime import ModelRuntime, Timing, worst_reason
from qwen3_tts_server.services.speakers import SpeakerService
from qwen3_tts_server.services.speech import SpeechChecks, SpeechRequest, encode_texts
from qwen3_tts_server.services.threads import in_thread
from qwen3_tts_server.services.timestamps import AlignerRuntime, passages, place_text
from qwen3_tts_server.services.voices import VoiceService
from qwen3_tts_server.services.voicing import Voicing, stored_voice
from qwen3_tts_server.values import Audio, FinishReason, GenerationStatus, Sampling, Word


@dataclass(frozen=True)
class Speech:
    """One finished text: encoded bytes and what the response headers report."""

    generation_id: int
    tokens_used: int
    timing: Timing
    data: bytes
    media_type: str
    extension: str
    duration_s: float
    sample_rate: int
    finish_reason: FinishReason
    #: With timestamps: the text's words in this audio, and the aligner's time.
    words: tuple[Word, ...] | None = None
    align_ms: int = 0


@dataclass(frozen=True)
class BatchSpeech:
    batch_id: int
    tokens_used: int
    discount_used: float
    timing: Timing
    audio_seconds: float
    archive: bytes
    sample_rate: int  # of every file in the ZIP (a `pcm` file cannot say it itself)
    manifest: dict[str, Any] = field(default_factory=dict)
    align_ms: int = 0


@dataclass(frozen=True)
class StoredAudio:
    generation_id: int
    data: bytes
    media_type: str
    extension: str


@dataclass(frozen=True)
class StoredCaptions:
    """Captions of a stored generation made with timestamps, in the format asked."""

    generation_id: int
    text: str
    media_type: str
    extension: str


class SynthesisService:
    def __init__(
        self,
        checks: SpeechChecks,
        sessions: sessionmaker[Session],
        media: MediaLibrary,
        runtime: ModelRuntime,
        ledger: GenerationLedger,
        quotas: Quotas,
        policy: billing.DiscountPolicy,
        chunk_max_chars: int,
        speakers: SpeakerService,
        aligner: AlignerRuntime,
    ) -> None:
        self.checks = checks
        self.aligner = aligner
        self._sessions = sessions
        self._media = media
        self._runtime = runtime
        self._ledger = ledger
        self._quotas = quotas
        self._policy = policy
        self._chunk_max_chars = chunk_max_chars
        self._speakers = speakers

    def voicing(self, order: Order) -> Voicing:
        """How the order's voice speaks (services/voicing.py): the caller's own voice (404
        otherwise) or a preset speaker the model has (400, 503), with instructions only where
        they can be followed (400)."""
        if order.speaker is not None:
            return self._speakers.preset(order.speaker, order.instruct)
        assert order.voice_id is not None  # SpeechChecks: a voice or a speaker
        with self._sessions() as session:
            voice = VoiceService.owned(session, order.user_id, order.voice_id)
            info = self._runtime.loaded().info if order.instruct else None
            return stored_voice(
                voice.name, voice.kind, voice.prompt, voice.description, order.instruct, info
            )

    def prepare(self, order: Order, purpose: str, tokens: int) -> tuple[Hold, Voicing]:
        """What needs the database before any work: the voice (`voicing`), then the
        reservation of `tokens` (402). Returns the hold and the voicing."""
        voicing = self.voicing(order)
        return self._quotas.reserve(order.user_id, purpose, Amounts(tokens=tokens)), voicing

    def sentences(self, text: str) -> list[str]:
        """How a text is cut for the model (CHUNK_MAX_CHARS), for every path alike."""
        return split_text(text, self._chunk_max_chars)

    async def _speak(
        self, order: Order, voicing: Voicing, sampling: Sampling
    ) -> tuple[list[list[str]], list[list[Audio]], list[FinishReason], Timing]:
        """Every text of the order, each split into sentences, in one scheduler job: the
        sentences, their audio and one finish reason per text."""
        chunks = [self.sentences(text) for text in order.texts]
        items = [voicing.item(chunk, order.language) for parts in chunks for chunk in parts]
        result = await self._runtime.loaded().speak(items, sampling, order.user_id)
        per_text: list[list[Audio]] = []
        reasons: list[FinishReason] = []
        offset = 0
        for parts in chunks:
            per_text.append(result.audio[offset : offset + len(parts)])
            reasons.append(worst_reason(result.finish_reasons[offset : offset + len(parts)]))
            offset += len(parts)
        return chunks, per_text, reasons, result.timing

    async def _words(
        self,
        worker: AlignerWorker | None,
        order: Order,
        chunks: Sequence[Sequence[str]],
        per_text: Sequence[Sequence[Audio]],
        encoded: Sequence[tuple[Audio, bytes]],
    ) -> tuple[list[tuple[Word, ...] | None], int]:
        """Each text's words in its encoded audio (None for all without a worker: no
        timestamps asked), in one aligner call; and the aligner's time in ms."""
        if worker is None:
            return [None] * len(per_text), 0
        asked = [
            passage
            for texts, parts in zip(chunks, per_text, strict=True)
            for passage in passages(texts, parts, order.language)
        ]
        aligned = await worker.align(asked)
        words: list[tuple[Word, ...] | None] = []
        offset = 0
        for parts, (audio, _) in zip(per_text, encoded, strict=True):
            per_chunk = aligned.words[offset : offset + len(parts)]
            words.append(tuple(place_text(per_chunk, parts, order.speed, audio.duration_s)))
            offset += len(parts)
        return words, round(aligned.seconds * 1000)

    # -- /tts ----------------------------------------------------------------------------------
    async def tts(
        self, user_id: int, text: str, request: SpeechRequest, timestamps: bool = False
    ) -> Speech:
        """One text's audio; with `timestamps`, its words too (503 at once without an
        aligner: nothing reserved). An aligner failure fails the call, uncharged."""
        order, sampling = self.checks.single(user_id, text, request)
        worker = self.aligner.worker() if timestamps else None
        [text] = order.texts
        hold, voicing = await in_thread(self.prepare, order, "tts", len(text))
        try:
            chunks, per_text, [reason], timing = await self._speak(order, voicing, sampling)
            encoded = await in_thread(encode_texts, per_text, order.format, order.speed)
            [(audio, data)] = encoded
            [words], align_ms = await self._words(worker, order, chunks, per_text, encoded)
            outcome = Outcome.ok([Spoken(data, audio.duration_s, reason, words)], timing)
            receipt = await in_thread(self._ledger.settle, order, outcome, hold)
        except BaseException as error:
            await self._ledger.settle_failure(order, hold, error)
            raise
        return Speech(
            generation_id=receipt.generation_ids[0],
            tokens_used=receipt.tokens_used,
            timing=timing,
            data=data,
            media_type=order.media_type,
            extension=FORMATS[order.format].extension,
            duration_s=audio.duration_s,
            sample_rate=audio.sample_rate,
            finish_reason=reason,
            words=words,
            align_ms=align_ms,
        )

    # -- /batchtts -----------------------------------------------------------------------------
    async def batch(
        self,
        user_id: int,
        texts: Sequence[str],
        request: SpeechRequest,
        timestamps: bool = False,
    ) -> BatchSpeech:
        """A ZIP of every text's audio; with `timestamps`, a .vtt per item and each item's
        words in the manifest (the /tts/timestamps rules)."""
        order, sampling = self.checks.batch(user_id, texts, request)
        worker = self.aligner.worker() if timestamps else None
        chars = sum(len(text) for text in order.texts)
        discount = await in_thread(self._discount)
        price = billing.batch_tokens(chars, discount)
        hold, voicing = await in_thread(self.prepare, order, "batch", price)
        try:
            chunks, per_text, reasons, timing = await self._speak(order, voicing, sampling)
            encoded = await in_thread(encode_texts, per_text, order.format, order.speed)
            words, align_ms = await self._words(worker, order, chunks, per_text, encoded)
            spoken = [
                Spoken(data, audio.duration_s, reason, item_words)
                for (audio, data), reason, item_words in zip(encoded, reasons, words, strict=True)
            ]
            outcome = Outcome.ok(spoken, timing)
            receipt = await in_thread(self._ledger.settle_batch, order, outcome, discount, hold)
        except BaseException as error:
            await self._ledger.settle_failure(order, hold, error, batch=True)
            raise
        assert receipt.batch_id is not None
        extension = FORMATS[order.format].extension
        # The rate written, which a codec that refuses the model's rate changes (see encode).
        sample_rate = FORMATS[order.format].rate_for(encoded[0][0].sample_rate)
        filenames = [f"{index}.{extension}" for index in range(len(encoded))]
        manifest = {
            "batch_id": receipt.batch_id,
            "generation_ids": list(receipt.generation_ids),
            "format": order.format,
            "sample_rate": sample_rate,
            "language": order.language,
            "tokens_used": receipt.tokens_used,
            "batch_discount_used": discount,
            "latency_ms_total": timing.model_ms,
            "store": order.store,
            "items": [
                {
                    "index": index,
                    "filename": filenames[index],
                    "generation_id": receipt.generation_ids[index],
                    "chars": len(order.texts[index]),
                    "tokens": receipt.tokens[index],
                    "duration_s": round(audio.duration_s, 3),
                    "finish_reason": str(reasons[index]),
                }
                | _timed_item(words[index], index)
                for index, (audio, _) in enumerate(encoded)
            ],
        }
        files = [(name, data) for name, (_, data) in zip(filenames, encoded, strict=True)]
        files += [
            (f"{index}.vtt", captions.to_vtt(item_words).encode())
            for index, item_words in enumerate(words)
            if item_words is not None
        ]
        archive = build_zip(files, manifest)
        audio_seconds = sum(audio.duration_s for audio, _ in encoded)
        return BatchSpeech(
            receipt.batch_id,
            receipt.tokens_used,
            discount,
            timing,
            audio_seconds,
            archive,
            sample_rate,
            manifest,
            align_ms,
        )

    def _discount(self) -> float:
        with self._sessions() as session:
            return billing.current_discount(session, self._policy)

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

    def stored_captions(self, user_id: int, generation_id: int, fmt: str) -> StoredCaptions:
        """Captions of the caller's stored generation in `fmt` (vtt, srt or json; 404 when
        there is none, or when it was made without timestamps)."""
        with self._sessions() as session:
            generation = session.get(Generation, generation_id)
            if (
                generation is None
                or generation.user_id != user_id
                or generation.status is not GenerationStatus.OK
                or not generation.store
            ):
                raise NotFound("Stored generation not found")
            if generation.words is None:
                raise NotFound(
                    "This generation was made without timestamps: make it with POST "
                    "/tts/timestamps (or /batchtts with timestamps: true) and store: true"
                )
            words = words_from_json(generation.words)
        media_type, extension = captions.CAPTION_FORMATS[fmt]
        text = captions.render(fmt, words, generation_id)
        return StoredCaptions(generation_id, text, media_type, extension)


def _timed_item(words: tuple[Word, ...] | None, index: int) -> dict[str, Any]:
    """What a batch item's manifest entry adds with timestamps: its words and caption file."""
    if words is None:
        return {}
    return {"words": [word.as_dict() for word in words], "captions": f"{index}.vtt"}
