"""Reservations: a call takes what it may spend before any work, and settles it when it ends.

Every paid call (/tts, a stream, /batchtts, /v1/audio/speech, /clonevoice, /designvoice)
reserves its tokens, and a new voice also its reference bytes and a voice slot, with one
conditional UPDATE of the user's running totals (`users.tokens_used + tokens_reserved`,
`storage_bytes`, `voice_count`): the database applies it only if the result stays within the
limits, so however many calls race, on however many replicas, no limit can be passed. SQLite
takes its write lock for the UPDATE; PostgreSQL re-checks the WHERE on the row it locks.

A `Reservation` row records each hold. Settling (inside the transaction that writes the call's
rows) deletes it and moves the held amounts to what was really spent: a success keeps its
charge, a failure keeps nothing. Each row names the server process that holds it; the holds
of a process whose lease lapsed are released by any live one (`release_owned`, services/
leases.py), and holds from before leases existed once they are older than the grace period
(`release_stale`). A row already released that way is never released twice: whoever deletes
it gives its amounts back, and a late settle then only adds its charge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from qwen3_tts_server.config import Settings
from qwen3_tts_server.db.models import Reservation, User
from qwen3_tts_server.db.session import transaction
from qwen3_tts_server.errors import Forbidden, NotFound, QuotaExceeded, StorageExceeded
from qwen3_tts_server.services.deferred import DeferredSettlements
from qwen3_tts_server.values import format_size

#: A refused UPDATE is explained from the row read after it; when another call has changed the
#: row in between so that nothing is over the limit any more, the reservation is tried again.
_ATTEMPTS = 3


@dataclass(frozen=True)
class Limits:
    """Per-user limits on stored reference audio, and the least a clone costs."""

    storage_bytes: int
    voices: int
    clone_min_tokens: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            storage_bytes=settings.max_user_storage_bytes,
            voices=settings.max_user_voices,
            clone_min_tokens=settings.clone_min_tokens,
        )


@dataclass(frozen=True)
class Amounts:
    """Tokens, reference bytes and voice slots: what a call holds, or what it spent."""

    tokens: int = 0
    storage_bytes: int = 0
    voices: int = 0


@dataclass(frozen=True)
class Hold:
    """A reservation taken: settle it exactly once (`settle`, or `Quotas.release`)."""

    reservation_id: int
    user_id: int
    amounts: Amounts


NOTHING = Amounts()


class Quotas:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        limits: Limits,
        instance_id: str | None = None,
        deferred: DeferredSettlements | None = None,
    ) -> None:
        """`instance_id`: this process's lease, named on every hold it takes; `deferred`:
        where a release that cannot be written now waits to be retried."""
        self._sessions = sessions
        self.limits = limits
        self._instance_id = instance_id
        self.deferred = DeferredSettlements() if deferred is None else deferred

    def reserve(self, user_id: int, purpose: str, amounts: Amounts) -> Hold:
        """Hold `amounts` for a call, or raise what stops it: 402 (tokens), 403 (voice
        count), 413 (storage). Voice slots and bytes are only checked when asked for."""
        for _ in range(_ATTEMPTS):
            with transaction(self._sessions) as session:
                if _take(session, user_id, amounts, self.limits):
                    reservation = Reservation(
                        user_id=user_id,
                        purpose=purpose,
                        tokens=amounts.tokens,
                        storage_bytes=amounts.storage_bytes,
                        voices=amounts.voices,
                        instance_id=self._instance_id,
                    )
                    session.add(reservation)
                    session.flush()
                    return Hold(reservation.id, user_id, amounts)
                refusal = self._refusal(session, user_id, amounts)
            if refusal is not None:
                raise refusal
        raise QuotaExceeded(
            "Your calls in progress hold your remaining quota; try again when they finish"
        )

    def release(self, hold: Hold) -> None:
        """Give a hold back in full (the call failed and charges nothing)."""
        with transaction(self._sessions) as session:
            settle(session, hold, NOTHING)

    def release_owned(self, instance_ids: list[str]) -> int:
        """Release the holds of these (dead) instances. Returns how many were released."""
        if not instance_ids:
            return 0
        return self._release_where(Reservation.instance_id.in_(instance_ids))

    def release_stale(self, older_than: datetime) -> int:
        """Release holds without an owner (taken before leases existed) older than
        `older_than`. Returns how many were released."""
        return self._release_where(
            Reservation.instance_id.is_(None), Reservation.created_at < older_than
        )

    def _release_where(self, *conditions: ColumnElement[bool]) -> int:
        with self._sessions() as session:
            stale = session.scalars(select(Reservation).where(*conditions)).all()
        released = 0
        for row in stale:
            amounts = Amounts(row.tokens, row.storage_bytes, row.voices)
            with transaction(self._sessions) as session:
                released += settle(session, Hold(row.id, row.user_id, amounts), NOTHING)
        return released

    def _refusal(self, session: Session, user_id: int, wanted: Amounts) -> Exception | None:
        """Why `wanted` does not fit the user's totals as they are now (None: it fits now)."""
        user = session.get(User, user_id, populate_existing=True)
        if user is None:
            return NotFound("User not found")
        quota = user.token_quota
        if quota is not None and user.tokens_used + user.tokens_reserved + wanted.tokens > quota:
            remaining = max(quota - user.tokens_used - user.tokens_reserved, 0)
            held = (
                f" ({user.tokens_reserved} more are held by your calls in progress)"
                if user.tokens_reserved
                else ""
            )
            return QuotaExceeded(
                f"Token quota exceeded: this call needs {wanted.tokens} tokens and {remaining} "
                f"of your {quota} remain{held}; ask the administrator to raise the quota"
            )
        limits = self.limits
        if wanted.voices and user.voice_count + wanted.voices > limits.voices:
            return Forbidden(
                f"Voice limit reached: you have {user.voice_count} voices and at most "
                f"{limits.voices} are allowed (MAX_USER_VOICES); delete one you no longer need"
            )
        if _checks_storage(wanted) and user.storage_bytes + wanted.storage_bytes > (
            limits.storage_bytes
        ):
            free = max(limits.storage_bytes - user.storage_bytes, 0)
            return StorageExceeded(
                f"Storage limit reached: this reference needs {wanted.storage_bytes} bytes and "
                f"{free} of your {format_size(limits.storage_bytes)} are free "
                "(MAX_USER_STORAGE_BYTES); delete voices you no longer need, or send a shorter "
                "or compressed recording"
            )
        return None


def _checks_storage(amounts: Amounts) -> bool:
    """Storage is checked for calls that add reference audio (a new voice), never for speech:
    a user over the limit (designed references are counted when made) can still speak."""
    return bool(amounts.voices or amounts.storage_bytes)


def _take(session: Session, user_id: int, amounts: Amounts, limits: Limits) -> bool:
    """The one conditional UPDATE that reserves; False when a limit would be passed."""
    conditions: list[Any] = [User.id == user_id]
    if amounts.tokens:
        conditions.append(
            or_(
                User.token_quota.is_(None),
                User.tokens_used + User.tokens_reserved + amounts.tokens <= User.token_quota,
            )
        )
    if _checks_storage(amounts):
        conditions.append(User.voice_count + amounts.voices <= limits.voices)
        conditions.append(User.storage_bytes + amounts.storage_bytes <= limits.storage_bytes)
    result = session.execute(
        update(User)
        .where(*conditions)
        .values(
            tokens_reserved=User.tokens_reserved + amounts.tokens,
            storage_bytes=User.storage_bytes + amounts.storage_bytes,
            voice_count=User.voice_count + amounts.voices,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def settle(session: Session, hold: Hold, spent: Amounts) -> bool:
    """In the caller's transaction: end `hold`, keeping `spent` (NOTHING on failure).

    Returns whether the hold was still there; if start-up recovery released it already, its
    amounts were given back then, and only `spent` is added now.
    """
    deleted = session.execute(
        delete(Reservation)
        .where(Reservation.id == hold.reservation_id)
        .execution_options(synchronize_session=False)
    )
    was_held = int(deleted.rowcount) == 1  # type: ignore[attr-defined]
    held = hold.amounts if was_held else NOTHING
    session.execute(
        update(User)
        .where(User.id == hold.user_id)
        .values(
            tokens_used=User.tokens_used + spent.tokens,
            tokens_reserved=User.tokens_reserved - held.tokens,
            storage_bytes=User.storage_bytes + spent.storage_bytes - held.storage_bytes,
            voice_count=User.voice_count + spent.voices - held.voices,
        )
        .execution_options(synchronize_session=False)
    )
    return was_held


def voice_removed(session: Session, user_id: int, storage_bytes: int) -> None:
    """In the deleting transaction: a live voice and its reference bytes stop counting."""
    session.execute(
        update(User)
        .where(User.id == user_id)
        .values(
            storage_bytes=User.storage_bytes - storage_bytes,
            voice_count=User.voice_count - 1,
        )
        .execution_options(synchronize_session=False)
    )
