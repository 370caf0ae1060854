"""The official `openai` Python SDK against a real server, changed in nothing but `base_url` and
the key: sync and async clients, with_streaming_response, SSE, and the exceptions it raises."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
import soundfile as sf
from support import admin_headers, clone_voice, new_user_key

from conftest import LiveServer
from qwen3_tts_server.engine.base import Engine


class Live:
    """A running server with one user (`key`) who owns the cloned voice "Narrator"."""

    def __init__(self, server: LiveServer, http: httpx.Client, user_id: int, key: str) -> None:
        self.server = server
        self.http = http
        self.user_id = user_id
        self.key = key
        self.base_url = f"{server.url}/v1"

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key or self.key, max_retries=0)

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self.key, max_retries=0)

    def usage(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.key}"}
        usage: dict[str, Any] = self.http.get("/usage", headers=headers).json()
        return usage


@pytest.fixture
def live(live_server: Callable[..., LiveServer], engine: Engine) -> Iterator[Live]:
    with live_server(load_engine=lambda: engine) as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=120) as http:
            user_id, headers = new_user_key(http)
            clone_voice(http, headers, name="Narrator")
            yield Live(server, http, user_id, headers["Authorization"].removeprefix("Bearer "))


def test_sync_client_speaks_with_any_voice_form(live: Live) -> None:
    client = live.client()
    mp3 = client.audio.speech.create(model="tts-1", voice="Narrator", input="Hello there.")
    assert sf.info(io.BytesIO(mp3.content)).format == "MP3"
    wav = client.audio.speech.create(
        model="gpt-4o-mini-tts",
        voice={"id": "Narrator"},
        input="Hello again.",
        response_format="wav",
        speed=1.5,
    )
    assert sf.info(io.BytesIO(wav.content)).format == "WAV"
    preset = client.audio.speech.create(
        model="gpt-4o-mini-tts",
        voice="coral",
        input="A preset speaker.",
        instructions="Speak cheerfully.",
        response_format="aac",
    )
    assert preset.response.headers["content-type"] == "audio/aac" and preset.content
    assert live.usage()["tts_calls"] == 3


def test_with_streaming_response_streams_pcm(live: Live) -> None:
    client = live.client()
    text = "The first sentence. The second one. A third sentence."
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="Narrator", input=text, response_format="pcm", stream_format="audio"
    ) as response:
        assert response.headers["x-sample-rate"] == "24000"
        assert "x-first-audio-ms" in response.headers  # sent as made, not after the whole
        pieces = list(response.iter_bytes())
    audio = b"".join(pieces)
    assert audio and len(audio) % 2 == 0
    assert live.usage()["tokens_used_tts"] == len(text)


def test_async_client_and_its_streaming_response(live: Live) -> None:
    async def run() -> tuple[bytes, bytes]:
        async with live.async_client() as client:
            whole = await client.audio.speech.create(
                model="tts-1", voice="Narrator", input="Async hello.", response_format="flac"
            )
            async with client.audio.speech.with_streaming_response.create(
                model="tts-1",
                voice="alloy",
                input="Async stream.",
                response_format="wav",
                stream_format="audio",
            ) as response:
                streamed = b"".join([chunk async for chunk in response.iter_bytes()])
            return whole.content, streamed

    flac, wav = asyncio.run(run())
    assert sf.info(io.BytesIO(flac)).format == "FLAC"
    assert wav[:4] == b"RIFF" and len(wav) > 44
    assert live.usage()["tts_calls"] == 2


def test_sse_events_through_the_sdk(live: Live) -> None:
    client = live.client()
    text = "Server-sent events. Piece by piece."
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="Narrator",
        input=text,
        response_format="pcm",
        stream_format="sse",
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [
            json.loads(line.removeprefix("data: "))
            for line in response.iter_lines()
            if line.startswith("data: ")
        ]
    deltas = [event for event in events if event["type"] == "speech.audio.delta"]
    assert deltas and events[-1]["type"] == "speech.audio.done"
    assert events[-1]["usage"]["input_tokens"] == len(text)
    audio = b"".join(base64.b64decode(event["audio"]) for event in deltas)
    assert audio and len(audio) % 2 == 0


def test_errors_are_the_sdks_exceptions_with_our_message(live: Live) -> None:
    with pytest.raises(openai.AuthenticationError) as bad_key:
        live.client("not-a-key").audio.speech.create(model="tts-1", voice="Narrator", input="Hi")
    assert bad_key.value.status_code == 401 and bad_key.value.code == "invalid_api_key"
    assert "Invalid or revoked API key" in str(bad_key.value)

    client = live.client()
    with pytest.raises(openai.NotFoundError) as missing:
        client.audio.speech.create(model="tts-1", voice="Nobody", input="Hi")
    assert "Your voices: Narrator." in missing.value.message
    assert "Your voices: Narrator." in str(missing.value)

    with pytest.raises(openai.BadRequestError) as bad_speed:
        client.audio.speech.create(model="tts-1", voice="Narrator", input="Hi", speed=8)
    assert bad_speed.value.param == "speed" and "speed" in bad_speed.value.message

    with pytest.raises(openai.BadRequestError) as cloned:
        client.audio.speech.create(
            model="tts-1", voice="Narrator", input="Hi", instructions="Sound happy."
        )
    assert "cannot follow instructions" in cloned.value.message

    keys = live.http.get(f"/admin/users/{live.user_id}/keys", headers=admin_headers()).json()
    path = f"/admin/users/{live.user_id}/keys/{keys[0]['key_id']}/revoke"
    assert live.http.post(path, headers=admin_headers()).is_success
    with pytest.raises(openai.AuthenticationError):
        client.audio.speech.create(model="tts-1", voice="Narrator", input="Hi")
