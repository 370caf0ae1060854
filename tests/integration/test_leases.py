"""Leases: a dead server process's open streams and holds are settled by a live one, within
its lease, and a live process's are never touched, however old they are.

Two other "processes" share the app's database here: each is the real lease, quota and ledger
code under its own instance id, exactly what a replica runs. One keeps renewing its lease; the
other stops, as a process killed with -9 does. (test_crash.py and test_replicas_postgres.py
kill real server processes.)
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from support import AppFactory, new_user_key

from qwen3_tts_server.db.models import Generation, Instance, Reservation, User
from qwen3_tts_server.db.session import make_engine, make_session_factory
from qwen3_tts_server.services.billing import DiscountPolicy
from qwen3_tts_server.services.generations import GenerationLedger, Order
from qwen3_tts_server.services.leases import Lease
from qwen3_tts_server.services.media import MediaLibrary
from qwen3_tts_server.services.quota import Amounts, Limits, Quotas
from qwen3_tts_server.storage.blobs import BlobStore

LEASE_S = 3.0
#: Generous for a loaded CI machine; the lease itself settles within LEASE_S + a heartbeat.
SETTLE_LIMIT_S = 30.0


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'db.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_a_lapsed_instance_is_settled_and_a_live_one_is_untouched(
    make_client: AppFactory, database_url: str, tmp_path: Path
) -> None:
    client = make_client(database_url=database_url, lease_s=LEASE_S)
    user_id, _ = new_user_key(client)
    settings = client.app.state.context.settings
    sessions = make_session_factory(make_engine(database_url))
    media = MediaLibrary(sessions, BlobStore(tmp_path / "other-blobs"))
    order = Order(user_id, None, "pcm", "audio/pcm", "english", 0.9, False, ("Twelve chars",))
    rows: dict[str, tuple[int, int]] = {}
    leases: dict[str, Lease] = {}
    for name in ("dead", "live"):
        lease = leases[name] = Lease(sessions, f"{name}-instance", timedelta(seconds=LEASE_S))
        lease.register()
        hold = Quotas(sessions, Limits.from_settings(settings), lease.instance_id).reserve(
            user_id, "stream", Amounts(tokens=12)
        )
        ledger = GenerationLedger(
            sessions, media, DiscountPolicy.from_settings(settings), lease.instance_id
        )
        rows[name] = (ledger.open(order), hold.reservation_id)

    stop = threading.Event()

    def keep_alive() -> None:
        while not stop.wait(0.1):
            leases["live"].renew()

    renewing = threading.Thread(target=keep_alive, daemon=True)
    renewing.start()
    try:
        started = time.monotonic()
        while _status(sessions, rows["dead"][0]) == "streaming":
            assert time.monotonic() - started < SETTLE_LIMIT_S, "the lapsed lease was not settled"
            time.sleep(0.05)
        time.sleep(2 * LEASE_S)  # several more rounds of recovery: the live work must survive
        with sessions() as session:
            held = set(session.scalars(select(Reservation.id)))
            instances = set(session.scalars(select(Instance.id)))
            user = session.get_one(User, user_id)
            dead_row = session.get_one(Generation, rows["dead"][0])
            assert (dead_row.status, dead_row.tokens_used) == ("interrupted", 0)
            assert dead_row.error == "the server stopped before the stream ended"
            assert _status(sessions, rows["live"][0]) == "streaming"
            assert held == {rows["live"][1]}
            assert user.tokens_reserved == 12  # the live call's hold only
            assert "dead-instance" not in instances and "live-instance" in instances
    finally:
        stop.set()
        renewing.join()


def test_a_clean_stop_ends_the_lease(make_client: AppFactory, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'db.sqlite3'}"
    client = make_client(database_url=url)
    sessions = make_session_factory(make_engine(url))
    with sessions() as session:
        assert len(session.scalars(select(Instance.id)).all()) == 1
    client.__exit__(None, None, None)
    with sessions() as session:
        assert session.scalars(select(Instance.id)).all() == []


def _status(sessions: sessionmaker[Session], generation_id: int) -> str:
    with sessions() as session:
        row = session.get_one(Generation, generation_id, populate_existing=True)
        return str(row.status)
