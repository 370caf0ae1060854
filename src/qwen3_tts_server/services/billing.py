"""What a call costs: tokens (≈ characters), quotas, and the self-calibrated batch discount.

The discount D compares what a batch really cost the model with what the same characters would
have cost as single requests: D ← EWMA of L_batch / (S · C), clamped, where S is the EWMA of
single-request latency per character. A batch is charged floor(C · D) with D *as it stood before
the batch*; its own observation only moves the price of later batches (the original server
charged each batch by its own latency). The state lives in `runtime_stats`, so every replica on
one database charges the same price.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from qwen3_tts_server.config import Settings
from qwen3_tts_server.db.models import RuntimeStat, User, utcnow
from qwen3_tts_server.errors import QuotaExceeded
from qwen3_tts_server.services.usage import usage_for

SINGLE_MS_PER_CHAR = "single_latency_per_char_ms"
BATCH_DISCOUNT = "batch_discount_current"


def check_quota(session: Session, user_id: int, tokens: int) -> None:
    """Refuse work that would take the user past their token quota (none means unlimited)."""
    user = session.get(User, user_id)
    if user is None or user.token_quota is None:
        return
    quota = user.token_quota
    used = usage_for(session, user_id).tokens_used_total
    if used + tokens > quota:
        raise QuotaExceeded(
            f"Token quota exceeded: this call needs {tokens} tokens and {max(quota - used, 0)} "
            f"of your {quota} remain; ask the administrator to raise the quota"
        )


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


def _read(session: Session, key: str) -> RuntimeStat | None:
    return session.get(RuntimeStat, key, with_for_update=True)


def _write(session: Session, key: str, value: float) -> None:
    row = session.get(RuntimeStat, key)
    if row is None:
        session.add(RuntimeStat(key=key, value=value, updated_at=utcnow()))
    else:
        row.value, row.updated_at = value, utcnow()


def current_discount(session: Session, policy: DiscountPolicy) -> float:
    """The price multiplier a batch starting now pays, rounded to 3 decimals like the original."""
    row = _read(session, BATCH_DISCOUNT)
    return round(policy.clamp(row.value if row else policy.default), 3)


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
    row = _read(session, SINGLE_MS_PER_CHAR)
    baseline = observed if row is None else (1 - policy.alpha) * row.value + policy.alpha * observed
    _write(session, SINGLE_MS_PER_CHAR, baseline)


def observe_batch(session: Session, policy: DiscountPolicy, latency_ms: float, chars: int) -> None:
    """Move D toward this batch's cost relative to single requests (for the next batches).

    `latency_ms` is model time only: time the batch spent queued says nothing about batching.
    """
    single = _read(session, SINGLE_MS_PER_CHAR)
    if single is None or single.value * chars <= 0 or latency_ms <= 0:
        return
    efficiency = policy.clamp(latency_ms / (single.value * chars))
    row = _read(session, BATCH_DISCOUNT)
    before = row.value if row else policy.default
    updated = policy.clamp((1 - policy.alpha) * before + policy.alpha * efficiency)
    _write(session, BATCH_DISCOUNT, round(updated, 5))
