"""Billing arithmetic on a real SQLite database: prices, shares, the calibrated discount."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from qwen3_tts_server.db.models import RuntimeStat
from qwen3_tts_server.db.session import make_engine, make_session_factory, transaction, upgrade
from qwen3_tts_server.services import billing

POLICY = billing.DiscountPolicy(default=0.9, low=0.6, high=1.0, alpha=0.1)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(engine)
    with transaction(make_session_factory(engine)) as session:
        yield session
    engine.dispose()


def test_batch_price_is_floor_of_chars_times_discount_exactly() -> None:
    assert billing.batch_tokens(51, 0.9) == 45
    assert billing.batch_tokens(3, 1.0) == 3
    # 625 x 0.688 is 429.99999999999994 in floating point: the price is 430, not 429.
    assert billing.batch_tokens(625, 0.688) == 430


def test_item_shares_add_up_to_the_batch_price() -> None:
    assert billing.item_tokens([11, 12, 28], 0.9) == [10, 10, 25]
    assert billing.item_tokens([5, 5], 0.9) == [5, 4]  # a tie goes to the earlier item
    assert billing.item_tokens([7], 0.6) == [4]
    for chars in itertools.product([1, 2, 3, 7, 11, 250], repeat=3):
        for discount in (0.6, 0.688, 0.9, 0.999, 1.0):
            shares = billing.item_tokens(list(chars), discount)
            assert sum(shares) == billing.batch_tokens(sum(chars), discount)
            for share, count in zip(shares, chars, strict=True):
                assert count * discount - 1 < share <= count * discount + 1


def test_a_fresh_deployment_charges_the_default_discount(session: Session) -> None:
    assert billing.current_discount(session, POLICY) == 0.9
    narrow = billing.DiscountPolicy(default=0.5, low=0.6, high=1.0, alpha=0.1)
    assert billing.current_discount(session, narrow) == 0.6  # the default is clamped too


def test_single_requests_form_an_ewma_baseline(session: Session) -> None:
    billing.observe_single(session, POLICY, latency_ms=200, chars=10)  # 20 ms/char: the start
    billing.observe_single(session, POLICY, latency_ms=300, chars=10)  # 30 ms/char
    stat = session.get_one(RuntimeStat, billing.SINGLE_MS_PER_CHAR)
    assert stat.value == pytest.approx(0.9 * 20 + 0.1 * 30)


def test_a_batch_moves_the_discount_toward_its_efficiency(session: Session) -> None:
    billing.observe_batch(session, POLICY, latency_ms=100, chars=10)
    assert session.get(RuntimeStat, billing.BATCH_DISCOUNT) is None  # no baseline yet
    billing.observe_single(session, POLICY, latency_ms=100, chars=10)  # 10 ms/char
    billing.observe_batch(session, POLICY, latency_ms=700, chars=100)  # efficiency 0.7
    stat = session.get_one(RuntimeStat, billing.BATCH_DISCOUNT)
    assert stat.value == pytest.approx(0.9 * 0.9 + 0.1 * 0.7)  # 0.88
    assert billing.current_discount(session, POLICY) == 0.88


@pytest.mark.parametrize(
    ("batch_ms", "bound"),
    [(1, 0.6), (100_000, 1.0)],
    ids=["cheap batches floor at 0.6", "slow batches cap at 1.0"],
)
def test_the_discount_stays_within_its_bounds(
    session: Session, batch_ms: int, bound: float
) -> None:
    billing.observe_single(session, POLICY, latency_ms=100, chars=10)
    for _ in range(200):
        billing.observe_batch(session, POLICY, latency_ms=batch_ms, chars=100)
    assert billing.current_discount(session, POLICY) == bound


def test_the_price_rounds_the_stored_discount_to_three_decimals(session: Session) -> None:
    billing.observe_single(session, POLICY, latency_ms=100, chars=10)
    billing.observe_batch(session, POLICY, latency_ms=777, chars=100)  # 0.81 + 0.0777 = 0.8877
    assert session.get_one(RuntimeStat, billing.BATCH_DISCOUNT).value == 0.8877
    assert billing.current_discount(session, POLICY) == 0.888
