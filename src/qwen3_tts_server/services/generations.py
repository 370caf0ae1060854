"""The generation ledger: the one owner of `generations` and `batches` rows.

Every synthesis path (/tts, a stream, /batchtts) records what it asked for (`Order`) and how
it ended (`Outcome`) here, and nowhere else; what a success charges, stores and calibrates is
decided in one place, so the paths cannot drift apart. A row is either made and settled at once
(`settle`, `settle_batch`) or opened first (`open`, status STREAMING, for a stream whose id
must be in the response headers) and settled when the stream ends. Only OK rows are charged;
failed and cancelled ones are kept, free, with their error, for the user's and operator's
history. Statuses are `values.GenerationStatus`, shared with usage totals and the schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from qwen3_tts_server.db.models import Batch, Generation
from qwen3_tts_server.db.session import transaction
from qwen3_tts_server.services import billing
from qwen3_tts_server.services.media import MediaLibrary
from qwen3_tts_server.services.runtime import Timing
from qwen3_tts_server.services.voices import VoiceService
from qwen3_tts_server.values import FinishReason, GenerationStatus

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


@dataclass(frozen=True)
class Outcome:
    """How a call ended. Build with `ok`, `failed` or `cancelled`."""

    status: GenerationStatus
    items: tuple[Spoken, ...] = ()
    timing: Timing | None = None
    error: str | None = None

    @classmethod
    def ok(cls, items: Sequence[Spoken], timing: Timing) -> Outcome:
        return cls(GenerationStatus.OK, tuple(items), timing)

    @classmethod
    def failed(cls, error: BaseException | str) -> Outcome:
        return cls(GenerationStatus.ERROR, error=str(error)[:MAX_ERROR_CHARS])

    @classmethod
    def cancelled(cls, reason: str) -> Outcome:
        return cls(GenerationStatus.CANCELLED, error=reason[:MAX_ERROR_CHARS])


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
    ) -> None:
        self._sessions = sessions
        self._media = media
        self._policy = policy

    def open(self, order: Order) -> int:
        """A STREAMING row for one text, so the response headers can name it before its audio
        exists; never counted or charged until `settle` turns it OK."""
        with transaction(self._sessions) as session:
            generation = _new_row(order)
            generation.status = GenerationStatus.STREAMING
            session.add(generation)
            session.flush()
            return generation.id

    def settle(self, order: Order, outcome: Outcome, generation_id: int | None = None) -> Receipt:
        """Record one text's outcome: on the row `open` made, else on a new one.

        OK charges len(text), counts a use of the voice, keeps text and audio when stored and
        folds the model time into the single-request baseline the batch discount is measured
        against. Anything else is kept with its error and charges nothing.
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
            session.flush()
        self._keep([generation], outcome.items)
        return Receipt((generation.id,), (generation.tokens_used,))

    def settle_batch(self, order: Order, outcome: Outcome, discount: float) -> Receipt:
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
                return Receipt((failed.id,), (0,), batch.id)
            assert outcome.timing is not None
            generations = []
            for text, spoken, charge in zip(order.texts, outcome.items, tokens, strict=True):
                generation = _new_row(order, len(text), batch.id)
                self._fill(session, generation, order, text, spoken, charge, outcome.timing)
                generations.append(generation)
            self._count_use(session, order)
            billing.observe_batch(session, self._policy, outcome.timing.model_ms, sum(chars))
        self._keep(generations, outcome.items)
        return Receipt(tuple(g.id for g in generations), tuple(tokens), batch.id)

    def interrupt_open(self, older_than: datetime) -> int:
        """Settle STREAMING rows opened before `older_than` as INTERRUPTED (free): a process
        that died mid-stream never settled them. Returns how many rows changed."""
        with transaction(self._sessions) as session:
            result = session.execute(
                update(Generation)
                .where(
                    Generation.status == GenerationStatus.STREAMING,
                    Generation.created_at < older_than,
                )
                .values(
                    status=GenerationStatus.INTERRUPTED,
                    error="the server stopped before the stream ended",
                )
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

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
        session.add(generation)
        session.flush()

    @staticmethod
    def _count_use(session: Session, order: Order) -> None:
        if order.voice_id is not None:  # preset speakers have no row to count on
            VoiceService.owned(session, order.user_id, order.voice_id).use_count += 1

    def _keep(self, generations: Sequence[Generation], items: Sequence[Spoken]) -> None:
        """After the commit: make sure each stored generation's file exists (see MediaLibrary)."""
        for generation, spoken in zip(generations, items, strict=False):
            if generation.audio_sha256:
                self._media.restore(spoken.data, generation.audio_sha256)


def _new_row(order: Order, chars: int | None = None, batch_id: int | None = None) -> Generation:
    """A generation row with what is known before synthesis (`chars`: all the order's texts
    unless given); nothing charged yet."""
    if chars is None:
        chars = sum(len(text) for text in order.texts)
    return Generation(
        user_id=order.user_id,
        voice_id=order.voice_id,
        batch_id=batch_id,
        format=order.format,
        language=order.language,
        temperature=order.temperature,
        chars=chars,
        tokens_used=0,
        store=order.store,
    )
