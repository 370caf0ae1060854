"""The batch-price calibration row is made race-free, on SQLite and on PostgreSQL.

Two replicas (two engines on one database) make their first observation at the same time: A
has inserted the row but not committed when B, having found no row, writes too. Before, B's
plain INSERT then failed on the primary key (the call that observed it failed after its audio
existed); now both observations are folded in, each by one insert-on-conflict-update.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from qwen3_tts_server.db.models import RuntimeStat
from qwen3_tts_server.db.session import make_engine, make_session_factory, transaction, upgrade
from qwen3_tts_server.services import billing

POLICY = billing.DiscountPolicy(default=0.9, low=0.6, high=1.0, alpha=0.1)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_two_first_observations_at_once_are_both_folded_in(database_url: str) -> None:
    first, second = make_engine(database_url), make_engine(database_url)
    upgrade(first)
    writing = threading.Event()
    errors: list[BaseException] = []

    def note_write(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO RUNTIME_STATS"):
            writing.set()

    event.listen(second, "before_cursor_execute", note_write)

    def replica_b() -> None:
        try:
            with transaction(make_session_factory(second)) as session:
                billing.observe_single(session, POLICY, latency_ms=300, chars=10)  # 30 ms/char
        except BaseException as error:  # asserted below
            errors.append(error)

    with transaction(make_session_factory(first)) as session:
        billing.observe_single(session, POLICY, latency_ms=200, chars=10)  # 20 ms/char
        session.flush()  # A's row exists, uncommitted
        thread = threading.Thread(target=replica_b)
        thread.start()
        assert writing.wait(30), "replica B never wrote"
    # A committed; B, waiting on A's row (or the SQLite write lock), goes on.
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert errors == []
    with make_session_factory(first)() as session:
        stat = session.get_one(RuntimeStat, billing.SINGLE_MS_PER_CHAR)
        assert stat.value == pytest.approx(0.9 * 20 + 0.1 * 30)
    first.dispose()
    second.dispose()
