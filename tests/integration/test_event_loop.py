"""No database work on the event loop: a query there stalls every request the process serves
(before, quota aggregation, the batch price's row lock and OpenAI voice resolution ran inside
`async` handlers).

Every SQL statement the app executes while the test drives each route is checked for the
thread it runs on: one that runs where an asyncio loop is running is a violation.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from quotakit import DESCRIPTION, TEXT_40, clone, limited_user
from sqlalchemy import Engine as DbEngine
from sqlalchemy import event
from support import AppFactory, admin_headers

from qwen3_tts_server.engine.base import Engine


def _on_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
def statements_on_the_loop() -> Iterator[list[str]]:
    """SQL statements executed on a thread that runs an event loop (every engine, from now)."""
    found: list[str] = []
    lock = threading.Lock()

    def check(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if _on_a_loop():
            with lock:
                found.append(statement.split("\n")[0][:120])

    event.listen(DbEngine, "before_cursor_execute", check)
    yield found
    event.remove(DbEngine, "before_cursor_execute", check)


def test_no_route_runs_sql_on_the_event_loop(
    make_client: AppFactory, engine: Engine, statements_on_the_loop: list[str]
) -> None:
    api = make_client(load_engine=lambda: engine)  # started: lifespan work is not a request
    statements_on_the_loop.clear()

    user_id, headers = limited_user(api, 100_000)
    voice = clone(api, headers, name="Geoff").json()["voice_id"]
    designed = api.post(
        "/designvoice",
        headers=headers,
        json={"name": "d", "description": DESCRIPTION, "language": "English"},
    ).json()["voice_id"]
    speak = {"text": TEXT_40, "voice_id": voice, "store": True}
    stored = api.post("/tts", headers=headers, json=speak)
    assert stored.status_code == 200, stored.text
    assert api.post("/tts", headers=headers, json={**speak, "stream": True}).status_code == 200
    batch = {"texts": ["One.", "Two."], "voice_id": voice}
    assert api.post("/batchtts", headers=headers, json=batch).status_code == 200
    openai = {"model": "tts-1", "input": TEXT_40, "voice": "Geoff"}
    assert api.post("/v1/audio/speech", headers=headers, json=openai).status_code == 200
    refused = api.post("/tts", headers=headers, json={"text": "x" * 200_000, "voice_id": voice})
    assert refused.status_code in (400, 422)
    for path in (
        "/usage",
        "/voices",
        f"/voices/{voice}",
        f"/voices/{voice}/sample",
        f"/getstored/{stored.headers['x-generation-id']}",
    ):
        assert api.get(path, headers=headers).status_code == 200, path
    assert api.delete(f"/voices/{designed}", headers=headers).status_code == 200
    assert api.get("/admin/users", headers=admin_headers()).status_code == 200
    assert api.get(f"/admin/users/{user_id}/keys", headers=admin_headers()).status_code == 200
    assert api.get("/ready").status_code == 200

    assert statements_on_the_loop == []
