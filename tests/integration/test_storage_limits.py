"""Reference audio is accounted for: per-user storage and voice-count limits, a clone minimum.

Before, a user with token_quota=3 could store three 20 MiB references (1-character
transcripts): nothing limited stored bytes or voices, and a clone cost len(transcript). Now a
clone reserves its upload's bytes and a voice slot with its tokens before any work (413 past
MAX_USER_STORAGE_BYTES, 403 past MAX_USER_VOICES), costs at least CLONE_MIN_TOKENS, and a
deleted voice gives its room back.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from quotakit import CountingEngine, PaidCall, clone, limited_user, race, totals
from support import AppFactory, reference_audio

from qwen3_tts_server.engine.base import Engine

UPLOAD = reference_audio()  # a 2 s WAV
SIZE = len(UPLOAD)


def _db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'db.sqlite3'}"


def _voice_rows(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        [(count,)] = db.execute("SELECT COUNT(*) FROM voices").fetchall()
    return int(count)


@pytest.fixture
def counting(engine: Engine) -> CountingEngine:
    return CountingEngine(engine)


def test_the_voice_limit_is_a_403_until_a_voice_is_deleted(
    make_client: AppFactory, counting: CountingEngine, tmp_path: Path
) -> None:
    api = make_client(load_engine=lambda: counting, max_user_voices=2)
    user_id, headers = limited_user(api, None)
    first = clone(api, headers, name="a").json()["voice_id"]
    assert clone(api, headers, name="b").status_code == 200
    counting.reset()

    refused = clone(api, headers, name="c")
    assert refused.status_code == 403
    assert "Voice limit reached: you have 2 voices" in refused.json()["detail"]
    assert counting.prompts == 0 and _voice_rows(tmp_path) == 2  # no work, nothing written

    assert api.delete(f"/voices/{first}", headers=headers).status_code == 200
    assert clone(api, headers, name="c").status_code == 200
    state = totals(_db(tmp_path), user_id)
    assert state["voice_count"] == 2 and state["storage_bytes"] == 2 * SIZE


def test_the_storage_limit_is_a_413_and_deleting_frees_room(
    make_client: AppFactory, counting: CountingEngine, tmp_path: Path
) -> None:
    api = make_client(load_engine=lambda: counting, max_user_storage_bytes=2 * SIZE + SIZE // 2)
    user_id, headers = limited_user(api, None)
    first = clone(api, headers, name="a").json()["voice_id"]
    assert clone(api, headers, name="b", upload=UPLOAD).status_code == 200  # same bytes: counted
    counting.reset()

    refused = clone(api, headers, name="c")
    assert refused.status_code == 413
    detail = refused.json()["detail"]
    assert f"Storage limit reached: this reference needs {SIZE} bytes" in detail
    assert f"{SIZE // 2} of your" in detail
    assert counting.prompts == 0 and _voice_rows(tmp_path) == 2
    assert api.get("/usage", headers=headers).json()["tokens_used_voices"] == 60

    api.post(f"/voices/{first}/delete", headers=headers)
    assert clone(api, headers, name="c").status_code == 200
    assert totals(_db(tmp_path), user_id)["storage_bytes"] == 2 * SIZE


def test_racing_clones_never_pass_the_storage_limit(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    api = make_client(load_engine=lambda: engine, max_user_storage_bytes=2 * SIZE + SIZE // 2)
    user_id, headers = limited_user(api, None)
    call = PaidCall("clone", 30, False, lambda client, auth, _: clone(client, auth))
    statuses = sorted(response.status_code for response in race([api], headers, call, 0, 6))
    assert statuses == [200, 200, 413, 413, 413, 413]
    state = totals(_db(tmp_path), user_id)
    assert state["storage_bytes"] == 2 * SIZE and state["voice_count"] == 2
    assert state["reservations"] == 0 and _voice_rows(tmp_path) == 2


def test_a_clone_costs_at_least_the_minimum(make_client: AppFactory, engine: Engine) -> None:
    api = make_client(load_engine=lambda: engine)  # CLONE_MIN_TOKENS: 20
    _, headers = limited_user(api, None)
    cheap = clone(api, headers, transcript="Hi")
    assert cheap.status_code == 200 and cheap.json()["tokens_used"] == 20
    assert api.get("/usage", headers=headers).json()["tokens_used_voices"] == 20
    # The user: a quota of 3 tokens no longer buys any clone.
    _, poor = limited_user(api, 3)
    refused = clone(api, poor, transcript="x")
    assert refused.status_code == 402 and "needs 20 tokens" in refused.json()["detail"]


def test_designed_references_count_and_a_full_storage_refuses_new_voices_not_speech(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    api: TestClient = make_client(load_engine=lambda: engine, max_user_storage_bytes=SIZE + 1)
    user_id, headers = limited_user(api, None)
    voice_id = clone(api, headers).json()["voice_id"]
    design = {"name": "d", "description": "A calm voice.", "language": "English"}
    designed = api.post("/designvoice", headers=headers, json=design)
    assert designed.status_code == 200, designed.text  # room was left when it started
    flac = api.get(f"/voices/{designed.json()['voice_id']}/sample", headers=headers).content
    assert totals(_db(tmp_path), user_id)["storage_bytes"] == SIZE + len(flac)

    assert api.post("/designvoice", headers=headers, json=design).status_code == 413
    assert clone(api, headers).status_code == 413
    spoken = api.post("/tts", headers=headers, json={"text": "Still fine.", "voice_id": voice_id})
    assert spoken.status_code == 200
