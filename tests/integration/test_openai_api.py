"""POST /v1/audio/speech: OpenAI's request shape, codes and error bodies, on the rules of /tts.

The official SDK's view of the same endpoint is in test_openai_sdk.py; these tests look at the
wire itself (bodies, headers, events) and at what reaches the model.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from streamkit import SETTINGS, TEXT, ScriptedEngine, generation_row
from support import (
    ADMIN_TOKEN,
    AppFactory,
    RecordingEngine,
    admin_headers,
    clone_voice,
    new_user_key,
)
from test_failure_records import OutOfMemoryEngine

from qwen3_tts_server.engine.base import Engine
from qwen3_tts_server.services.speakers import OPENAI_VOICES

SPEECH = "/v1/audio/speech"


@pytest.fixture
def api(make_client: AppFactory, engine: Engine) -> TestClient:
    return make_client(load_engine=lambda: engine)


def _error(response: Any) -> dict[str, Any]:
    """OpenAI's error object, checked for its four keys."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    error: dict[str, Any] = body["error"]
    return error


def _pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2")


def test_openai_speech_by_voice_name_and_id(api: TestClient) -> None:
    _, headers = new_user_key(api)
    voice_id = clone_voice(api, headers, name="Narrator")
    by_name = api.post(
        SPEECH,
        headers=headers,
        json={"model": "tts-1", "input": "Hello from OpenAI land.", "voice": "narrator"},
    )
    assert by_name.status_code == 200, by_name.text
    assert by_name.headers["content-type"] == "audio/mpeg"  # OpenAI's default format
    assert sf.info(io.BytesIO(by_name.content)).format == "MP3"
    assert by_name.headers["x-tokens-used"] == str(len("Hello from OpenAI land."))

    for voice in (f"voice:{voice_id}", {"id": str(voice_id)}, {"id": "Narrator"}):
        by_id = api.post(
            SPEECH, headers=headers, json={"input": "Hi.", "voice": voice, "response_format": "wav"}
        )
        assert by_id.status_code == 200, (voice, by_id.text)
        assert by_id.headers["content-type"] == "audio/wav"
    assert api.get("/usage", headers=headers).json()["tts_calls"] == 4


def test_a_voice_named_with_digits_is_found_by_its_name(api: TestClient) -> None:
    _, headers = new_user_key(api)
    voice_id = clone_voice(api, headers, name="2024")
    assert voice_id != 2024
    response = api.post(SPEECH, headers=headers, json={"input": "Hi.", "voice": "2024"})
    assert response.status_code == 200, response.text


def test_openai_speech_in_aac_is_an_adts_file(api: TestClient) -> None:
    _, headers = new_user_key(api)
    clone_voice(api, headers, name="Narrator")

    response = api.post(
        SPEECH,
        headers=headers,
        json={"input": "Hello in AAC.", "voice": "Narrator", "response_format": "aac"},
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/aac"  # what OpenAI answers for aac
    assert response.headers["x-sample-rate"] == "24000"
    with av.open(io.BytesIO(response.content)) as container:
        stream = container.streams.audio[0]
        assert (container.format.name, stream.codec_context.name) == ("aac", "aac")
        assert (stream.sample_rate, stream.channels) == (24000, 1)
        assert sum(frame.samples for frame in container.decode(stream)) > 0


@pytest.mark.parametrize(
    ("body", "status", "param", "fragment"),
    [
        ({"input": "Hi.", "voice": "Narrator", "response_format": "m4a"}, 400, None, "Unsupported"),
        ({"input": "Hi.", "voice": "Narrator", "speed": 9}, 400, "speed", "'speed'"),
        ({"input": "Hi.", "voice": "Narrator", "speed": 0.1}, 400, "speed", "0.25"),
        ({"input": "", "voice": "Narrator"}, 400, "input", "'input'"),
        ({"voice": "Narrator"}, 400, "input", "Missing required parameter: 'input'"),
        ({"input": "Hi.", "voice": {"name": "x"}}, 400, "voice", "'voice'"),
        ({"input": "Hi.", "voice": "Narrator", "stream_format": "x"}, 400, "stream_format", ""),
    ],
)
def test_openai_errors_have_openais_body(
    api: TestClient, body: dict[str, object], status: int, param: str | None, fragment: str
) -> None:
    _, headers = new_user_key(api)
    clone_voice(api, headers, name="Narrator")
    response = api.post(SPEECH, headers=headers, json=body)
    assert response.status_code == status, response.text
    error = _error(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]
    assert api.get("/usage", headers=headers).json()["tts_calls"] == 0


def test_every_key_failure_on_v1_is_a_401_while_native_routes_keep_403(api: TestClient) -> None:
    user_id, headers = new_user_key(api)
    clone_voice(api, headers, name="Narrator")
    body = {"input": "Hi.", "voice": "Narrator"}
    key_id = api.get(f"/admin/users/{user_id}/keys", headers=admin_headers()).json()[0]["key_id"]
    assert api.post(f"/admin/users/{user_id}/keys/{key_id}/revoke", headers=admin_headers())

    cases = {
        "missing": {},
        "not bearer": {"Authorization": "Basic abc"},
        "wrong": {"Authorization": "Bearer not-a-real-key"},
        "revoked": headers,
        "admin token": {"Authorization": f"Bearer {ADMIN_TOKEN}"},
    }
    for case, sent in cases.items():
        response = api.post(SPEECH, headers=sent, json=body)
        assert response.status_code == 401, (case, response.text)
        error = _error(response)
        assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
        assert error["message"], case
    # The original server's routes answer as they did.
    native = api.post("/tts", headers=headers, json={"text": "Hi.", "voice_id": 1})
    assert native.status_code == 403 and native.json() == {"detail": "Invalid or revoked API key"}


def test_unknown_voice_is_a_404_that_names_the_callers_voices(
    make_client: AppFactory, base_only_engine: Engine
) -> None:
    api = make_client(load_engine=lambda: base_only_engine)
    _, alice = new_user_key(api)
    _, bob = new_user_key(api)
    secret_id = clone_voice(api, alice, name="Secret")
    clone_voice(api, bob, name="Geoff")
    for voice in ("Secret", str(secret_id), "alloy"):
        response = api.post(SPEECH, headers=bob, json={"input": "Hi.", "voice": voice})
        assert response.status_code == 404, response.text
        message = _error(response)["message"]
        assert f"{voice!r}" in message and "Your voices: Geoff." in message
        assert "Secret" not in message.replace(f"{voice!r}", "")
    # Without the CustomVoice model, OpenAI's voice names are said to need it.
    alloy = api.post(SPEECH, headers=bob, json={"input": "Hi.", "voice": "alloy"})
    assert "CustomVoice" in _error(alloy)["message"]
    _, carol = new_user_key(api)
    none = api.post(SPEECH, headers=carol, json={"input": "Hi.", "voice": "nobody"})
    assert "You have no voices yet" in _error(none)["message"]


def test_other_v1_failures_have_openais_body_too(api: TestClient) -> None:
    _, headers = new_user_key(api)
    missing = api.get("/v1/models", headers=headers)
    assert missing.status_code == 404 and _error(missing)["message"] == "Not Found"
    wrong_method = api.get(SPEECH, headers=headers)
    assert wrong_method.status_code == 405 and _error(wrong_method)["message"]
    too_big = api.post(
        SPEECH, headers={**headers, "Content-Type": "application/json"}, content=b"x" * 30_000_000
    )
    assert too_big.status_code == 413 and "too large" in _error(too_big)["message"]
    # Outside /v1 nothing changed.
    assert api.get("/nowhere").json() == {"detail": "Not Found"}


def _seeded(api: TestClient, headers: dict[str, str], **body: Any) -> np.ndarray:
    response = api.post(
        SPEECH,
        headers=headers,
        json={"input": "Hello there.", "response_format": "pcm", "seed": 11, **body},
    )
    assert response.status_code == 200, response.text
    return _pcm(response.content)


def test_openai_voice_names_are_preset_speakers(make_client: AppFactory, engine: Engine) -> None:
    """alloy is Serena, onyx Uncle_Fu (README table), a speaker's own name is itself; each
    is the native route's preset speaker, with the same seeded audio."""
    recorder = RecordingEngine(engine)
    api = make_client(load_engine=lambda: recorder)
    _, headers = new_user_key(api)
    recorder.custom_items.clear()  # warm-up
    alloy = _seeded(api, headers, voice="alloy")
    _seeded(api, headers, voice="ONYX")
    _seeded(api, headers, voice="Sohee")
    assert [item.speaker for item in recorder.custom_items] == ["serena", "uncle_fu", "sohee"]
    native = api.post(
        "/tts",
        headers=headers,
        json={"text": "Hello there.", "speaker": "Serena", "format": "pcm", "seed": 11},
    )
    assert native.status_code == 200, native.text
    assert np.array_equal(alloy, _pcm(native.content))
    for alias, speaker in OPENAI_VOICES.items():
        recorder.custom_items.clear()
        assert api.post(SPEECH, headers=headers, json={"input": "Hi.", "voice": alias}).is_success
        assert recorder.custom_items[0].speaker == speaker, alias


def test_speed_time_stretches_whole_and_streamed_audio(api: TestClient) -> None:
    _, headers = new_user_key(api)
    clone_voice(api, headers, name="Narrator")
    normal = _seeded(api, headers, voice="Narrator")
    for speed in (2.0, 0.5):
        fast = _seeded(api, headers, voice="Narrator", speed=speed)
        assert len(fast) == pytest.approx(len(normal) / speed, rel=0.05), speed
        streamed = _seeded(api, headers, voice="Narrator", speed=speed, stream_format="audio")
        assert len(streamed) == pytest.approx(len(normal) / speed, rel=0.05), speed


def test_instructions_reach_preset_speakers(make_client: AppFactory, engine: Engine) -> None:
    recorder = RecordingEngine(engine)
    api = make_client(load_engine=lambda: recorder)
    _, headers = new_user_key(api)
    _seeded(api, headers, voice="alloy")
    _seeded(api, headers, voice="alloy", instructions="  Whisper, very slowly. ")
    assert [item.instruct for item in recorder.custom_items[-2:]] == ["", "Whisper, very slowly."]


def test_instructions_for_a_designed_voice_go_to_the_voicedesign_model(
    make_client: AppFactory, engine: Engine
) -> None:
    """A designed voice with instructions is its description plus the instructions, spoken by
    the VoiceDesign model (what reaches the model: the tiny model's audio cannot tell)."""
    recorder = RecordingEngine(engine)
    api = make_client(load_engine=lambda: recorder)
    _, headers = new_user_key(api)
    designed = api.post(
        "/designvoice",
        headers=headers,
        json={"name": "Warm", "description": "A warm, calm voice.", "language": "English"},
    )
    assert designed.status_code == 200, designed.text
    told = _seeded(api, headers, voice="Warm", instructions="Sound surprised.")
    assert told.size > 0
    assert recorder.descriptions[-1] == "A warm, calm voice. Sound surprised."


def test_instructions_where_they_cannot_be_followed_are_a_400(
    make_client: AppFactory, engine: Engine, base_only_engine: Engine, small_custom_engine: Engine
) -> None:
    api = make_client(load_engine=lambda: engine)
    _, headers = new_user_key(api)
    clone_voice(api, headers, name="Cloned")
    designed = api.post(
        "/designvoice",
        headers=headers,
        json={"name": "Designed", "description": "A bright voice.", "language": "English"},
    )
    assert designed.status_code == 200
    body = {"input": "Hi.", "instructions": "Sound happy."}
    cloned = api.post(SPEECH, headers=headers, json={**body, "voice": "Cloned"})
    assert cloned.status_code == 400 and "cannot follow instructions" in _error(cloned)["message"]

    # The same data, served without the VoiceDesign model: the designed voice cannot either.
    base_only = make_client(load_engine=lambda: base_only_engine)
    response = base_only.post(SPEECH, headers=headers, json={**body, "voice": "Designed"})
    assert response.status_code == 400 and "VoiceDesign" in _error(response)["message"]
    plain = base_only.post(SPEECH, headers=headers, json={"input": "Hi.", "voice": "Designed"})
    assert plain.status_code == 200

    # A 0.6B CustomVoice model drops instructions: refused instead of silently ignored.
    small = make_client(load_engine=lambda: small_custom_engine)
    response = small.post(SPEECH, headers=headers, json={**body, "voice": "alloy"})
    assert response.status_code == 400 and "0.6B" in _error(response)["message"]
    assert small.post(SPEECH, headers=headers, json={"input": "Hi.", "voice": "alloy"}).is_success
    usage = small.get("/usage", headers=headers).json()
    assert usage["tts_calls"] == 2  # the refused calls cost nothing


def _events(body: str) -> list[dict[str, Any]]:
    """Server-sent events: `data: {json}` blocks separated by blank lines."""
    events = []
    for block in body.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            events.append(json.loads(block.removeprefix("data: ")))
    return events


def test_sse_sends_base64_audio_deltas_then_done_with_usage(api: TestClient) -> None:
    _, headers = new_user_key(api)
    clone_voice(api, headers, name="Narrator")
    text = "The first sentence. The second one. A third sentence."
    body = {"input": text, "voice": "Narrator", "response_format": "pcm", "seed": 3}
    whole = api.post(SPEECH, headers=headers, json={**body, "stream_format": "audio"})
    response = api.post(SPEECH, headers=headers, json={**body, "stream_format": "sse"})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.text)
    assert [event["type"] for event in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    audio = b"".join(base64.b64decode(event["audio"]) for event in events[:-1])
    assert audio == whole.content  # the same stream as stream_format "audio"
    done = events[-1]
    assert done == {
        "type": "speech.audio.done",
        "usage": {"input_tokens": len(text), "output_tokens": 0, "total_tokens": len(text)},
    }
    assert api.get("/usage", headers=headers).json()["tokens_used_tts"] == 2 * len(text)


def test_sse_in_a_whole_file_format_is_one_delta(api: TestClient) -> None:
    _, headers = new_user_key(api)
    clone_voice(api, headers, name="Narrator")
    response = api.post(
        SPEECH, headers=headers, json={"input": "Hi.", "voice": "Narrator", "stream_format": "sse"}
    )
    assert response.status_code == 200, response.text
    delta, done = _events(response.text)
    assert delta["type"] == "speech.audio.delta" and done["type"] == "speech.audio.done"
    mp3 = base64.b64decode(delta["audio"])
    assert sf.info(io.BytesIO(mp3)).format == "MP3"  # OpenAI's default format, whole


def test_an_outage_on_v1_is_a_503_in_openais_shape(make_client: AppFactory, engine: Engine) -> None:
    """Out of memory (a real MemoryError in the model call): 503 with Retry-After, OpenAI's
    body (the SDK retries it as an InternalServerError), nothing charged."""
    api = make_client(load_engine=lambda: OutOfMemoryEngine(engine))
    _, headers = new_user_key(api)
    clone_voice(api, headers, name="Narrator")
    response = api.post(SPEECH, headers=headers, json={"input": "Hi.", "voice": "Narrator"})
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    error = _error(response)
    assert error["type"] == "server_error" and "out of memory" in error["message"]
    assert api.get("/usage", headers=headers).json()["tts_calls"] == 0


def test_sse_ends_with_an_error_event_after_a_mid_stream_failure(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    """The third of five sentences fails in the model after two were sent: the events end
    with OpenAI's error event instead of the done one, and the call is recorded, free."""
    failing = ScriptedEngine(engine, fail=3)
    api = make_client(load_engine=lambda: failing, **SETTINGS)
    _, headers = new_user_key(api)
    clone_voice(api, headers, name="Narrator")
    body = {"input": TEXT, "voice": "Narrator", "response_format": "pcm", "stream_format": "sse"}
    response = api.post(SPEECH, headers=headers, json=body)
    assert response.status_code == 200, response.text
    events = _events(response.text)
    *deltas, last = events
    assert deltas and {event["type"] for event in deltas} == {"speech.audio.delta"}
    assert last["type"] == "error"
    assert last["error"]["type"] == "server_error"
    assert "Synthesis failed after part of the audio was sent" in last["error"]["message"]
    assert "scripted failure of call 3" in last["error"]["message"]
    row = generation_row(tmp_path, 1)
    assert (row["status"], row["tokens_used"]) == ("error", 0)
    assert api.get("/usage", headers=headers).json()["tokens_used_tts"] == 0
