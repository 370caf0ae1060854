"""WS /v1/audio/speech/stream: text in as it arrives, audio out per complete sentence, cancel,
limits, and /tts's rules for auth, billing, quota and isolation."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf
import websockets
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect
from streamkit import ScriptedEngine, scheduler_of
from support import AppFactory, admin_headers, clone_voice, new_user_key

from conftest import LiveServer
from qwen3_tts_server.engine.base import Engine

URL = "/v1/audio/speech/stream"


class Received:
    """What a socket sent: its JSON events in order, and the audio bytes of each segment."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.audio: dict[int, bytearray] = {}
        self._segment: int | None = None

    def read_until(self, ws: Any, kind: str) -> dict[str, Any]:
        """Read messages until an event of type `kind` (returned)."""
        while True:
            message = ws.receive()
            if message["type"] == "websocket.close":
                raise AssertionError(f"closed before {kind}: {message}, after {self.events}")
            if message.get("bytes") is not None:
                assert self._segment is not None, "audio outside audio.start/audio.done"
                self.audio[self._segment] += message["bytes"]
                continue
            event = json.loads(message["text"])
            self.events.append(event)
            if event["type"] == "audio.start":
                self._segment = event["segment"]
                self.audio[event["segment"]] = bytearray()
            elif event["type"] == "audio.done":
                assert event["segment"] == self._segment
                self._segment = None
            if event["type"] == kind:
                return event

    def types(self) -> list[str]:
        return [event["type"] for event in self.events]


@pytest.fixture
def api(make_client: AppFactory, engine: Engine) -> TestClient:
    return make_client(load_engine=lambda: engine)


def _user(api: TestClient | httpx.Client, name: str = "Narrator") -> dict[str, str]:
    _, headers = new_user_key(api)
    clone_voice(api, headers, name=name)
    return headers


def _rows(tmp_path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        return db.execute("SELECT status, tokens_used FROM generations ORDER BY id").fetchall()


def test_each_sentence_is_spoken_once_complete_and_charged_like_tts(
    api: TestClient, tmp_path: Path
) -> None:
    headers = _user(api)
    got = Received()
    with api.websocket_connect(URL, headers=headers) as ws:
        ws.send_json({"type": "session.config", "voice": "Narrator", "format": "pcm"})
        created = got.read_until(ws, "session.created")
        assert created["session"]["sample_rate"] == 24000
        ws.send_json({"type": "input.text", "text": "Hello there. How"})
        # The first sentence is heard before the rest of the text even exists.
        assert got.read_until(ws, "audio.start")["text"] == "Hello there."
        first = got.read_until(ws, "audio.done")
        ws.send_json({"type": "input.text", "text": " are you"})
        ws.send_json({"type": "input.done"})  # no full stop: spoken on the flush
        assert got.read_until(ws, "audio.start")["text"] == "How are you"
        got.read_until(ws, "audio.done")
        ws.send_json({"type": "input.text", "text": "Goodbye."})
        ws.send_json({"type": "session.close"})
        done = got.read_until(ws, "session.done")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1000
    spoken = [event["text"] for event in got.events if event["type"] == "audio.start"]
    assert spoken == ["Hello there.", "How are you", "Goodbye."]
    assert first["usage"] == {"input_tokens": 12, "output_tokens": 0, "total_tokens": 12}
    total = len("Hello there.") + len("How are you") + len("Goodbye.")
    assert done == {
        "type": "session.done",
        "segments": 3,
        "usage": {"input_tokens": total, "output_tokens": 0, "total_tokens": total},
    }
    for index in range(3):
        assert len(got.audio[index]) > 0 and len(got.audio[index]) % 2 == 0
    usage = api.get("/usage", headers=headers).json()
    assert usage["tts_calls"] == 3 and usage["tokens_used_tts"] == total
    assert _rows(tmp_path) == [("ok", 12), ("ok", 11), ("ok", 8)]


def test_wav_at_another_sample_rate_with_a_preset_speaker(api: TestClient) -> None:
    _, headers = new_user_key(api)
    got = Received()
    with api.websocket_connect(URL, headers=headers) as ws:
        ws.send_json(
            {
                "type": "session.config",
                "speaker": "Aiden",
                "instructions": "Calm.",
                "format": "wav",
                "sample_rate": 16000,
                "language": "English",
            }
        )
        assert got.read_until(ws, "session.created")["session"]["sample_rate"] == 16000
        ws.send_json({"type": "input.text", "text": "One sentence. Two"})
        start = got.read_until(ws, "audio.start")
        assert (start["format"], start["sample_rate"]) == ("wav", 16000)
        got.read_until(ws, "audio.done")
    info = sf.info(io.BytesIO(bytes(got.audio[0])))
    assert (info.format, info.samplerate, info.channels) == ("WAV", 16000, 1)
    assert info.frames > 0


@pytest.fixture
def held(engine: Engine) -> Iterator[ScriptedEngine]:
    scripted = ScriptedEngine(engine, hold=1)
    yield scripted
    scripted.proceed.set()


def test_cancel_drops_queued_and_in_flight_audio_at_once(
    make_client: AppFactory, held: ScriptedEngine, tmp_path: Path
) -> None:
    api = make_client(load_engine=lambda: held, chunk_max_chars=20)  # a segment per sentence
    scheduler = scheduler_of(api.app)
    headers = _user(api)
    got = Received()
    with api.websocket_connect(URL, headers=headers) as ws:
        ws.send_json({"type": "session.config", "voice": "Narrator", "seed": 1})
        got.read_until(ws, "session.created")
        ws.send_json({"type": "input.text", "text": "First sentence. Second sentence. Third"})
        assert held.holding.wait(30)  # the first segment is in the model, the second queued
        deadline = time.monotonic() + 30
        while scheduler.queue_depth < 1:
            assert time.monotonic() < deadline, "the second segment never reached the queue"
            time.sleep(0.01)
        ws.send_json({"type": "cancel"})
        cancelled = got.read_until(ws, "cancelled")
        assert cancelled["segments"] == [0, 1]
        assert scheduler.queue_depth == 0  # withdrawn from the model's queue
        held.proceed.set()  # the model call that was running ends: its audio is dropped
        ws.send_json({"type": "input.text", "text": "After the barge-in."})
        ws.send_json({"type": "session.close"})
        got.read_until(ws, "session.done")
    spoken = [event["text"] for event in got.events if event["type"] == "audio.start"]
    assert spoken == ["After the barge-in."]  # nothing of the cancelled text, not "Third"
    assert got.events[-1]["segments"] == 1
    assert sorted(_rows(tmp_path)) == [("cancelled", 0), ("cancelled", 0), ("ok", 19)]
    assert api.get("/usage", headers=headers).json()["tokens_used_tts"] == 19


def test_handshake_takes_the_key_from_the_header_or_a_subprotocol_only(api: TestClient) -> None:
    user_id, headers = new_user_key(api)
    key = headers["Authorization"].removeprefix("Bearer ")
    with api.websocket_connect(URL, subprotocols=["qwen3-tts", f"bearer.{key}"]) as ws:
        assert ws.accepted_subprotocol == "qwen3-tts"  # the key is never echoed
        ws.send_json({"type": "input.text", "text": "Hi."})
        assert ws.receive_json()["error"]["message"] == "Send session.config first"

    refused = {
        "no key": {},
        "wrong key": {"headers": {"Authorization": "Bearer nope"}},
        "wrong subprotocol key": {"subprotocols": ["qwen3-tts", "bearer.nope"]},
    }
    for case, kwargs in refused.items():
        with pytest.raises(WebSocketDenialResponse) as denied:
            api.websocket_connect(URL, **kwargs).__enter__()
        assert denied.value.status_code == 401, case
        assert denied.value.json()["error"]["code"] == "invalid_api_key", case
    with pytest.raises(WebSocketDenialResponse) as in_url:  # even a valid key
        api.websocket_connect(f"{URL}?api_key={key}", headers=headers).__enter__()
    assert in_url.value.status_code == 401 and "URL" in in_url.value.json()["error"]["message"]

    keys = api.get(f"/admin/users/{user_id}/keys", headers=admin_headers()).json()
    path = f"/admin/users/{user_id}/keys/{keys[0]['key_id']}/revoke"
    assert api.post(path, headers=admin_headers()).is_success
    with pytest.raises(WebSocketDenialResponse) as revoked:
        api.websocket_connect(URL, headers=headers).__enter__()
    assert revoked.value.status_code == 401


def test_mistakes_are_error_events_and_the_session_goes_on(api: TestClient) -> None:
    alice = _user(api, "Secret")
    bob = _user(api, "Geoff")
    secret_id = api.get("/voices", headers=alice).json()[0]["voice_id"]
    got = Received()
    with api.websocket_connect(URL, headers=bob) as ws:
        for message, status, fragment in [
            ({"type": "session.config", "voice": str(secret_id)}, 404, "Your voices: Geoff."),
            ({"type": "session.config", "voice": "Geoff", "speaker": "ryan"}, 400, "exactly one"),
            ({"type": "session.config", "voice": "Geoff", "format": "mp3"}, 400, "format"),
            ({"type": "session.config", "voice": "Geoff", "language": "xx"}, 400, "language"),
            ({"type": "session.config", "voice": "Geoff", "instructions": "Hi"}, 400, "cloned"),
            ({"type": "session.config", "voice_id": 1}, 400, "voice_id"),
            ({"type": "nonsense"}, 400, "Invalid message"),
            ({"type": "cancel"}, 400, "session.config first"),
        ]:
            ws.send_json(message)
            error = got.read_until(ws, "error")["error"]
            assert error["status"] == status and fragment in error["message"], (message, error)
        ws.send_text("not json")
        assert got.read_until(ws, "error")["error"]["status"] == 400
        ws.send_bytes(b"\x00\x01")
        assert "binary" in got.read_until(ws, "error")["error"]["message"]
        ws.send_json({"type": "session.config", "voice": "Geoff"})
        got.read_until(ws, "session.created")
        ws.send_json({"type": "session.config", "voice": "Geoff"})
        assert "configured already" in got.read_until(ws, "error")["error"]["message"]
        ws.send_json({"type": "input.text", "text": "Still here."})
        ws.send_json({"type": "session.close"})
        assert got.read_until(ws, "session.done")["segments"] == 1


def test_quota_applies_to_each_segment(api: TestClient, tmp_path: Path) -> None:
    user_id = api.post("/admin/users", headers=admin_headers(), json={"token_quota": 60}).json()[
        "user_id"
    ]
    code = api.post(f"/admin/users/{user_id}/invites", headers=admin_headers()).json()
    key = api.post("/auth/exchange-invite", json={"invite_code": code["invite_code"]}).json()
    headers = {"Authorization": f"Bearer {key['api_key']}"}
    clone_voice(api, headers, name="Narrator")  # 30 tokens of the 60
    got = Received()
    with api.websocket_connect(URL, headers=headers) as ws:
        ws.send_json({"type": "session.config", "voice": "Narrator"})
        got.read_until(ws, "session.created")
        ws.send_json({"type": "input.text", "text": "Twenty characters ok."})
        ws.send_json({"type": "input.done"})
        got.read_until(ws, "audio.done")
        ws.send_json({"type": "input.text", "text": "This one is too long to fit in."})
        ws.send_json({"type": "input.done"})
        error = got.read_until(ws, "error")
        assert error["segment"] == 1 and error["error"]["status"] == 402
        ws.send_json({"type": "session.close"})
        assert got.read_until(ws, "session.done")["segments"] == 1
    assert _rows(tmp_path) == [("ok", 21)]  # the refused segment left no row


@pytest.mark.parametrize(
    ("limits", "fragment"),
    [
        ({"realtime_idle_s": 2.0}, "no message for 2 s"),  # time enough to send the config
        ({"realtime_max_session_s": 1.0, "realtime_idle_s": 30}, "limit of 1 s"),
    ],
)
def test_idle_and_total_time_limits_close_the_session(
    make_client: AppFactory, engine: Engine, limits: dict[str, float], fragment: str
) -> None:
    api = make_client(load_engine=lambda: engine, **limits)
    headers = _user(api)
    with api.websocket_connect(URL, headers=headers) as ws:
        ws.send_json({"type": "session.config", "voice": "Narrator"})
        assert ws.receive_json()["type"] == "session.created"
        if "realtime_max_session_s" in limits:  # busy talking does not stop the clock
            for _ in range(20):
                ws.send_json({"type": "input.text", "text": "Keep going"})
        while (event := ws.receive_json())["type"] != "error":
            pass
        assert event["error"]["status"] == 408 and fragment in event["error"]["message"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1000


def _readme_client() -> str:
    """The README's realtime client, verbatim: the python block after `realtime_client.py`."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    after = readme[readme.index("`realtime_client.py`") :]
    start = after.index("```python\n") + len("```python\n")
    return after[start : after.index("```", start)]


def test_the_readme_client_runs_against_a_real_server(
    live_server: Callable[..., LiveServer], engine: Engine, tmp_path: Path
) -> None:
    script = tmp_path / "realtime_client.py"
    script.write_text(_readme_client(), encoding="utf-8")
    with live_server(load_engine=lambda: engine) as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as http:
            _, headers = new_user_key(http)
            env = {
                **os.environ,
                "BASE": server.url,
                "API_KEY": headers["Authorization"].removeprefix("Bearer "),
            }
            result = subprocess.run(
                [sys.executable, str(script)],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            usage = http.get("/usage", headers=headers).json()
    lines = result.stdout.splitlines()
    # "Hello!", "This text arrives in pieces, as a model writes it." and "Bye.": 60 characters.
    assert lines[0].startswith("session.created") and lines[-1].startswith("session.done")
    assert "'total_tokens': 60" in lines[-1]
    assert [line.split()[:2] for line in lines if line.startswith("audio.done")] == [
        ["audio.done", "0"],
        ["audio.done", "1"],
        ["audio.done", "2"],
    ]
    pcm = (tmp_path / "speech.pcm").read_bytes()
    assert len(pcm) > 0 and len(pcm) % 2 == 0
    assert usage["tts_calls"] == 3 and usage["tokens_used_tts"] == 60


def _held_reservations(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        return int(db.execute("SELECT count(*) FROM reservations").fetchone()[0])


def test_cancel_while_a_segment_is_reserving_records_it_and_holds_nothing(
    api: TestClient, tmp_path: Path
) -> None:
    """The reservation runs on a worker thread a cancel cannot stop: here it is stuck behind
    another writer's lock on the database when the cancel arrives, and made after it."""
    headers = _user(api)
    got = Received()
    lock = sqlite3.connect(tmp_path / "data" / "db.sqlite3", isolation_level=None)
    with api.websocket_connect(URL, headers=headers) as ws:
        ws.send_json({"type": "session.config", "voice": "Narrator"})
        got.read_until(ws, "session.created")
        lock.execute("BEGIN IMMEDIATE")  # the segment's reservation now waits for the lock
        ws.send_json({"type": "input.text", "text": "Never spoken."})
        ws.send_json({"type": "input.done"})
        ws.send_json({"type": "cancel"})
        time.sleep(0.5)  # the cancel waits for the reservation, which waits for the lock
        lock.execute("ROLLBACK")
        assert got.read_until(ws, "cancelled")["segments"] == [0]
        ws.send_json({"type": "session.close"})
        done = got.read_until(ws, "session.done")
    lock.close()
    assert "audio.start" not in got.types()
    assert done["segments"] == 0 and done["usage"]["total_tokens"] == 0
    assert _rows(tmp_path) == [("cancelled", 0)]  # reserved, then recorded as cancelled
    assert _held_reservations(tmp_path) == 0  # released at once, not left for recovery
    usage = api.get("/usage", headers=headers).json()
    assert usage["tokens_used_tts"] == 0


def test_a_client_gone_during_session_close_pays_for_nothing_unsent(
    live_server: Callable[..., LiveServer], held: ScriptedEngine, tmp_path: Path
) -> None:
    """`session.close` waits for the audio still being made; a client that leaves meanwhile
    is charged for nothing it did not receive, and nothing stays held or open."""
    with live_server(load_engine=lambda: held, chunk_max_chars=20) as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as http:
            headers = _user(http)

            async def leave_during_close() -> None:
                ws_url = server.url.replace("http", "ws") + URL
                async with websockets.connect(ws_url, additional_headers=headers) as ws:
                    await ws.send(json.dumps({"type": "session.config", "voice": "Narrator"}))
                    assert json.loads(await ws.recv())["type"] == "session.created"
                    text = "First sentence. Second sentence."
                    await ws.send(json.dumps({"type": "input.text", "text": text}))
                    await asyncio.to_thread(held.holding.wait, 30)  # segment 0 in the model
                    await ws.send(json.dumps({"type": "session.close"}))
                    await asyncio.sleep(0.2)  # the server is waiting in session.close
                # the socket is closed: now the model finishes
                held.proceed.set()

            asyncio.run(leave_during_close())
            deadline = time.monotonic() + 60
            while _open_work(tmp_path) != (0, 0):
                assert time.monotonic() < deadline, f"still open: {_open_work(tmp_path)}"
                time.sleep(0.1)
            usage = http.get("/usage", headers=headers).json()
    assert _rows(tmp_path) == [("cancelled", 0), ("cancelled", 0)]  # no audio reached it
    assert usage["tokens_used_tts"] == 0


def _open_work(tmp_path: Path) -> tuple[int, int]:
    """(generation rows still streaming, reservations held)."""
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        [(streaming,)] = db.execute("SELECT count(*) FROM generations WHERE status = 'streaming'")
    return streaming, _held_reservations(tmp_path)
