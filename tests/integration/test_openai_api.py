"""POST /v1/audio/speech: OpenAI's request shape on the same rules as /tts."""

from __future__ import annotations

import io

import av
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from support import AppFactory, clone_voice, new_user_key

from qwen3_tts_server.engine.base import Engine


@pytest.fixture
def api(make_client: AppFactory, engine: Engine) -> TestClient:
    return make_client(load_engine=lambda: engine)


def test_openai_speech_by_voice_name_and_id(api: TestClient) -> None:
    _, headers = new_user_key(api)
    voice_id = clone_voice(api, headers, name="Narrator")
    by_name = api.post(
        "/v1/audio/speech",
        headers=headers,
        json={"model": "tts-1", "input": "Hello from OpenAI land.", "voice": "narrator"},
    )
    assert by_name.status_code == 200, by_name.text
    assert by_name.headers["content-type"] == "audio/mpeg"  # OpenAI's default format
    assert sf.info(io.BytesIO(by_name.content)).format == "MP3"
    assert by_name.headers["x-tokens-used"] == str(len("Hello from OpenAI land."))

    by_id = api.post(
        "/v1/audio/speech",
        headers=headers,
        json={"input": "Hi.", "voice": f"voice:{voice_id}", "response_format": "wav"},
    )
    assert by_id.status_code == 200 and by_id.headers["content-type"] == "audio/wav"
    assert api.get("/usage", headers=headers).json()["tts_calls"] == 2


def test_openai_speech_in_aac_is_an_adts_file(api: TestClient) -> None:
    _, headers = new_user_key(api)
    clone_voice(api, headers, name="Narrator")

    response = api.post(
        "/v1/audio/speech",
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
    ("body", "status", "fragment"),
    [
        ({"input": "Hi.", "voice": "nobody"}, 404, "Voice not found"),
        ({"input": "Hi.", "voice": "Narrator", "response_format": "m4a"}, 400, "Unsupported"),
        ({"input": "Hi.", "voice": "Narrator", "speed": 1.5}, 400, "speed"),
        ({"input": "Hi.", "voice": "Narrator", "speed": 9}, 422, ""),
        ({"input": "", "voice": "Narrator"}, 422, ""),
        ({"voice": "Narrator"}, 422, ""),
    ],
)
def test_openai_speech_errors(
    api: TestClient, body: dict[str, object], status: int, fragment: str
) -> None:
    _, headers = new_user_key(api)
    clone_voice(api, headers, name="Narrator")
    response = api.post("/v1/audio/speech", headers=headers, json=body)
    assert response.status_code == status, response.text
    assert fragment in str(response.json()["detail"])


def test_openai_voice_names_are_per_user(api: TestClient) -> None:
    _, alice = new_user_key(api)
    _, bob = new_user_key(api)
    voice_id = clone_voice(api, alice, name="Secret")
    for voice in ("Secret", str(voice_id)):
        response = api.post("/v1/audio/speech", headers=bob, json={"input": "Hi.", "voice": voice})
        assert response.status_code == 404
