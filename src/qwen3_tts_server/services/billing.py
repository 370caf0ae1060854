"""What a call costs: tokens (≈ characters) and the self-calibrated batch discount.

The discount D compares what a batch really cost the model with what the same characters would
have cost as single requests: D ← EWMA of L_batch / (S · C), clamped, where S is the EWMA of
single-request latency per character. A batch is charged floor(C · D) with D *as it stood before
the batch*; its own observation only moves the price of later batches (the original server
charged each batch by its own latency). The state lives in `runtime_stats`, so every replica on
one database charges the same price. Each observation is one insert-on-conflict-update whose
EWMA is computed by the database on the row as it is then, so concurrent observations (threads
or replicas, even the very first two) neither collide on the insert nor lose an update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, Numeric, case, cast, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from qwen3_tts_server.config import Settings
from qwen3_tts_server.db.models import RuntimeStat, utcnow

SINGLE_MS_PER_CHAR = "single_latency_per_char_ms"
BATCH_DISCOUNT = "batch_discount_current"


@dataclass(frozen=True)
class DiscountPolicy:
    default: float
    low: float
    high: float
    alpha: float

    @classmethod
    def from_settings(cls, settings: Settings) -> DiscountPolicy:
        return cls(
            default=settings.batch_discount_default,
            low=settings.batch_discount_min,
            high=settings.batch_discount_max,
            alpha=settings.batch_discount_ewma_alpha,
        )

    def clamp(self, value: float) -> float:
        return min(self.high, max(self.low, value))


def _read(session: Session, key: str) -> float | None:
    value: float | None = session.scalar(select(RuntimeStat.value).where(RuntimeStat.key == key))
    return value


#: The insert constructs that know ON CONFLICT, by dialect (the two databases supported).
_INSERTS: dict[str, Callable[..., Any]] = {
    "sqlite": sqlite.insert,
    "postgresql": postgresql.insert,
}


def _fold(session: Session, key: str, first: float, fold: Callable[[Any], Any]) -> None:
    """Store `first` as the key's value, or, when the row exists (made by anyone, even
    concurrently), set it to `fold(value as the database has it)`, in one statement."""
    now = utcnow()
    insert = _INSERTS[session.get_bind().dialect.name](RuntimeStat)
    session.execute(
        insert.values(key=key, value=first, updated_at=now).on_conflict_do_update(
            index_elements=[RuntimeStat.key],
            set_={"value": fold(RuntimeStat.value), "updated_at": now},
        )
    )


def _rounded(value: Any, digits: int) -> Any:
    """round() in SQL on both databases (PostgreSQL rounds only numeric to given digits)."""
    return cast(func.round(cast(value, Numeric), digits), Float)


def current_discount(session: Session, policy: DiscountPolicy) -> float:
    """The price multiplier a batch starting now pays, rounded to 3 decimals like the original."""
    value = _read(session, BATCH_DISCOUNT)
    return round(policy.clamp(policy.default if value is None else value), 3)


def _milli(discount: float) -> int:
    """D in thousandths: D is rounded to 3 decimals, so integer arithmetic is exact."""
    return round(discount * 1000)


def batch_tokens(chars: int, discount: float) -> int:
    """floor(C · D), computed exactly (a float product can land just below a whole number)."""
    return chars * _milli(discount) // 1000


def item_tokens(item_chars: Sequence[int], discount: float) -> list[int]:
    """Each item's share of its batch's charge; the shares add up to `batch_tokens` exactly.

    Every item gets floor(c · D); the tokens those floors lose together go one each to the items
    with the largest fractional parts (the earlier item first on a tie), so the manifest's
    per-item tokens and the batch's X-Tokens-Used always agree.
    """
    milli = _milli(discount)
    shares = [chars * milli // 1000 for chars in item_chars]
    missing = batch_tokens(sum(item_chars), discount) - sum(shares)
    by_remainder = sorted(
        range(len(item_chars)), key=lambda index: (-(item_chars[index] * milli % 1000), index)
    )
    for index in by_remainder[:missing]:
        shares[index] += 1
    return shares


def observe_single(session: Session, policy: DiscountPolicy, latency_ms: float, chars: int) -> None:
    """Fold a successful single request's model time (never queue time) into the baseline S."""
    if chars <= 0 or latency_ms <= 0:
        return
    observed = latency_ms / chars
    alpha = policy.alpha
    _fold(session, SINGLE_MS_PER_CHAR, observed, lambda s: (1 - alpha) * s + alpha * observed)


def observe_batch(session: Session, policy: DiscountPolicy, latency_ms: float, chars: int) -> None:
    """Move D toward this batch's cost relative to single requests (for the next batches).

    `latency_ms` is model time only: time the batch spent queued says nothing about batching.
    """
    single = _read(session, SINGLE_MS_PER_CHAR)
    if single is None or single * chars <= 0 or latency_ms <= 0:
        return
    efficiency = policy.clamp(latency_ms / (single * chars))
    alpha, low, high = policy.alpha, policy.low, policy.high

    def moved(before: Any) -> Any:
        value = (1 - alpha) * before + alpha * efficiency
        clamped = case((value < low, low), (value > high, high), else_=value)
        return _rounded(clamped, 5)

    first = round(policy.clamp((1 - alpha) * policy.default + alpha * efficiency), 5)
    _fold(session, BATCH_DISCOUNT, first, moved)
