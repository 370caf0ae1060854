"""The asynchronous client: `Client`'s methods as coroutines, plus the realtime socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from qwen3_tts_client import calls
from qwen3_tts_client.calls import AudioSource, Call, SpeechOptions, VoiceRef
from qwen3_tts_client.connection import DEFAULT_TIMEOUT_S, Connection
from qwen3_tts_client.errors import NetworkError, error_for
from qwen3_tts_client.models import (
    Batch,
    Speaker,
    Speech,
    StoredAudio,
    Usage,
    Voice,
    VoiceCreated,
    VoiceDetail,
    VoiceSample,
)
from qwen3_tts_client.realtime import RealtimeSession, open_session, session_config
from qwen3_tts_client.streams import AsyncAudioStream

if TYPE_CHECKING:  # only for the type checker: no runtime dependency on typing_extensions
    from typing_extensions import Unpack

T = TypeVar("T")


class AsyncClient:
    """`Client` for asyncio code: the same methods and errors, awaited; `stream()` is an
    async context manager, and `realtime()` opens the realtime socket. Use with `async with`,
    or `await aclose()`."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = 2,
        max_retry_wait: float = 30.0,
    ) -> None:
        self.connection = Connection.resolve(
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
        )
        self._http = httpx.AsyncClient(**self.connection.http_options())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- sending (as Client._send, awaited) -------------------------------------------------
    async def _send(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.send(call.build(self._http), stream=stream)
                if response.is_success:
                    return response
                content = await response.aread()
                await response.aclose()
            except httpx.TransportError as error:
                raise NetworkError(f"{self.connection.base_url}: {error!r}") from error
            refused = error_for(response.status_code, response.headers, content)
            delay = self.connection.retry.delay(refused, attempt)
            if delay is None:
                raise refused
            await asyncio.sleep(delay)
            attempt += 1

    async def _call(self, call: Call[T]) -> T:
        return call.read(await self._send(call))

    # -- voices (see Client for each method's rules) -----------------------------------------
    async def clone_voice(
        self,
        name: str,
        audio: AudioSource,
        transcript: str | None = None,
        language: str | None = None,
    ) -> VoiceCreated:
        return await self._call(calls.clone_voice(name, audio, transcript, language))

    async def design_voice(
        self, name: str, description: str, language: str | None = None
    ) -> VoiceCreated:
        return await self._call(calls.design_voice(name, description, language))

    async def voices(self) -> list[Voice]:
        return await self._call(calls.voices())

    async def voice(self, voice: VoiceRef) -> VoiceDetail:
        return await self._call(calls.voice(voice))

    async def voice_sample(self, voice: VoiceRef) -> VoiceSample:
        return await self._call(calls.voice_sample(voice))

    async def delete_voice(self, voice: VoiceRef) -> None:
        await self._call(calls.delete_voice(voice))

    async def speakers(self) -> list[Speaker]:
        return await self._call(calls.speakers())

    # -- speech ------------------------------------------------------------------------------
    async def tts(
        self, text: str, voice: VoiceRef | None = None, **options: Unpack[SpeechOptions]
    ) -> Speech:
        return await self._call(calls.tts(calls.speech_body(text, voice, options)))

    @asynccontextmanager
    async def stream(
        self, text: str, voice: VoiceRef | None = None, **options: Unpack[SpeechOptions]
    ) -> AsyncIterator[AsyncAudioStream]:
        """`async with client.stream(...) as audio:` then `async for piece in audio:`."""
        call = calls.stream(calls.speech_body(text, voice, options, default_format="pcm"))
        response = await self._send(call, stream=True)
        try:
            yield AsyncAudioStream(call.read(response), response)
        finally:
            await response.aclose()

    async def batch(
        self, texts: Sequence[str], voice: VoiceRef | None = None, **options: Unpack[SpeechOptions]
    ) -> Batch:
        return await self._call(calls.batch(calls.speech_body(list(texts), voice, options)))

    async def stored(self, generation_id: int) -> StoredAudio:
        return await self._call(calls.stored(generation_id))

    async def usage(self) -> Usage:
        return await self._call(calls.usage())

    # -- realtime ----------------------------------------------------------------------------
    def realtime(
        self,
        voice: str | int | None = None,
        *,
        speaker: str | None = None,
        instructions: str | None = None,
        language: str = "auto",
        format: str = "pcm",
        sample_rate: int | None = None,
        speed: float = 1.0,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> AbstractAsyncContextManager[RealtimeSession]:
        """The realtime socket, configured::

            async with client.realtime(voice="Geoff") as session:
                await session.send_text("Hello! ")
                await session.close()          # speak the rest, then end
                async for item in session:     # RealtimeEvent | RealtimeAudio
                    ...

        `voice` as /v1/audio/speech takes it (your voice's name or id, an OpenAI or preset
        name), or `speaker`; exactly one. A refused key or configuration raises its ApiError.
        """
        config = session_config(
            voice=str(voice) if voice is not None else None,
            speaker=speaker,
            instructions=instructions,
            language=language,
            format=format,
            sample_rate=sample_rate,
            speed=speed,
            temperature=temperature,
            seed=seed,
        )
        return open_session(self.connection, config)
