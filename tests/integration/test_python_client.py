"""The Python client (clients/python, `qwen3_tts_client`) against a real server on a loopback
port: every method, its typed errors, streams, retries only where the server asked for them,
and the realtime socket. (tests/integration/test_client_venv.py installs it alone, without torch,
and runs its README and command line against the demo.)"""

from __future__ import annotations

import asyncio
import io
import socket
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf
from streamkit import SETTINGS, TEXT, ScriptedEngine
from support import new_user_key, reference_audio

from conftest import LiveServer
from qwen3_tts_client import (
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    NetworkError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RealtimeAudio,
    RealtimeEvent,
    ServiceUnavailableError,
    StreamInterrupted,
    UnprocessableEntityError,
    Voice,
    cli,
)
from qwen3_tts_client.errors import ApiError, retry_after_seconds
from qwen3_tts_client.retry import RetryPolicy
from qwen3_tts_server.engine.base import Engine, Item, QueueFull, Runaway, Sampling
from qwen3_tts_server.engine.step.stepper import Admission


@dataclass
class Live:
    server: LiveServer
    key: str

    def client(self, **options: Any) -> Client:
        return Client(self.server.url, self.key, **options)

    def async_client(self, **options: Any) -> AsyncClient:
        return AsyncClient(self.server.url, self.key, **options)


@pytest.fixture
def live(live_server: Callable[..., LiveServer], engine: Engine) -> Iterator[Live]:
    with live_server(load_engine=lambda: engine) as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as http:
            _, headers = new_user_key(http)
        yield Live(server, headers["Authorization"].removeprefix("Bearer "))


def test_every_native_call_round_trips(live: Live, tmp_path: Any) -> None:
    reference = tmp_path / "ref.flac"
    reference.write_bytes(reference_audio("flac"))
    with live.client() as client:
        cloned = client.clone_voice("Geoff", reference, "Hello there, this is my voice.", "English")
        assert cloned.tokens_used == 30  # len(transcript), above CLONE_MIN_TOKENS (20)
        designed = client.design_voice("Narrator", "Warm, calm narrator voice.", "english")
        assert designed.tokens_used > len("Warm, calm narrator voice.")  # + the phrase

        listed = client.voices()
        assert [(v.voice_id, v.name) for v in listed] == [
            (designed.voice_id, "Narrator"),
            (cloned.voice_id, "Geoff"),
        ]
        detail = client.voice(listed[1])
        assert (detail.kind, detail.ref_text, detail.language) == (
            "clone",
            "Hello there, this is my voice.",
            "english",
        )
        sample = client.voice_sample(cloned.voice_id)
        assert sample.audio == reference.read_bytes() and sample.media_type == "audio/flac"
        assert sample.transcript == "Hello there, this is my voice."

        speech = client.tts("Hello from the client.", voice=cloned, seed=7, store=True)
        assert speech.media_type == "audio/wav" and speech.tokens_used == 22
        assert speech.sample_rate == 24000 and speech.finish_reason in {"eos", "silence", "length"}
        assert speech.latency_ms is not None and speech.queue_ms is not None
        assert sf.info(io.BytesIO(speech.audio)).samplerate == 24000
        assert client.stored(speech.generation_id).audio == speech.audio

        mp3 = client.tts("A preset speaker.", speaker="ryan", instruct="Cheerful.", format="mp3")
        assert mp3.media_type == "audio/mpeg" and sf.info(io.BytesIO(mp3.audio)).format == "MP3"
        assert {s.name for s in client.speakers()} >= {"Ryan", "Vivian"}

        texts = ["First line.", "Second line.", "Third line."]
        batch = client.batch(texts, voice=designed.voice_id, format="flac")
        assert [item.filename for item in batch.items] == ["0.flac", "1.flac", "2.flac"]
        assert batch.tokens_used == int(len("".join(texts)) * batch.discount_used)
        assert sum(item.tokens for item in batch.items) == batch.tokens_used
        assert all(sf.info(io.BytesIO(item.audio)).format == "FLAC" for item in batch.items)

        usage = client.usage()
        assert (usage.tts_calls, usage.batch_calls, usage.voices_created) == (2, 1, 2)
        assert usage.tokens_used_tts == 22 + len("A preset speaker.")
        assert usage.tokens_used_batch == batch.tokens_used
        assert usage.tokens_used_voices == cloned.tokens_used + designed.tokens_used

        client.delete_voice(cloned.voice_id)
        with pytest.raises(NotFoundError) as missing:
            client.voice(cloned.voice_id)
        assert missing.value.status == 404 and missing.value.detail
        assert [v.voice_id for v in client.voices()] == [designed.voice_id]


def test_a_stream_yields_its_audio_as_pieces_with_the_headers_first(live: Live) -> None:
    with live.client() as client:
        voice = client.design_voice("Narrator", "Warm, calm narrator voice.")
        text = "The first sentence. The second one."
        with client.stream(text, voice=voice, seed=3) as audio:
            assert audio.info.sample_rate == 24000 and audio.info.media_type == "audio/pcm"
            assert audio.info.tokens_used == len(text) and audio.info.first_audio_ms is not None
            pieces = list(audio)
        pcm = b"".join(pieces)
        assert pieces and len(pcm) % 2 == 0
        # the same seeded text alone, whole: the same samples (README: Reproducibility)
        whole = client.tts(text, voice=voice, seed=3, format="pcm")
        assert whole.audio == pcm
        with client.stream(text, voice=voice, format="wav") as audio:
            data = b"".join(audio)
        assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
        assert client.usage().tts_calls == 3


def test_errors_are_typed_with_status_and_the_servers_detail(live: Live) -> None:
    with (
        Client(live.server.url, "qttsk_not-a-key") as stranger,
        pytest.raises(PermissionDeniedError) as denied,
    ):
        stranger.usage()
    assert denied.value.status == 403 and denied.value.detail == "Invalid or revoked API key"
    assert denied.value.retry_after is None
    with Client(live.server.url, "") as anonymous, pytest.raises(AuthenticationError) as missing:
        anonymous.usage()
    assert missing.value.status == 401 and missing.value.detail == "Missing bearer token"

    with live.client() as client:
        voice = client.design_voice("Narrator", "Warm, calm narrator voice.")
        with pytest.raises(BadRequestError) as bad:
            client.tts("Hi.", voice=voice, language="klingon")
        assert bad.value.status == 400 and "english" in bad.value.detail
        with pytest.raises(UnprocessableEntityError) as both:
            client.tts("Hi.", voice=voice, speaker="Ryan")
        assert both.value.status == 422  # the field errors, readable: "where: message"
        assert both.value.detail.startswith("body: Value error, send exactly one of `voice_id`")
        assert isinstance(both.value.body["detail"], list)
        with pytest.raises(NotFoundError):  # raised before any audio
            client.stream("Hi.", voice=voice.voice_id + 100).__enter__()
        with pytest.raises(BadRequestError) as unstreamable:
            client.stream("Hi.", voice=voice, format="mp3").__enter__()
        assert "pcm" in unstreamable.value.detail
        with pytest.raises(TypeError, match="fromat"):
            client.tts("Hi.", voice=voice, fromat="mp3")  # type: ignore[call-arg]
        assert client.usage().tts_calls == 0

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", "key") as nowhere, pytest.raises(NetworkError):
        nowhere.usage()


def test_a_stream_cut_mid_way_raises_instead_of_ending_short(
    live_server: Callable[..., LiveServer], engine: Engine, tmp_path: Path
) -> None:
    """The second sentence fails in the model after the first one's audio went out."""
    scripted = ScriptedEngine(engine, fail=2)
    with live_server(load_engine=lambda: scripted, **SETTINGS) as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as http:
            _, headers = new_user_key(http)
        with Client(server.url, headers["Authorization"][7:]) as client:
            voice = client.clone_voice("v", reference_audio(), "Hello there, this is my voice.")
            received = []
            with pytest.raises(StreamInterrupted), client.stream(TEXT, voice=voice) as audio:
                received.extend(audio)
            assert received  # the first sentence did arrive
            assert client.usage().tts_calls == 0  # and the cut stream costs nothing
        # The command line: exit 8 (network), and no partial file passing for a short one.
        scripted.calls = 0  # its second sentence fails again
        out = tmp_path / "cut.pcm"
        args = ["--url", server.url, "--api-key", headers["Authorization"][7:], "say", TEXT]
        assert cli.main([*args, "--voice", "v", "--stream", "-o", str(out)]) == cli.NETWORK
        assert not out.exists()


class RefusingEngine:
    """The session engine, except that its first `refusals` admissions raise `error`; counts
    every admission (one per sentence: how often a call reached the model)."""

    def __init__(self, inner: Engine, error: Exception, refusals: int) -> None:
        self.inner = inner
        self.error = error
        self.refusals = refusals
        self.admissions = 0
        self.voice_id = 0  # the user's voice, set by the fixture

    def prepare(self, item: Item, sampling: Sampling, budget: int) -> Admission:
        self.admissions += 1
        if self.admissions <= self.refusals:
            raise self.error
        return self.inner.prepare(item, sampling, budget)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def refusing(
    live_server: Callable[..., LiveServer], engine: Engine
) -> Iterator[Callable[[Exception, int], tuple[RefusingEngine, Live]]]:
    servers: list[LiveServer] = []

    def start(error: Exception, refusals: int) -> tuple[RefusingEngine, Live]:
        wrapper = RefusingEngine(engine, error, refusals)
        server = live_server(load_engine=lambda: wrapper).__enter__()
        servers.append(server)
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as http:
            _, headers = new_user_key(http)
        live = Live(server, headers["Authorization"][7:])
        with live.client() as client:  # a voice, made before the refusals are counted
            voice = client.clone_voice("v", reference_audio(), "Hello there, this is my voice.")
        wrapper.voice_id = voice.voice_id
        wrapper.admissions = 0
        return wrapper, live

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def test_a_429_with_retry_after_is_retried_after_that_wait(refusing: Any) -> None:
    wrapper, live = refusing(QueueFull(1), 1)
    with live.client(max_retries=1) as client:
        started = time.monotonic()
        speech = client.tts("Hi there.", voice=wrapper.voice_id)
        waited = time.monotonic() - started
    assert speech.tokens_used == len("Hi there.")
    assert wrapper.admissions == 2 and waited >= 1.0
    with live.client() as client:
        assert client.usage().tts_calls == 1  # the refused attempt cost nothing


def test_retries_are_bounded_and_the_error_keeps_retry_after(refusing: Any) -> None:
    wrapper, live = refusing(QueueFull(1), 10)
    with live.client(max_retries=2) as client, pytest.raises(RateLimitError) as limited:
        client.tts("Hi there.", voice=wrapper.voice_id)
    assert limited.value.status == 429 and limited.value.retry_after == 1.0
    assert "queue is full" in limited.value.detail
    assert wrapper.admissions == 3  # the call and two retries

    wrapper.admissions = 0  # a wait longer than max_retry_wait is not waited for
    with live.client(max_retry_wait=0.5) as client, pytest.raises(RateLimitError):
        client.tts("Hi there.", voice=wrapper.voice_id)
    assert wrapper.admissions == 1


def test_a_503_without_retry_after_is_not_retried(refusing: Any) -> None:
    wrapper, live = refusing(Runaway("never stopped"), 10)
    with live.client(max_retries=5) as client, pytest.raises(ServiceUnavailableError) as down:
        client.tts("Hi there.", voice=wrapper.voice_id, seed=1)
    assert down.value.status == 503 and down.value.retry_after is None
    assert wrapper.admissions == 1


def test_the_async_client_retries_too(refusing: Any) -> None:
    wrapper, live = refusing(QueueFull(1), 1)

    async def speak() -> int:
        async with live.async_client(max_retries=1) as client:
            speech = await client.tts("Hi there.", voice=wrapper.voice_id)
            return speech.tokens_used

    assert asyncio.run(speak()) == len("Hi there.")
    assert wrapper.admissions == 2
    wrapper.admissions, wrapper.refusals = 0, 10  # and gives up after max_retries
    with pytest.raises(RateLimitError):
        asyncio.run(speak())
    assert wrapper.admissions == 2


def test_only_429_and_503_are_retried_whatever_else_sends_retry_after() -> None:
    """A proxy in front may add Retry-After to other statuses: only the server's two count."""
    policy = RetryPolicy(max_retries=3, max_wait=10)
    for status in (400, 404, 413, 500, 502):
        assert policy.delay(ApiError(status, "no", retry_after=1.0), 0) is None
    for status in (429, 503):
        assert policy.delay(ApiError(status, "busy", retry_after=1.0), 0) == 1.0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None) is None


def test_the_async_client_speaks_streams_and_batches(live: Live) -> None:
    async def run() -> tuple[Any, ...]:
        async with live.async_client() as client:
            voice = await client.clone_voice("v", reference_audio(), "Hello there, this is me.")
            listed = await client.voices()
            speech, batch = await asyncio.gather(
                client.tts("Two calls at once.", voice=voice),
                client.batch(["One.", "Two."], voice=voice),
            )
            async with client.stream("Streamed. Twice.", voice=voice, format="pcm") as audio:
                pieces = [piece async for piece in audio]
            return listed, speech, batch, pieces, await client.usage()

    listed, speech, batch, pieces, usage = asyncio.run(run())
    assert isinstance(listed[0], Voice) and listed[0].name == "v"
    assert speech.tokens_used == len("Two calls at once.") and len(batch.items) == 2
    assert pieces and len(b"".join(pieces)) % 2 == 0
    assert (usage.tts_calls, usage.batch_calls) == (2, 1)


def test_the_realtime_session_speaks_text_as_it_arrives(live: Live) -> None:
    async def run() -> tuple[list[RealtimeEvent], bytes, int]:
        async with live.async_client() as client:
            await client.design_voice("Narrator", "Warm, calm narrator voice.")
            events: list[RealtimeEvent] = []
            audio = bytearray()
            async with client.realtime(voice="Narrator", format="wav") as session:
                rate = session.sample_rate
                for piece in ["Hello! This text ", "arrives in pieces. ", "Bye."]:
                    await session.send_text(piece)
                await session.close()
                async for item in session:
                    if isinstance(item, RealtimeAudio):
                        assert item.segment is not None
                        audio.extend(item.data)
                    else:
                        events.append(item)
            return events, bytes(audio), rate

    events, audio, rate = asyncio.run(run())
    assert rate == 24000
    done = [event for event in events if event.type == "audio.done"]
    assert [event.segment for event in done] == [0, 1, 2]
    assert events[-1].type == "session.done"
    assert events[-1].data["usage"]["total_tokens"] == len("Hello!This text arrives in pieces.Bye.")
    with wave.open(io.BytesIO(audio)) as first:  # segment 0 is a complete WAV file
        assert first.getframerate() == 24000


def test_realtime_refusals_raise_typed_errors(live: Live) -> None:
    async def connect(key: str, voice: str) -> None:
        async with AsyncClient(live.server.url, key) as client, client.realtime(voice=voice):
            pass

    with pytest.raises(AuthenticationError) as denied:
        asyncio.run(connect("qttsk_not-a-key", "alloy"))
    assert denied.value.status == 401 and denied.value.detail
    with pytest.raises(NotFoundError) as unknown:
        asyncio.run(connect(live.key, "Nobody"))
    assert "Nobody" in unknown.value.detail
