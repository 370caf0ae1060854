"""Streamed /tts and /v1/audio/speech over HTTP with the tiny real-architecture model.

What must hold: the first audio leaves while the rest of the text is still being synthesised
(shown without timing, by holding the model's second call until the client has audio); the
stream is the first chunk's audio, then the rest joined exactly as /tts joins sentences; every
client error is a JSON 4xx before any audio; only a complete stream is charged; a stream that
fails or is left early is recorded as such, free, and its queued work is withdrawn.
"""

from __future__ import annotations

import io
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from support import AppFactory, admin_headers, clone_voice, new_user_key

from conftest import LiveServer
from qwen3_tts_server.engine.base import (
    Audio,
    Engine,
    EngineError,
    InvalidInput,
    Sampling,
    SynthItem,
)
from qwen3_tts_server.engine.scheduler import Scheduler
from qwen3_tts_server.engine.textsplit import split_text
from qwen3_tts_server.services.synthesis import join_sentences

#: Five sentences of under 20 characters: with CHUNK_MAX_CHARS=20 each is its own chunk, and
#: with ENGINE_MAX_BATCH=2 the stream makes three model calls: [1], [2, 3], [4, 5].
TEXT = "The first sentence. The second one. A third sentence. Then a fourth. And the fifth."
SETTINGS: dict[str, Any] = {"chunk_max_chars": 20, "engine_max_batch": 2}
CALLS = [[0], [1, 2], [3, 4]]
#: How long a held model call waits for the test before failing (only reached on a bug).
HOLD_LIMIT_S = 60.0


class ScriptedEngine:
    """The session engine, with a script for its synthesize calls (numbered from 1, warm-up
    not counted): call `hold` waits until the test sets `release`; call `fail` raises."""

    def __init__(self, inner: Engine, *, hold: int | None = None, fail: int | None = None):
        self.inner = inner
        self.hold = hold
        self.fail = fail
        self.calls = 0
        self.holding = threading.Event()
        self.release = threading.Event()

    def synthesize(self, items: Sequence[SynthItem], sampling: Sampling) -> list[Audio]:
        self.calls += 1
        if self.calls == self.fail:
            raise InvalidInput(f"scripted failure of call {self.calls}")
        if self.calls == self.hold:
            self.holding.set()
            if not self.release.wait(HOLD_LIMIT_S):
                raise EngineError("the test never released the held call")
        return self.inner.synthesize(items, sampling)

    def __getattr__(self, name: str) -> Any:
        """Everything else is the real engine's."""
        return getattr(self.inner, name)


@pytest.fixture
def scripted(engine: Engine) -> Iterator[Callable[..., ScriptedEngine]]:
    """Make ScriptedEngines; any held call is released at teardown so apps can stop."""
    made: list[ScriptedEngine] = []

    def make(**script: int) -> ScriptedEngine:
        made.append(ScriptedEngine(engine, **script))
        return made[-1]

    yield make
    for scripted_engine in made:
        scripted_engine.release.set()


@contextmanager
def _live_user(
    live_server: Callable[..., LiveServer], engine: Engine
) -> Iterator[tuple[LiveServer, httpx.Client, dict[str, str], int]]:
    """A real server on `engine` with SETTINGS, and a user with a voice: (server, client,
    auth headers, voice id)."""
    with live_server(load_engine=lambda: engine, **SETTINGS) as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as http:
            _, headers = new_user_key(http)
            yield server, http, headers, clone_voice(http, headers)


@pytest.fixture
def api(make_client: AppFactory, engine: Engine) -> TestClient:
    return make_client(load_engine=lambda: engine, **SETTINGS)


@pytest.fixture
def user(api: TestClient) -> tuple[dict[str, str], int]:
    _, headers = new_user_key(api)
    return headers, clone_voice(api, headers)


def _stream(**fields: Any) -> dict[str, Any]:
    return {"text": TEXT, "stream": True, "format": "wav", **fields}


def _db(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "data" / "db.sqlite3")


def _generation(tmp_path: Path, generation_id: int | str) -> dict[str, Any]:
    with _db(tmp_path) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM generations WHERE id = ?", (int(generation_id),)).fetchone()
    return dict(row)


def _scheduler(app: Any) -> Scheduler:
    scheduler: Scheduler = app.state.context.runtime.loaded().scheduler
    return scheduler


def _wav_samples(data: bytes) -> np.ndarray:
    samples, _ = sf.read(io.BytesIO(data), dtype="int16")
    return np.asarray(samples)


def _assert_free(http: httpx.Client, headers: dict[str, str], voice_id: int) -> None:
    """Nothing charged, no call counted, no use of the voice."""
    usage = http.get("/usage", headers=headers).json()
    assert usage["tts_calls"] == 0 and usage["tokens_used_tts"] == 0
    assert http.get(f"/voices/{voice_id}", headers=headers).json()["use_count"] == 0


def _wait_until_settled(tmp_path: Path, generation_id: int | str) -> dict[str, Any]:
    """The server notices a client that went away asynchronously: wait for its verdict."""
    deadline = time.monotonic() + 30
    while (row := _generation(tmp_path, generation_id))["status"] == "streaming":
        assert time.monotonic() < deadline, "the abandoned stream was never settled"
        time.sleep(0.05)
    return row


def test_text_makes_the_chunks_the_tests_assume() -> None:
    assert len(split_text(TEXT, SETTINGS["chunk_max_chars"])) == 5


def test_streamed_wav_is_the_first_chunk_then_the_rest_joined_like_tts(
    api: TestClient, user: tuple[dict[str, str], int], engine: Engine, tmp_path: Path
) -> None:
    headers, voice_id = user
    scheduler = _scheduler(api.app)
    calls_before = scheduler.stats.batches_run
    response = api.post("/tts", headers=headers, json=_stream(voice_id=voice_id, seed=7))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["x-tokens-used"] == str(len(TEXT))
    assert response.headers["x-sample-rate"] == "24000"
    assert int(response.headers["x-first-audio-ms"]) > 0
    assert "x-latency-ms" not in response.headers  # not known when the headers leave
    assert "content-length" not in response.headers

    # A streaming header ("size unknown"), which libsndfile reads to the end of the body.
    assert response.content[4:8] == response.content[40:44] == b"\xff" * 4  # RIFF, data sizes
    info = sf.info(io.BytesIO(response.content))
    assert (info.format, info.subtype, info.samplerate) == ("WAV", "PCM_16", 24000)
    streamed = _wav_samples(response.content)
    assert streamed.size == (len(response.content) - 44) // 2

    # Three model calls (the first chunk alone, then at most ENGINE_MAX_BATCH each) whose
    # audio, joined as /tts joins sentences, is sample for sample the stream.
    assert scheduler.stats.batches_run - calls_before == 3
    assert list(scheduler.stats.last_batch_sizes)[-3:] == [1, 2, 2]
    with _db(tmp_path) as db:
        [(prompt,)] = db.execute("SELECT prompt FROM voices WHERE id = ?", (voice_id,))
    chunks = split_text(TEXT, SETTINGS["chunk_max_chars"])
    sampling = Sampling(temperature=1.0, seed=7)
    parts = [
        audio
        for call in CALLS
        for audio in engine.synthesize(
            [SynthItem(chunks[i], "auto", prompt) for i in call], sampling
        )
    ]
    expected = join_sentences(parts)
    buffer = io.BytesIO()
    sf.write(buffer, expected.samples, expected.sample_rate, format="RAW", subtype="PCM_16")
    assert np.array_equal(streamed, np.frombuffer(buffer.getvalue(), dtype="<i2"))

    # Seeded streams are reproducible.
    again = api.post("/tts", headers=headers, json=_stream(voice_id=voice_id, seed=7))
    assert again.content == response.content


def test_a_one_chunk_text_streams_exactly_its_tts_audio(
    api: TestClient, user: tuple[dict[str, str], int]
) -> None:
    """One chunk is one model call either way. (Longer texts are grouped into calls
    differently, so their seeded audio differs from /tts's: compared to the model above.)"""
    headers, voice_id = user
    body = {"text": "Only one chunk.", "voice_id": voice_id, "seed": 5}
    whole = api.post("/tts", headers=headers, json=body)
    streamed = api.post("/tts", headers=headers, json={**body, "stream": True})
    assert whole.status_code == streamed.status_code == 200
    assert np.array_equal(_wav_samples(streamed.content), _wav_samples(whole.content))


def test_stream_is_charged_once_complete_like_tts(
    api: TestClient, user: tuple[dict[str, str], int], tmp_path: Path
) -> None:
    headers, voice_id = user
    response = api.post("/tts", headers=headers, json=_stream(voice_id=voice_id, format="pcm"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/pcm"
    row = _generation(tmp_path, response.headers["x-generation-id"])
    assert row["status"] == "ok" and row["error"] is None
    assert row["tokens_used"] == row["chars"] == len(TEXT)
    assert row["latency_ms"] >= int(response.headers["x-first-audio-ms"])
    assert row["audio_seconds"] == pytest.approx(len(response.content) / 2 / 24000)
    assert row["input_text"] is None and row["audio_sha256"] is None  # store=false
    usage = api.get("/usage", headers=headers).json()
    assert usage["tts_calls"] == 1 and usage["tokens_used_tts"] == len(TEXT)
    assert usage["audio_seconds_total"] == pytest.approx(row["audio_seconds"], abs=1e-3)
    assert api.get(f"/voices/{voice_id}", headers=headers).json()["use_count"] == 1
    with _db(tmp_path) as db:
        keys = {key for (key,) in db.execute("SELECT key FROM runtime_stats")}
    assert "single_latency_per_char_ms" in keys  # the single-request calibration saw it


@pytest.mark.parametrize("fmt", ["wav", "pcm"])
def test_store_true_keeps_the_whole_streamed_audio(
    api: TestClient, user: tuple[dict[str, str], int], fmt: str
) -> None:
    headers, voice_id = user
    response = api.post(
        "/tts", headers=headers, json=_stream(voice_id=voice_id, format=fmt, store=True)
    )
    assert response.status_code == 200
    stored = api.get(f"/getstored/{response.headers['x-generation-id']}", headers=headers)
    assert stored.status_code == 200
    assert stored.headers["content-type"] == response.headers["content-type"]
    if fmt == "pcm":
        assert stored.content == response.content
    else:  # a complete WAV file now (real sizes), with the same samples
        assert struct.unpack("<I", stored.content[40:44])[0] == len(stored.content) - 44
        assert np.array_equal(_wav_samples(stored.content), _wav_samples(response.content))


def test_store_false_stream_keeps_no_audio(
    api: TestClient, user: tuple[dict[str, str], int], tmp_path: Path
) -> None:
    headers, voice_id = user
    media = tmp_path / "data" / "media"
    before = {path for path in media.rglob("*") if path.is_file()}
    response = api.post("/tts", headers=headers, json=_stream(voice_id=voice_id))
    assert response.status_code == 200
    assert {path for path in media.rglob("*") if path.is_file()} == before
    generation_id = response.headers["x-generation-id"]
    assert api.get(f"/getstored/{generation_id}", headers=headers).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"format": "mp3"}, 400, "streaming supports pcm, wav"),
        ({"format": "OGG"}, 400, "streaming supports pcm, wav"),
        ({"format": "flac"}, 400, "streaming supports pcm, wav"),
        ({"format": "opus"}, 400, "streaming supports pcm, wav"),
        ({"format": "aac"}, 400, "streaming supports pcm, wav"),
        ({"format": "m4a"}, 400, "Unsupported format"),
        ({"text": "   "}, 400, "Text must not be empty"),
        ({"text": "x" * 3001}, 400, "Text too long (max 3000)"),
        ({"language": "Klingon"}, 400, "english"),
        ({"voice_id": 987654}, 404, "Voice not found"),
        ({"stream": "sometimes"}, 422, ""),
    ],
)
def test_stream_refusals_are_json_errors_before_any_work(
    api: TestClient,
    user: tuple[dict[str, str], int],
    tmp_path: Path,
    body: dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    headers, voice_id = user
    batches_before = _scheduler(api.app).stats.batches_run
    response = api.post("/tts", headers=headers, json=_stream(**{"voice_id": voice_id, **body}))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert fragment in str(response.json()["detail"])
    assert _scheduler(api.app).stats.batches_run == batches_before
    with _db(tmp_path) as db:
        assert db.execute("SELECT count(*) FROM generations").fetchone() == (0,)
    usage = api.get("/usage", headers=headers).json()
    assert usage["tts_calls"] == 0 and usage["tokens_used_total"] == 30  # the clone's


def test_stream_quota_is_checked_before_any_work(api: TestClient) -> None:
    user_id = api.post("/admin/users", headers=admin_headers(), json={"token_quota": 40}).json()[
        "user_id"
    ]
    code = api.post(f"/admin/users/{user_id}/invites", headers=admin_headers()).json()
    key = api.post("/auth/exchange-invite", json={"invite_code": code["invite_code"]}).json()
    headers = {"Authorization": f"Bearer {key['api_key']}"}
    voice_id = clone_voice(api, headers)  # 30 of the 40 tokens
    refused = api.post("/tts", headers=headers, json=_stream(voice_id=voice_id, text="x" * 11))
    assert refused.status_code == 402 and "quota" in refused.json()["detail"]
    allowed = api.post("/tts", headers=headers, json=_stream(voice_id=voice_id, text="x" * 10))
    assert allowed.status_code == 200


def test_batch_refuses_stream(api: TestClient, user: tuple[dict[str, str], int]) -> None:
    headers, voice_id = user
    response = api.post(
        "/batchtts",
        headers=headers,
        json={"texts": ["a", "b"], "voice_id": voice_id, "stream": True},
    )
    assert response.status_code == 400 and "cannot stream" in response.json()["detail"]


def test_first_chunk_failure_is_a_json_error_recorded_free(
    make_client: AppFactory, scripted: Callable[..., ScriptedEngine], tmp_path: Path
) -> None:
    failing = scripted(fail=1)
    api = make_client(load_engine=lambda: failing, **SETTINGS)
    _, headers = new_user_key(api)
    voice_id = clone_voice(api, headers)
    response = api.post("/tts", headers=headers, json=_stream(voice_id=voice_id))
    assert response.status_code == 400
    assert "scripted failure" in response.json()["detail"]
    with _db(tmp_path) as db:
        rows = db.execute("SELECT status, tokens_used, error FROM generations").fetchall()
    assert rows == [("error", 0, "scripted failure of call 1")]
    assert api.get("/usage", headers=headers).json()["tts_calls"] == 0


def test_model_failure_mid_stream_cuts_the_stream_and_costs_nothing(
    live_server: Callable[..., LiveServer],
    scripted: Callable[..., ScriptedEngine],
    tmp_path: Path,
) -> None:
    with _live_user(live_server, scripted(fail=2)) as (_, http, headers, voice_id):
        body = _stream(voice_id=voice_id, format="pcm")
        with http.stream("POST", "/tts", headers=headers, json=body) as response:
            assert response.status_code == 200
            generation_id = response.headers["x-generation-id"]
            # The body ends without its last chunk: the client can tell it is incomplete.
            with pytest.raises(httpx.RemoteProtocolError):
                response.read()
        row = _generation(tmp_path, generation_id)
        assert row["status"] == "error" and row["tokens_used"] == 0
        assert row["error"] == "scripted failure of call 2"
        _assert_free(http, headers, voice_id)


def test_first_audio_arrives_while_the_rest_is_still_being_synthesised(
    live_server: Callable[..., LiveServer],
    scripted: Callable[..., ScriptedEngine],
    tmp_path: Path,
) -> None:
    held = scripted(hold=2)  # the second model call waits until the client has audio
    with _live_user(live_server, held) as (_, http, headers, voice_id):
        body = _stream(voice_id=voice_id, format="pcm")
        with http.stream("POST", "/tts", headers=headers, json=body) as response:
            assert response.status_code == 200
            assert response.headers["transfer-encoding"] == "chunked"
            received = response.iter_raw()
            first = next(received)
            assert first  # audio, received while the model's second call cannot finish:
            assert held.holding.wait(30) and not held.release.is_set()
            assert held.calls == 2
            held.release.set()
            audio = first + b"".join(received)
        assert held.calls == 3
        row = _generation(tmp_path, response.headers["x-generation-id"])
        assert row["status"] == "ok"
        assert row["audio_seconds"] == pytest.approx(len(audio) / 2 / 24000)
        assert http.get("/usage", headers=headers).json()["tts_calls"] == 1


def test_client_leaving_mid_stream_cancels_it_free_and_withdraws_queued_work(
    live_server: Callable[..., LiveServer],
    scripted: Callable[..., ScriptedEngine],
    tmp_path: Path,
) -> None:
    held = scripted(hold=2)
    with _live_user(live_server, held) as (server, http, headers, voice_id):
        scheduler = _scheduler(server.server.config.app)
        with http.stream(
            "POST", "/tts", headers=headers, json=_stream(voice_id=voice_id)
        ) as response:
            assert response.status_code == 200
            generation_id = response.headers["x-generation-id"]
            # Keep the iterator: a dropped one is closed at once, and closing it closes the
            # connection, which would be this client leaving before the second call started.
            received = response.iter_raw()
            assert next(received)
            assert held.holding.wait(30)
        # Closed with the second call running and the third queued.
        row = _wait_until_settled(tmp_path, generation_id)
        assert row["status"] == "cancelled" and row["tokens_used"] == 0
        assert scheduler.queue_depth == 0 and scheduler.stats.jobs_cancelled == 1
        held.release.set()  # the running call ends; its audio is dropped
        _assert_free(http, headers, voice_id)
    assert held.calls == 2  # the queued third call never ran


def test_client_gone_before_the_first_audio_is_cancelled_too(
    live_server: Callable[..., LiveServer],
    scripted: Callable[..., ScriptedEngine],
    tmp_path: Path,
) -> None:
    held = scripted(hold=1)
    with _live_user(live_server, held) as (server, _, headers, voice_id):
        body = f'{{"text": "{TEXT}", "voice_id": {voice_id}, "stream": true}}'.encode()
        request = (
            f"POST /tts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: {headers['Authorization']}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            raw.sendall(request + body)
            assert held.holding.wait(30)  # the first chunk is being synthesised
        held.release.set()  # ... for a client that has gone
        with _db(tmp_path) as db:
            [(generation_id,)] = db.execute("SELECT id FROM generations")
        row = _wait_until_settled(tmp_path, generation_id)
        assert row["status"] == "cancelled" and row["tokens_used"] == 0


def test_openai_stream_format_audio(api: TestClient) -> None:
    _, headers = new_user_key(api)
    clone_voice(api, headers, name="Narrator")
    body = {"input": TEXT, "voice": "Narrator", "response_format": "pcm", "stream_format": "audio"}
    response = api.post("/v1/audio/speech", headers=headers, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/pcm"
    assert response.headers["x-sample-rate"] == "24000" and "x-latency-ms" not in response.headers
    assert len(response.content) > 0 and len(response.content) % 2 == 0
    assert api.get("/usage", headers=headers).json()["tokens_used_tts"] == len(TEXT)

    mp3 = api.post("/v1/audio/speech", headers=headers, json={**body, "response_format": "mp3"})
    assert mp3.status_code == 400 and "pcm, wav" in mp3.json()["detail"]
    sse = api.post("/v1/audio/speech", headers=headers, json={**body, "stream_format": "sse"})
    assert sse.status_code == 400 and "sse" in sse.json()["detail"]
    other = api.post("/v1/audio/speech", headers=headers, json={**body, "stream_format": "x"})
    assert other.status_code == 422
