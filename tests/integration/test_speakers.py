"""Preset speakers on the native API: GET /speakers, and `speaker` + `instruct` instead of
`voice_id` on /tts (whole and streamed) and /batchtts."""

from __future__ import annotations

import io
import json
import sqlite3
import zipfile
from pathlib import Path

import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from support import AppFactory, RecordingEngine, clone_voice, new_user_key

from qwen3_tts_server.engine.base import Engine


@pytest.fixture
def recorder(engine: Engine) -> RecordingEngine:
    return RecordingEngine(engine)


@pytest.fixture
def api(make_client: AppFactory, recorder: RecordingEngine) -> TestClient:
    client = make_client(load_engine=lambda: recorder)
    recorder.custom_items.clear()  # warm-up
    return client


def test_speakers_lists_the_presets_with_what_a_user_needs(api: TestClient) -> None:
    _, headers = new_user_key(api)
    response = api.get("/speakers", headers=headers)
    assert response.status_code == 200, response.text
    speakers = {speaker["name"]: speaker for speaker in response.json()["speakers"]}
    assert set(speakers) == {
        "Vivian", "Serena", "Uncle_Fu", "Dylan", "Eric", "Ryan", "Aiden", "Ono_Anna", "Sohee"
    }  # fmt: skip
    ryan = speakers["Ryan"]
    assert ryan["native_language"] == "english" and "english" in ryan["languages"]
    assert len(ryan["languages"]) == 10 and "auto" not in ryan["languages"]
    assert ryan["description"] and ryan["supports_instructions"] is True
    assert set(ryan["openai_voices"]) == {"ash", "cedar"}
    assert speakers["Eric"]["native_language"] == "chinese (sichuan dialect)"
    aliases = [alias for speaker in speakers.values() for alias in speaker["openai_voices"]]
    assert len(aliases) == 13 and len(set(aliases)) == 13
    assert api.get("/speakers").status_code == 401


def test_tts_with_a_preset_speaker_and_instructions(
    api: TestClient, recorder: RecordingEngine, tmp_path: Path
) -> None:
    _, headers = new_user_key(api)
    body = {"text": "Hello from a preset.", "speaker": "Vivian", "instruct": "Cheerful."}
    response = api.post("/tts", headers=headers, json=body)
    assert response.status_code == 200, response.text
    assert sf.info(io.BytesIO(response.content)).format == "WAV"
    [item] = recorder.custom_items
    assert (item.speaker, item.instruct, item.text) == ("vivian", "Cheerful.", body["text"])
    usage = api.get("/usage", headers=headers).json()
    assert usage["tts_calls"] == 1 and usage["tokens_used_tts"] == len(body["text"])
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        row = db.execute("SELECT voice_id, speaker, status FROM generations").fetchone()
    assert row == (None, "vivian", "ok")  # no voice row behind a preset: the speaker says who


def test_streamed_tts_and_batchtts_take_a_speaker(
    api: TestClient, recorder: RecordingEngine, tmp_path: Path
) -> None:
    _, headers = new_user_key(api)
    stream = api.post(
        "/tts",
        headers=headers,
        json={"text": "One. Two.", "speaker": "ryan", "format": "pcm", "stream": True},
    )
    assert stream.status_code == 200, stream.text
    assert "x-first-audio-ms" in stream.headers and len(stream.content) > 0
    batch = api.post(
        "/batchtts",
        headers=headers,
        json={"texts": ["First.", "Second."], "speaker": "Sohee", "instruct": "Slowly."},
    )
    assert batch.status_code == 200, batch.text
    with zipfile.ZipFile(io.BytesIO(batch.content)) as archive:
        assert json.loads(archive.read("manifest.json"))["generation_ids"]
        assert sf.info(io.BytesIO(archive.read("1.wav"))).format == "WAV"
    spoken = [(item.speaker, item.instruct) for item in recorder.custom_items]
    assert ("ryan", "") in spoken and spoken[-2:] == [("sohee", "Slowly.")] * 2
    assert api.get("/usage", headers=headers).json()["batch_calls"] == 1
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        speakers = db.execute("SELECT speaker FROM generations ORDER BY id").fetchall()
    assert speakers == [("ryan",), ("sohee",), ("sohee",)]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"text": "Hi."}, 422, "exactly one of `voice_id`"),
        ({"text": "Hi.", "voice_id": 1, "speaker": "vivian"}, 422, "exactly one of `voice_id`"),
        ({"text": "Hi.", "speaker": "nobody"}, 400, "Unknown speaker 'nobody'; use one of: "),
        ({"text": "Hi.", "speaker": ""}, 422, '"loc": ["body", "speaker"]'),
        ({"text": "Hi.", "voice_id": 1, "instruct": "Happy."}, 400, "cannot follow instructions"),
    ],
)
def test_speaker_mistakes_are_explained(
    api: TestClient, body: dict[str, object], status: int, fragment: str
) -> None:
    _, headers = new_user_key(api)
    assert clone_voice(api, headers) == 1
    response = api.post("/tts", headers=headers, json=body)
    assert response.status_code == status, response.text
    assert fragment in json.dumps(response.json()["detail"]), response.text
    assert api.get("/usage", headers=headers).json()["tts_calls"] == 0


def test_without_the_customvoice_model_speakers_are_a_clear_503(
    make_client: AppFactory, base_only_engine: Engine
) -> None:
    api = make_client(load_engine=lambda: base_only_engine)
    _, headers = new_user_key(api)
    listing = api.get("/speakers", headers=headers)
    assert listing.status_code == 503 and "MODEL_CUSTOM_REPO" in listing.json()["detail"]
    for path, body in (
        ("/tts", {"text": "Hi.", "speaker": "vivian"}),
        ("/tts", {"text": "Hi.", "speaker": "vivian", "format": "pcm", "stream": True}),
        ("/batchtts", {"texts": ["a", "b"], "speaker": "vivian"}),
    ):
        response = api.post(path, headers=headers, json=body)
        assert response.status_code == 503, (path, response.text)
        assert "CustomVoice model" in response.json()["detail"]


def test_a_small_customvoice_model_says_it_takes_no_instructions(
    make_client: AppFactory, small_custom_engine: Engine
) -> None:
    api = make_client(load_engine=lambda: small_custom_engine)
    _, headers = new_user_key(api)
    speakers = api.get("/speakers", headers=headers).json()["speakers"]
    assert not any(speaker["supports_instructions"] for speaker in speakers)
    told = api.post(
        "/tts", headers=headers, json={"text": "Hi.", "speaker": "eric", "instruct": "x"}
    )
    assert told.status_code == 400 and "0.6B" in told.json()["detail"]
    assert api.post("/tts", headers=headers, json={"text": "Hi.", "speaker": "eric"}).is_success
