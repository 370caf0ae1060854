"""Usage totals, computed from the rows that record what was charged.

Totals are derived on read (grouped sums), so they can never drift from the generations,
batches and voices they describe. (The quota check compares against the running totals on the
user row instead, services/quota.py, which every charge updates in the same commit as its
rows.) Failed calls are recorded with zero tokens and a status other than OK; a call counts
when it was charged: an OK row, or a stream the client left after some audio (CANCELLED with
the tokens of what it was sent).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from qwen3_tts_server.db.models import Batch, Generation, Voice
from qwen3_tts_server.errors import NotFound
from qwen3_tts_server.values import GenerationStatus

_OK = GenerationStatus.OK
#: A single generation that was charged: OK, or a stream left after some of its audio.
_CHARGED = or_(Generation.status == _OK, Generation.tokens_used > 0)


@dataclass
class Usage:
    """The original six totals, plus voice-creation tokens and audio seconds."""

    tokens_used_total: int = 0
    tokens_used_tts: int = 0
    tokens_used_batch: int = 0
    tokens_used_voices: int = 0
    voices_created: int = 0
    tts_calls: int = 0
    batch_calls: int = 0
    audio_seconds_total: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["audio_seconds_total"] = round(self.audio_seconds_total, 3)
        return data


def usage_by_user(session: Session, user_ids: Iterable[int]) -> dict[int, Usage]:
    """Totals for each of `user_ids` (every id present in the result, zeros when unused)."""
    ids = list(user_ids)
    totals = {user_id: Usage() for user_id in ids}
    if not ids:
        return totals

    single = session.execute(
        select(
            Generation.user_id,
            func.count(),
            func.coalesce(func.sum(Generation.tokens_used), 0),
        )
        .where(Generation.user_id.in_(ids), Generation.batch_id.is_(None), _CHARGED)
        .group_by(Generation.user_id)
    )
    for user_id, calls, tokens in single:
        totals[user_id].tts_calls = int(calls)
        totals[user_id].tokens_used_tts = int(tokens)

    batches = session.execute(
        select(Batch.user_id, func.count(), func.coalesce(func.sum(Batch.tokens_used), 0))
        .where(Batch.user_id.in_(ids), Batch.status == _OK)
        .group_by(Batch.user_id)
    )
    for user_id, calls, tokens in batches:
        totals[user_id].batch_calls = int(calls)
        totals[user_id].tokens_used_batch = int(tokens)

    seconds = session.execute(
        select(Generation.user_id, func.coalesce(func.sum(Generation.audio_seconds), 0.0))
        .where(Generation.user_id.in_(ids), _CHARGED)
        .group_by(Generation.user_id)
    )
    for user_id, audio_seconds in seconds:
        totals[user_id].audio_seconds_total = float(audio_seconds)

    # Voice-creation tokens stay charged after the voice is deleted; the count is of live voices.
    voice_tokens = session.execute(
        select(Voice.user_id, func.coalesce(func.sum(Voice.tokens_used), 0))
        .where(Voice.user_id.in_(ids))
        .group_by(Voice.user_id)
    )
    for user_id, tokens in voice_tokens:
        totals[user_id].tokens_used_voices = int(tokens)
    live_voices = session.execute(
        select(Voice.user_id, func.count())
        .where(Voice.user_id.in_(ids), Voice.deleted_at.is_(None))
        .group_by(Voice.user_id)
    )
    for user_id, count in live_voices:
        totals[user_id].voices_created = int(count)

    for usage in totals.values():
        usage.tokens_used_total = (
            usage.tokens_used_tts + usage.tokens_used_batch + usage.tokens_used_voices
        )
    return totals


def usage_for(session: Session, user_id: int) -> Usage:
    return usage_by_user(session, [user_id])[user_id]


@dataclass(frozen=True)
class GenerationState:
    """Where one of the caller's generations stands: a client that stopped a stream reads
    what it was charged here once `status` is no longer `streaming`."""

    generation_id: int
    status: str
    tokens_used: int
    audio_seconds: float
    finish_reason: str | None


class UsageService:
    """Usage totals for routes, which never open database sessions themselves."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def for_user(self, user_id: int) -> Usage:
        with self._sessions() as session:
            return usage_for(session, user_id)

    def generation(self, user_id: int, generation_id: int) -> GenerationState:
        """One of the caller's own generations (404 for anyone else's, as for a missing one)."""
        with self._sessions() as session:
            row = session.get(Generation, generation_id)
            if row is None or row.user_id != user_id:
                raise NotFound(f"You have no generation {generation_id}")
            return GenerationState(
                generation_id=row.id,
                status=str(row.status),
                tokens_used=row.tokens_used,
                audio_seconds=round(row.audio_seconds, 3),
                finish_reason=None if row.finish_reason is None else str(row.finish_reason),
            )
