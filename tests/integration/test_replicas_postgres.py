"""Scale-out: several replicas of the server on one PostgreSQL database and one media folder.

Each replica is a full app with its own scheduler and its own engine instance (the tiny model
loaded again, as a second process would); they share only the database and MEDIA_DIR.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from support import AppFactory, admin_headers, clone_voice, new_user_key

from qwen3_tts_server.engine.qwen import QwenEngine
from qwen3_tts_server.engine.stepper import StepEngine


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
    make_client: AppFactory, postgres_url: str, tmp_path: Path, tiny_models_dir: Path
) -> None:
    def replica(name: str) -> TestClient:
        stock = QwenEngine.load(tiny_models_dir / "base", device="cpu", max_new_tokens_cap=12)
        engine = StepEngine(stock)
        return make_client(
            load_engine=lambda: engine,
            data_dir=tmp_path / name,
            database_url=postgres_url,
            media_dir=tmp_path / "shared-media",
        )

    first, second = replica("a"), replica("b")
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
