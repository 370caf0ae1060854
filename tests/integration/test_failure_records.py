"""Every accepted call that fails is recorded with its error and charges nothing, whatever
raised; the answer is a 4xx when the client can change something, a 5xx only for an outage.

Before, only engine errors were recorded: an encoder that refused the audio or a MemoryError
left no row and answered 500, and (with reservations) would have kept the user's hold.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
from quotakit import TEXT_40, TRANSCRIPT, clone, limited_user, totals
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from streamkit import ScriptedEngine
from support import AppFactory

from qwen3_tts_server.engine.base import Engine, EngineInfo, Item
from qwen3_tts_server.engine.step.stepper import Admission
from qwen3_tts_server.values import Sampling

#: FLAC holds no rate above 655 350 Hz: libsndfile refuses to write this one.
FLAC_REFUSES = 700_000


class RelabelledEngine:
    """The session engine's audio, reported at a rate the FLAC encoder refuses."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    def info(self) -> EngineInfo:
        return replace(self.inner.info(), sample_rate=FLAC_REFUSES)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class OutOfMemoryEngine:
    """The session engine, except that synthesis runs out of memory (a real MemoryError)."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    def prepare(self, item: Item, sampling: Sampling, budget: int) -> Admission:
        bytearray(1 << 62)  # far past any machine's memory: raises MemoryError at once
        return self.inner.prepare(item, sampling, budget)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _rows(tmp_path: Path, table: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        return db.execute(f"SELECT status, tokens_used, error FROM {table}").fetchall()  # noqa: S608


def _assert_free(tmp_path: Path, user_id: int, usage: dict[str, Any]) -> None:
    assert usage["tts_calls"] == usage["batch_calls"] == 0
    assert usage["tokens_used_total"] == len(TRANSCRIPT)  # the clone's, nothing else
    state = totals(f"sqlite:///{tmp_path / 'data' / 'db.sqlite3'}", user_id)
    assert state["tokens_used"] == len(TRANSCRIPT)
    assert state["tokens_reserved"] == 0 and state["reservations"] == 0


def test_an_encoder_refusal_is_recorded_free_and_a_400(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    api = make_client(load_engine=lambda: RelabelledEngine(engine))
    user_id, headers = limited_user(api, 1000)
    voice_id = clone(api, headers).json()["voice_id"]

    single = api.post(
        "/tts", headers=headers, json={"text": "Hello.", "voice_id": voice_id, "format": "flac"}
    )
    assert single.status_code == 400, single.text
    assert "could not be encoded as flac" in single.json()["detail"]
    batch = api.post(
        "/batchtts",
        headers=headers,
        json={"texts": ["One.", "Two."], "voice_id": voice_id, "format": "flac"},
    )
    assert batch.status_code == 400, batch.text

    [single_row, batch_item] = _rows(tmp_path, "generations")
    assert single_row[:2] == ("error", 0) and "could not be encoded as flac" in single_row[2]
    assert batch_item[:2] == ("error", 0)
    [batch_row] = _rows(tmp_path, "batches")
    assert batch_row[:2] == ("error", 0) and "flac" in batch_row[2]
    _assert_free(tmp_path, user_id, api.get("/usage", headers=headers).json())
    # The same audio in a format that takes it is fine (and charged).
    wav = api.post("/tts", headers=headers, json={"text": "Hello.", "voice_id": voice_id})
    assert wav.status_code == 200 and wav.headers["x-tokens-used"] == "6"


def test_running_out_of_memory_is_recorded_free_and_a_503(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    api = make_client(load_engine=lambda: OutOfMemoryEngine(engine))
    user_id, headers = limited_user(api, 1000)
    voice_id = clone(api, headers).json()["voice_id"]

    response = api.post("/tts", headers=headers, json={"text": "Hello.", "voice_id": voice_id})
    assert response.status_code == 503
    assert response.json() == {
        "detail": "The server ran out of memory for this call; try again later"
    }
    assert _rows(tmp_path, "generations") == [("error", 0, "out of memory (MemoryError)")]
    _assert_free(tmp_path, user_id, api.get("/usage", headers=headers).json())


def _set_connections(database_url: str, allowed: bool) -> None:
    """Open or close a PostgreSQL database to connections; closing also ends the open ones
    (the app's pooled connections), as a database failover or maintenance window would."""
    url = make_url(database_url)
    admin = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as db:
        db.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (url.database,),
            )


def test_a_database_outage_mid_call_is_a_503_and_the_hold_is_released_once_it_is_back(
    make_client: AppFactory, engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    held = ScriptedEngine(engine, hold=1)
    shared = {"database_url": postgres_url, "media_dir": tmp_path / "media"}
    api = make_client(load_engine=lambda: held, data_dir=tmp_path / "a", lease_s=1.5, **shared)
    user_id, headers = limited_user(api, len(TRANSCRIPT) + 40)
    voice_id = clone(api, headers).json()["voice_id"]
    answers: list[Any] = []
    call = threading.Thread(
        target=lambda: answers.append(
            api.post("/tts", headers=headers, json={"text": TEXT_40, "voice_id": voice_id})
        )
    )
    call.start()
    try:
        assert held.holding.wait(30)  # reserved, and the model is working
        _set_connections(postgres_url, allowed=False)
        held.proceed.set()
        call.join(timeout=120)
    finally:
        held.proceed.set()
        _set_connections(postgres_url, allowed=True)
    [response] = answers
    assert response.status_code == 503
    assert response.json() == {"detail": "The database is unavailable; try again shortly"}

    # Nothing was charged. The hold could not be given back while the database was away; the
    # live process retries at every heartbeat (0.25 s here) and gives it back once it is back,
    # and records the failed call. (Nobody else may: its lease is alive.)
    assert api.get("/usage", headers=headers).json()["tokens_used_total"] == len(TRANSCRIPT)
    deadline = time.monotonic() + 30
    while (state := totals(postgres_url, user_id))["reservations"]:
        assert time.monotonic() < deadline, "the process never released its own hold"
        time.sleep(0.1)
    assert state["tokens_reserved"] == 0 and state["tokens_used"] == len(TRANSCRIPT)
    db = create_engine(postgres_url)
    with db.connect() as connection:
        failed = connection.execute(text("SELECT status, tokens_used FROM generations")).all()
    db.dispose()
    assert [tuple(row) for row in failed] == [("error", 0)]
    again = api.post("/tts", headers=headers, json={"text": TEXT_40, "voice_id": voice_id})
    assert again.status_code == 200, again.text
