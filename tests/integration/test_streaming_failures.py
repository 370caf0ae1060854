"""Streams that fail or are left, recorded as such, free, their queued work withdrawn; and the
first audio leaving while the rest is still being synthesised (shown without timing, by holding
the second chunk's admission until the client has audio).

Real servers on loopback ports where a client must really go away; the engine is the session's,
with a script that holds or fails given admissions (one per sentence chunk).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from streamkit import (
    SETTINGS,
    TEXT,
    ScriptedEngine,
    assert_free,
    generation_row,
    live_user,
    open_db,
    scheduler_of,
    stream_body,
    wait_until_settled,
)
from support import AppFactory, clone_voice, new_user_key

from conftest import LiveServer
from qwen3_tts_server.engine.base import Engine


@pytest.fixture
def scripted(engine: Engine) -> Iterator[Callable[..., ScriptedEngine]]:
    """Make ScriptedEngines; any held call is released at teardown so apps can stop."""
    made: list[ScriptedEngine] = []

    def make(**script: int) -> ScriptedEngine:
        made.append(ScriptedEngine(engine, **script))
        return made[-1]

    yield make
    for scripted_engine in made:
        scripted_engine.proceed.set()


def test_first_chunk_failure_is_a_json_error_recorded_free(
    make_client: AppFactory, scripted: Callable[..., ScriptedEngine], tmp_path: Path
) -> None:
    failing = scripted(fail=1)
    api = make_client(load_engine=lambda: failing, **SETTINGS)
    _, headers = new_user_key(api)
    voice_id = clone_voice(api, headers)
    response = api.post("/tts", headers=headers, json=stream_body(voice_id=voice_id))
    assert response.status_code == 400
    assert "scripted failure" in response.json()["detail"]
    with open_db(tmp_path) as db:
        rows = db.execute("SELECT status, tokens_used, error FROM generations").fetchall()
    assert rows == [("error", 0, "scripted failure of call 1")]
    assert api.get("/usage", headers=headers).json()["tts_calls"] == 0


def test_model_failure_mid_stream_cuts_the_stream_and_costs_nothing(
    live_server: Callable[..., LiveServer],
    scripted: Callable[..., ScriptedEngine],
    tmp_path: Path,
) -> None:
    with live_user(live_server, scripted(fail=2)) as (_, http, headers, voice_id):
        body = stream_body(voice_id=voice_id, format="pcm")
        with http.stream("POST", "/tts", headers=headers, json=body) as response:
            assert response.status_code == 200
            generation_id = response.headers["x-generation-id"]
            # The body ends without its last chunk: the client can tell it is incomplete.
            with pytest.raises(httpx.RemoteProtocolError):
                response.read()
        row = generation_row(tmp_path, generation_id)
        assert row["status"] == "error" and row["tokens_used"] == 0
        assert row["error"] == "scripted failure of call 2"
        assert_free(http, headers, voice_id)


def test_first_audio_arrives_while_the_rest_is_still_being_synthesised(
    live_server: Callable[..., LiveServer],
    scripted: Callable[..., ScriptedEngine],
    tmp_path: Path,
) -> None:
    held = scripted(hold=2)  # the second chunk waits until the client has audio
    with live_user(live_server, held) as (_, http, headers, voice_id):
        body = stream_body(voice_id=voice_id, format="pcm")
        with http.stream("POST", "/tts", headers=headers, json=body) as response:
            assert response.status_code == 200
            assert response.headers["transfer-encoding"] == "chunked"
            received = response.iter_raw()
            first = next(received)
            assert first  # audio, received while the second chunk cannot start:
            assert held.holding.wait(30) and not held.proceed.is_set()
            assert held.calls == 2
            held.proceed.set()
            audio = first + b"".join(received)
        assert held.calls == 5
        row = generation_row(tmp_path, response.headers["x-generation-id"])
        assert row["status"] == "ok"
        assert row["audio_seconds"] == pytest.approx(len(audio) / 2 / 24000)
        assert http.get("/usage", headers=headers).json()["tts_calls"] == 1


def test_client_leaving_mid_stream_pays_for_what_it_was_sent_and_withdraws_queued_work(
    live_server: Callable[..., LiveServer],
    scripted: Callable[..., ScriptedEngine],
    tmp_path: Path,
) -> None:
    held = scripted(hold=2)
    with live_user(live_server, held) as (server, http, headers, voice_id):
        scheduler = scheduler_of(server.server.config.app)
        with http.stream(
            "POST", "/tts", headers=headers, json=stream_body(voice_id=voice_id)
        ) as response:
            assert response.status_code == 200
            generation_id = response.headers["x-generation-id"]
            # Keep the iterator: a dropped one is closed at once, and closing it closes the
            # connection, which would be this client leaving before the second chunk started.
            received = response.iter_raw()
            assert next(received)
            assert held.holding.wait(30)
        # Closed with the second chunk being admitted and three more queued: the first chunk's
        # audio was sent, so it is charged (the stream-billing rule); the rest is released.
        row = wait_until_settled(tmp_path, generation_id)
        first_chunk = TEXT.index(" The second")
        assert row["status"] == "cancelled" and row["tokens_used"] == first_chunk
        assert row["audio_seconds"] > 0
        held.proceed.set()  # the loop goes on and withdraws the job between two steps
        deadline = time.monotonic() + 30
        while scheduler.stats.jobs_cancelled == 0:
            assert time.monotonic() < deadline, "the job was never withdrawn"
            time.sleep(0.02)
        assert scheduler.queue_depth == 0 and scheduler.active == 0
        assert scheduler.stats.finish_reasons["cancelled"] == 1  # the second chunk's slot
        usage = http.get("/usage", headers=headers).json()
        assert usage["tts_calls"] == 1 and usage["tokens_used_tts"] == first_chunk
    assert held.calls == 2  # the three queued chunks never ran


def test_client_gone_before_the_first_audio_is_cancelled_too(
    live_server: Callable[..., LiveServer],
    scripted: Callable[..., ScriptedEngine],
    tmp_path: Path,
) -> None:
    held = scripted(hold=1)
    with live_user(live_server, held) as (server, _, headers, voice_id):
        body = f'{{"text": "{TEXT}", "voice_id": {voice_id}, "stream": true}}'.encode()
        request = (
            f"POST /tts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: {headers['Authorization']}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            raw.sendall(request + body)
            assert held.holding.wait(30)  # the first chunk is being admitted
        held.proceed.set()  # ... for a client that has gone
        with open_db(tmp_path) as db:
            [(generation_id,)] = db.execute("SELECT id FROM generations")
        row = wait_until_settled(tmp_path, generation_id)
        assert row["status"] == "cancelled" and row["tokens_used"] == 0
