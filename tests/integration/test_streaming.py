"""Streamed /tts and /v1/audio/speech over HTTP with the tiny real-architecture model.

What must hold: the stream is the audio /tts makes of the same text, sentences joined the same
way; every client error is a JSON 4xx before any audio; only a complete stream is charged.
(Streams that fail or are left early, and the first audio leaving while the rest is
still being made: test_streaming_failures.py.)
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from streamkit import SETTINGS, TEXT, generation_row, open_db, scheduler_of, stream_body
from support import AppFactory, admin_headers, clone_voice, new_user_key

from qwen3_tts_server.engine.base import Engine
from qwen3_tts_server.engine.text.textsplit import split_text


@pytest.fixture
def api(make_client: AppFactory, engine: Engine) -> TestClient:
    return make_client(load_engine=lambda: engine, **SETTINGS)


@pytest.fixture
def user(api: TestClient) -> tuple[dict[str, str], int]:
    _, headers = new_user_key(api)
    return headers, clone_voice(api, headers)


def _wav_samples(data: bytes) -> np.ndarray:
    samples, _ = sf.read(io.BytesIO(data), dtype="int16")
    return np.asarray(samples)


def test_text_makes_the_chunks_the_tests_assume() -> None:
    assert len(split_text(TEXT, SETTINGS["chunk_max_chars"])) == 5


def _zero_runs(samples: np.ndarray, at_least: int) -> int:
    """How many runs of at least `at_least` consecutive exact zeros `samples` holds."""
    padded = np.concatenate(([1], samples, [1]))
    edges = np.flatnonzero(np.diff((padded == 0).astype(np.int8)))
    return int(np.sum(edges[1::2] - edges[::2] >= at_least))


def test_streamed_wav_is_the_tts_audio_of_the_same_text(
    api: TestClient, user: tuple[dict[str, str], int]
) -> None:
    """A seeded text alone makes the same frames and the same decoded pieces whether it is
    streamed or not, so the stream is /tts's file sample for sample: five sentence chunks
    joined with 0.12 s of silence (2880 samples) between each two."""
    headers, voice_id = user
    scheduler = scheduler_of(api.app)
    chunks_before = sum(scheduler.stats.finish_reasons.values())
    response = api.post("/tts", headers=headers, json=stream_body(voice_id=voice_id, seed=7))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["x-tokens-used"] == str(len(TEXT))
    assert response.headers["x-sample-rate"] == "24000"
    assert int(response.headers["x-first-audio-ms"]) > 0
    assert "x-latency-ms" not in response.headers  # not known when the headers leave
    assert "x-finish-reason" not in response.headers  # idem; recorded on the generation
    assert "content-length" not in response.headers

    # A streaming header ("size unknown"), which libsndfile reads to the end of the body.
    assert response.content[4:8] == response.content[40:44] == b"\xff" * 4  # RIFF, data sizes
    info = sf.info(io.BytesIO(response.content))
    assert (info.format, info.subtype, info.samplerate) == ("WAV", "PCM_16", 24000)
    streamed = _wav_samples(response.content)
    assert streamed.size == (len(response.content) - 44) // 2
    assert sum(scheduler.stats.finish_reasons.values()) - chunks_before == 5
    assert _zero_runs(streamed, 2880) == 4

    whole = api.post(
        "/tts", headers=headers, json={**stream_body(voice_id=voice_id, seed=7), "stream": False}
    )
    assert whole.status_code == 200
    assert whole.headers["x-finish-reason"] in ("eos", "length", "silence")
    assert np.array_equal(streamed, _wav_samples(whole.content))
    again = api.post("/tts", headers=headers, json=stream_body(voice_id=voice_id, seed=7))
    assert again.content == response.content


def test_stream_is_charged_once_complete_like_tts(
    api: TestClient, user: tuple[dict[str, str], int], tmp_path: Path
) -> None:
    headers, voice_id = user
    response = api.post("/tts", headers=headers, json=stream_body(voice_id=voice_id, format="pcm"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/pcm"
    row = generation_row(tmp_path, response.headers["x-generation-id"])
    assert row["status"] == "ok" and row["error"] is None
    assert row["tokens_used"] == row["chars"] == len(TEXT)
    # Model time from the first call on, plus the first call's wait, covers the first audio.
    assert row["queue_ms"] == int(response.headers["x-queue-ms"])
    assert row["latency_ms"] + row["queue_ms"] >= int(response.headers["x-first-audio-ms"])
    assert row["audio_seconds"] == pytest.approx(len(response.content) / 2 / 24000)
    assert row["input_text"] is None and row["audio_sha256"] is None  # store=false
    usage = api.get("/usage", headers=headers).json()
    assert usage["tts_calls"] == 1 and usage["tokens_used_tts"] == len(TEXT)
    assert usage["audio_seconds_total"] == pytest.approx(row["audio_seconds"], abs=1e-3)
    assert api.get(f"/voices/{voice_id}", headers=headers).json()["use_count"] == 1
    with open_db(tmp_path) as db:
        keys = {key for (key,) in db.execute("SELECT key FROM runtime_stats")}
    assert "single_latency_per_char_ms" in keys  # the single-request calibration saw it


@pytest.mark.parametrize("fmt", ["wav", "pcm"])
def test_store_true_keeps_the_whole_streamed_audio(
    api: TestClient, user: tuple[dict[str, str], int], fmt: str
) -> None:
    headers, voice_id = user
    response = api.post(
        "/tts", headers=headers, json=stream_body(voice_id=voice_id, format=fmt, store=True)
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
    response = api.post("/tts", headers=headers, json=stream_body(voice_id=voice_id))
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
    steps_before = scheduler_of(api.app).stats.steps
    response = api.post("/tts", headers=headers, json=stream_body(**{"voice_id": voice_id, **body}))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert fragment in str(response.json()["detail"])
    assert scheduler_of(api.app).stats.steps == steps_before
    with open_db(tmp_path) as db:
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
    refused = api.post("/tts", headers=headers, json=stream_body(voice_id=voice_id, text="x" * 11))
    assert refused.status_code == 402 and "quota" in refused.json()["detail"]
    allowed = api.post("/tts", headers=headers, json=stream_body(voice_id=voice_id, text="x" * 10))
    assert allowed.status_code == 200


def test_batch_refusesstream_body(api: TestClient, user: tuple[dict[str, str], int]) -> None:
    headers, voice_id = user
    response = api.post(
        "/batchtts",
        headers=headers,
        json={"texts": ["a", "b"], "voice_id": voice_id, "stream": True},
    )
    assert response.status_code == 400 and "cannot stream" in response.json()["detail"]


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

    # OpenAI streams every format: one that is complete only at its end comes whole.
    mp3 = api.post("/v1/audio/speech", headers=headers, json={**body, "response_format": "mp3"})
    assert mp3.status_code == 200 and mp3.headers["content-type"] == "audio/mpeg"
    assert "x-latency-ms" in mp3.headers and sf.info(io.BytesIO(mp3.content)).format == "MP3"
    other = api.post("/v1/audio/speech", headers=headers, json={**body, "stream_format": "x"})
    assert other.status_code == 400 and other.json()["error"]["param"] == "stream_format"
