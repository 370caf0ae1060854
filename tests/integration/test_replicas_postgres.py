"""Scale-out: several replicas of the server on one PostgreSQL database and one media folder.

Each replica is a full app with its own scheduler and its own engine instance (the tiny model
loaded again, as a second process would); they share only the database and MEDIA_DIR.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from processes import kill_when, post_quietly, server_process
from sqlalchemy import create_engine, text
from support import AppFactory, admin_headers, clone_voice, new_user_key
from test_crash import STREAM_TEXT

STATUS = "SELECT status, tokens_used FROM generations WHERE id = :id"


@pytest.fixture
def replicas(
    make_client: AppFactory, postgres_url: str, tmp_path: Path
) -> tuple[TestClient, TestClient]:
    shared = {"database_url": postgres_url, "media_dir": tmp_path / "shared-media"}
    return (
        make_client(data_dir=tmp_path / "a", **shared),
        make_client(data_dir=tmp_path / "b", **shared),
    )


def test_schema_is_migrated_once_by_concurrent_starts(postgres_url: str, tmp_path: Path) -> None:
    from qwen3_tts_server.db.session import MIGRATIONS_DIR, make_engine, upgrade

    engines = [make_engine(postgres_url) for _ in range(4)]
    errors: list[BaseException] = []

    def migrate(index: int) -> None:
        try:
            upgrade(engines[index])
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=migrate, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # Without the advisory lock the racing CREATE TABLEs deadlock or collide.
    assert not any(thread.is_alive() for thread in threads), "migrations deadlocked"
    assert errors == []
    with create_engine(postgres_url).connect() as connection:
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert version == ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def test_invite_race_across_replicas_has_one_winner(
    replicas: tuple[TestClient, TestClient],
) -> None:
    first = replicas[0]
    user_id = first.post("/admin/users", headers=admin_headers()).json()["user_id"]
    code = first.post(f"/admin/users/{user_id}/invites", headers=admin_headers()).json()[
        "invite_code"
    ]
    barrier = threading.Barrier(16)
    statuses: list[int] = []
    lock = threading.Lock()

    def exchange(client: TestClient) -> None:
        barrier.wait()
        status = client.post("/auth/exchange-invite", json={"invite_code": code}).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=exchange, args=(replicas[i % 2],)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [403] * 15


def test_keys_revocation_and_usage_are_shared(replicas: tuple[TestClient, TestClient]) -> None:
    first, second = replicas
    user_id, headers = new_user_key(first)
    assert second.get("/usage", headers=headers).status_code == 200
    [key] = second.get(f"/admin/users/{user_id}/keys", headers=admin_headers()).json()
    first.post(f"/admin/users/{user_id}/keys/{key['key_id']}/revoke", headers=admin_headers())
    assert second.get("/usage", headers=headers).status_code == 403


def test_voices_generations_and_batch_price_are_shared(
    make_replica: Callable[[str], TestClient], postgres_url: str
) -> None:
    first, second = make_replica("a"), make_replica("b")
    _, headers = new_user_key(first)
    voice_id = clone_voice(first, headers)
    assert second.get(f"/voices/{voice_id}/sample", headers=headers).status_code == 200

    kept = second.post(
        "/tts", headers=headers, json={"text": "Stored.", "voice_id": voice_id, "store": True}
    )
    assert kept.status_code == 200, kept.text
    stored = first.get(f"/getstored/{kept.headers['x-generation-id']}", headers=headers)
    assert stored.content == kept.content

    batch = {"texts": ["One.", "Two.", "Three."], "voice_id": voice_id}
    priced_first = first.post("/batchtts", headers=headers, json=batch)
    assert priced_first.status_code == 200, priced_first.text
    with create_engine(postgres_url).connect() as connection:
        discount = connection.execute(
            text("SELECT value FROM runtime_stats WHERE key = 'batch_discount_current'")
        ).scalar()
    assert discount is not None
    priced_second = second.post("/batchtts", headers=headers, json=batch)
    assert float(priced_second.headers["x-batch-discount-used"]) == round(discount, 3)

    usage = second.get("/usage", headers=headers).json()
    assert usage["tts_calls"] == 1 and usage["batch_calls"] == 2


def test_killing_one_replica_leaves_the_others_stream_untouched(
    tiny_models_dir: Path, tmp_path: Path, postgres_url: str
) -> None:
    """Two server processes on one database, a stream on each; A is killed with -9. B settles
    A's stream (INTERRUPTED, free) and hold once A's lease lapses, while B's own stream, held
    open by a client that pauses reading, stays STREAMING, then completes and is charged."""
    shared = {
        "DATABASE_URL": postgres_url,
        "MEDIA_DIR": str(tmp_path / "shared-media"),
        "LEASE_S": "6",  # a heartbeat stalled by two servers on two cores must not look dead
        "RECOVERY_GRACE_S": "3600",  # shared media: the sweep must wait for the other's files
    }
    database = create_engine(postgres_url)

    def rows(query: str, **params: object) -> list[tuple[object, ...]]:
        with database.connect() as connection:
            return [tuple(row) for row in connection.execute(text(query), params)]

    text_b = " ".join(f"Replica B sentence number {index}." for index in range(20))
    log = tmp_path / "servers.log"
    with (
        server_process(tiny_models_dir, tmp_path / "a", log, **shared) as (url_a, pid_a),
        server_process(tiny_models_dir, tmp_path / "b", log, **shared) as (url_b, _),
        httpx.Client(base_url=url_b, timeout=120) as client_b,
    ):
        _, headers = new_user_key(client_b)
        voice_id = clone_voice(client_b, headers)
        body_b = {"text": text_b, "voice_id": voice_id, "stream": True}
        with client_b.stream("POST", "/tts", headers=headers, json=body_b) as stream_b:
            assert stream_b.status_code == 200
            own_id = int(stream_b.headers["x-generation-id"])
            pieces = stream_b.iter_bytes()
            received = len(next(pieces))  # then pause: B's stream stays open meanwhile
            body_a = {"text": STREAM_TEXT, "voice_id": voice_id, "stream": True}
            stream_a = threading.Thread(target=post_quietly, args=(url_a, headers, "/tts", body_a))
            stream_a.start()
            others = "SELECT id FROM generations WHERE status = 'streaming' AND id <> :own"
            kill_when(lambda: rows(others, own=own_id), pid_a)
            [(dead_id,)] = rows(others, own=own_id)
            deadline = time.monotonic() + 60
            while rows(STATUS, id=dead_id) == [("streaming", 0)]:
                assert time.monotonic() < deadline, "B never settled A's stream"
                time.sleep(0.1)
            time.sleep(3)  # more rounds of B's recovery
            assert rows(STATUS, id=dead_id) == [("interrupted", 0)]
            # Untouched: still streaming with its hold, or (a fast engine filled the socket
            # buffers first) already finished and charged in full; never interrupted.
            # One statement: B may settle its stream between two.
            [(status, used, held)] = rows(
                "SELECT status, tokens_used, (SELECT COUNT(*) FROM reservations) "
                "FROM generations WHERE id = :id",
                id=own_id,
            )
            assert (status, used) in (("streaming", 0), ("ok", len(text_b)))
            assert held == (1 if status == "streaming" else 0)  # B's own hold only
            received += sum(len(piece) for piece in pieces)
        stream_a.join(timeout=60)
    assert received > 0
    assert rows(STATUS, id=own_id) == [("ok", len(text_b))]
    assert rows("SELECT id FROM reservations") == []
    assert rows("SELECT SUM(tokens_reserved) FROM users") == [(0,)]
    database.dispose()
