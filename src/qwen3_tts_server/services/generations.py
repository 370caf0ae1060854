"""The generation ledger: the one owner of `generations` and `batches` rows.

Every synthesis path (/tts, a stream, /batchtts) records what it asked for (`Order`) and how
it ended (`Outcome`) here, and nowhere else; what a success charges, stores and calibrates is
decided in one place, so the paths cannot drift apart. A row is either made and settled at once
(`settle`, `settle_batch`) or opened first (`open`, status STREAMING, for a stream whose id
must be in the response headers) and settled when the stream ends. OK rows are charged, and a
stream the client left is charged for what it was sent (`Outcome.cancelled(..., tokens)`);
failed rows are kept, free, with their error, for the user's and operator's history. The
call's reservation (services/quota.py) is settled in the same transaction as its rows, so the
running totals and the rows never disagree. Statuses are `values.GenerationStatus`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import anyio
from sqlalchemy import ColumnElement, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from qwen3_tts_server.aligner.words import words_to_json
from qwen3_tts_server.db.models import Batch, Generation, Voice
from qwen3_tts_server.db.session import transaction
from qwen3_tts_server.services import billing, quota
from qwen3_tts_server.services.deferred import DeferredSettlements
from qwen3_tts_server.services.media import MediaLibrary
from qwen3_tts_server.services.playback import StreamQuality
from qwen3_tts_server.services.quota import Amounts, Hold
from qwen3_tts_server.services.runtime import Timing
from qwen3_tts_server.services.threads import in_thread
from qwen3_tts_server.values import FinishReason, GenerationStatus, Word

log = logging.getLogger(__name__)

#: What a failed row keeps of its error (messages can be long).
MAX_ERROR_CHARS = 1000


@dataclass(frozen=True)
class Order:
    """What a call asked for, known before the model runs (one text, or a batch's texts)."""

    user_id: int
    voice_id: int | None  # None: a preset speaker
    format: str
    media_type: str
    language: str
    temperature: float
    store: bool
    texts: tuple[str, ...]
    speaker: str | None = None
    instruct: str = ""
    speed: float = 1.0


@dataclass(frozen=True)
class Spoken:
    """One text's finished audio, as encoded for the client."""

    data: bytes
    audio_seconds: float
    finish_reason: FinishReason | None = None
    #: The text's words in this audio, when timestamps were asked (kept when stored).
    words: tuple[Word, ...] | None = None


def describe(error: BaseException | str) -> str:
    """What a failed row says of its error: the message, never SQL or parameters (a database
    error's text would repeat the statement, and with it a stored text)."""
    if isinstance(error, str):
        return error[:MAX_ERROR_CHARS]
    if isinstance(error, DBAPIError):
        text = f"database error: {error.orig}"
    elif isinstance(error, MemoryError):
        text = f"out of memory {error}".strip()
    else:
        text = str(error) or type(error).__name__
    return text[:MAX_ERROR_CHARS]


@dataclass(frozen=True)
class Outcome:
    """How a call ended. Build with `ok`, `failed` or `cancelled`.

    `tokens` and `audio_seconds` are those of a cancelled stream's delivered part (the
    stream-billing rule, services/streaming.py); an OK outcome's come from its items.
    """

    status: GenerationStatus
    items: tuple[Spoken, ...] = ()
    timing: Timing | None = None
    error: str | None = None
    tokens: int = 0
    audio_seconds: float = 0.0
    #: A stream's playback figures (services/playback.py), recorded on its row.
    playback: StreamQuality | None = None

    @classmethod
    def ok(cls, items: Sequence[Spoken], timing: Timing) -> Outcome:
        return cls(GenerationStatus.OK, tuple(items), timing)

    @classmethod
    def failed(cls, error: BaseException | str) -> Outcome:
        return cls(GenerationStatus.ERROR, error=describe(error))

    @classmethod
    def cancelled(cls, reason: str, tokens: int = 0, audio_seconds: float = 0.0) -> Outcome:
        return cls(
            GenerationStatus.CANCELLED,
            error=describe(reason),
            tokens=tokens,
            audio_seconds=audio_seconds,
        )


@dataclass(frozen=True)
class Receipt:
    """What was recorded: the row ids and what each generation was charged."""

    generation_ids: tuple[int, ...]
    tokens: tuple[int, ...]
    batch_id: int | None = None

    @property
    def tokens_used(self) -> int:
        return sum(self.tokens)


class GenerationLedger:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        media: MediaLibrary,
        policy: billing.DiscountPolicy,
        instance_id: str | None = None,
        deferred: DeferredSettlements | None = None,
    ) -> None:
        """`instance_id`: this process's lease, named on every row it opens; `deferred`:
        where a failure that cannot be recorded now waits to be retried."""
        self._sessions = sessions
        self._media = media
        self._policy = policy
        self._instance_id = instance_id
        self._deferred = DeferredSettlements() if deferred is None else deferred

    def open(self, order: Order) -> int:
        """A STREAMING row for one text, so the response headers can name it before its audio
        exists; never counted or charged until `settle` turns it OK."""
        with transaction(self._sessions) as session:
            generation = _new_row(order)
            generation.status = GenerationStatus.STREAMING
            generation.instance_id = self._instance_id
            session.add(generation)
            session.flush()
            return generation.id

    def settle(
        self, order: Order, outcome: Outcome, hold: Hold, generation_id: int | None = None
    ) -> Receipt:
        """Record one text's outcome: on the row `open` made, else on a new one.

        OK charges len(text), counts a use of the voice, keeps text and audio when stored and
        folds the model time into the single-request baseline the batch discount is measured
        against. A cancelled stream is charged what it was sent; anything else is kept with its
        error and charges nothing. The hold is settled with the charge, in the same commit.
        """
        with transaction(self._sessions) as session:
            if generation_id is None:
                generation = _new_row(order)
                session.add(generation)
            else:
                generation = session.get_one(Generation, generation_id)
            [text] = order.texts
            if outcome.status is GenerationStatus.OK:
                assert outcome.timing is not None
                [spoken] = outcome.items
                self._fill(session, generation, order, text, spoken, len(text), outcome.timing)
                self._count_use(session, order)
                billing.observe_single(session, self._policy, outcome.timing.model_ms, len(text))
            else:
                generation.status, generation.error = outcome.status, outcome.error
                generation.tokens_used = outcome.tokens
                generation.audio_seconds = outcome.audio_seconds
            if outcome.playback is not None:
                generation.first_audio_ms = outcome.playback.first_audio_ms
                generation.underrun_ms = outcome.playback.largest_underrun_ms
                generation.safe_start_ms = outcome.playback.safe_start_ms
            session.flush()
            quota.settle(session, hold, Amounts(tokens=generation.tokens_used))
        return Receipt((generation.id,), (generation.tokens_used,))

    def settle_batch(self, order: Order, outcome: Outcome, discount: float, hold: Hold) -> Receipt:
        """Record a batch: its row and one generation per text on success, each charged its
        share of floor(C · D) (`billing.item_tokens`); on failure the batch row and one failed
        generation, free. A success then moves D by the batch's model time."""
        chars = [len(text) for text in order.texts]
        ok = outcome.status is GenerationStatus.OK
        tokens = billing.item_tokens(chars, discount) if ok else [0] * len(chars)
        with transaction(self._sessions) as session:
            batch = Batch(
                user_id=order.user_id,
                voice_id=order.voice_id,
                format=order.format,
                language=order.language,
                store=order.store,
                item_count=len(chars),
                chars=sum(chars),
                tokens_used=sum(tokens),
                discount_used=discount if ok else 0.0,
                latency_ms_total=outcome.timing.model_ms if outcome.timing else 0,
                status=outcome.status,
                error=outcome.error,
            )
            session.add(batch)
            session.flush()
            if not ok:
                failed = _new_row(order, batch_id=batch.id)
                failed.status, failed.error = outcome.status, outcome.error
                session.add(failed)
                session.flush()
                quota.settle(session, hold, quota.NOTHING)
                return Receipt((failed.id,), (0,), batch.id)
            assert outcome.timing is not None
            generations = []
            for text, spoken, charge in zip(order.texts, outcome.items, tokens, strict=True):
                generation = _new_row(order, len(text), batch.id)
                self._fill(session, generation, order, text, spoken, charge, outcome.timing)
                generations.append(generation)
            self._count_use(session, order)
            billing.observe_batch(session, self._policy, outcome.timing.model_ms, sum(chars))
            quota.settle(session, hold, Amounts(tokens=sum(tokens)))
        return Receipt(tuple(g.id for g in generations), tuple(tokens), batch.id)

    def interrupt_owned(self, instance_ids: list[str]) -> int:
        """Settle the STREAMING rows of these (dead) instances as INTERRUPTED, free: what a
        crashed process had sent is not known to anyone else. Returns how many rows changed."""
        if not instance_ids:
            return 0
        return self._interrupt(Generation.instance_id.in_(instance_ids))

    def interrupt_open(self, older_than: datetime) -> int:
        """Settle STREAMING rows without an owner (opened before leases existed) and older
        than `older_than` as INTERRUPTED (free). Returns how many rows changed."""
        return self._interrupt(Generation.instance_id.is_(None), Generation.created_at < older_than)

    def _interrupt(self, *conditions: ColumnElement[bool]) -> int:
        with transaction(self._sessions) as session:
            result = session.execute(
                update(Generation)
                .where(Generation.status == GenerationStatus.STREAMING, *conditions)
                .values(
                    status=GenerationStatus.INTERRUPTED,
                    error="the server stopped before the stream ended",
                )
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    async def settle_failure(
        self,
        order: Order,
        hold: Hold,
        error: BaseException,
        *,
        batch: bool = False,
        generation_id: int | None = None,
    ) -> None:
        """Record a call that ended by an exception after its reservation, whatever raised (the
        model, the encoder, the database, memory, a cancellation), and release its hold.

        Shielded, because it runs while the request may itself be cancelled, and it never
        raises: the caller re-raises the original error. If even this cannot be written (the
        database is down), it is deferred: retried at every heartbeat until it is.
        """
        if isinstance(error, anyio.get_cancelled_exc_class()):
            outcome = Outcome.cancelled("cancelled before the audio was complete")
        else:
            outcome = Outcome.failed(error)
        if batch:
            record = partial(self.settle_batch, order, outcome, 0.0, hold)
        else:
            record = partial(self.settle, order, outcome, hold, generation_id)
        with anyio.CancelScope(shield=True):
            try:
                await in_thread(record)
            except Exception:
                log.exception(
                    "could not record a failed call of user %d now (reservation %d): retrying "
                    "at every heartbeat",
                    order.user_id,
                    hold.reservation_id,
                )
                self._deferred.add(f"the failed call of reservation {hold.reservation_id}", record)

    # -- helpers -------------------------------------------------------------------------------
    def _fill(
        self,
        session: Session,
        generation: Generation,
        order: Order,
        text: str,
        spoken: Spoken,
        tokens: int,
        timing: Timing,
    ) -> None:
        """Mark a generation OK with what it cost and made; keep text and audio if stored."""
        generation.status = GenerationStatus.OK
        generation.tokens_used = tokens
        generation.latency_ms = timing.model_ms
        generation.queue_ms = timing.queue_ms
        generation.finish_reason = spoken.finish_reason
        generation.audio_seconds = spoken.audio_seconds
        if order.store:
            generation.input_text = text
            generation.audio_sha256 = self._media.add(
                session, spoken.data, order.media_type, spoken.audio_seconds
            )
            if spoken.words is not None:
                generation.words = words_to_json(spoken.words)
        session.add(generation)
        session.flush()

    @staticmethod
    def _count_use(session: Session, order: Order) -> None:
        """One more use of the voice, as one atomic UPDATE (no lost counts between replicas).

        A voice deleted while its job ran still gets the use and the job still finishes: it was
        the caller's voice when the call was accepted, and the audio exists by now. A preset
        speaker has no row to count on.
        """
        if order.voice_id is None:
            return
        session.execute(
            update(Voice)
            .where(Voice.id == order.voice_id)
            .values(use_count=Voice.use_count + 1)
            .execution_options(synchronize_session=False)
        )


def _new_row(order: Order, chars: int | None = None, batch_id: int | None = None) -> Generation:
    """A generation row with what is known before synthesis (`chars`: all the order's texts
    unless given); nothing charged yet."""
    if chars is None:
        chars = sum(len(text) for text in order.texts)
    return Generation(
        user_id=order.user_id,
        voice_id=order.voice_id,
        speaker=order.speaker.strip().lower() if order.speaker else None,
        batch_id=batch_id,
        format=order.format,
        language=order.language,
        temperature=order.temperature,
        chars=chars,
        tokens_used=0,
        store=order.store,
    )
