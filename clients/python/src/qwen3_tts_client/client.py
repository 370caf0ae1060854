"""The synchronous client: one method per endpoint of the native API."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
from qwen3_tts_client.streams import AudioStream

if TYPE_CHECKING:  # only for the type checker: no runtime dependency on typing_extensions
    from typing_extensions import Unpack

T = TypeVar("T")


class Client:
    """A Qwen3-TTS Server, called from ordinary (blocking) code.

    `base_url` and `api_key` default to QWEN3_TTS_URL (else http://localhost:8000) and
    QWEN3_TTS_API_KEY. Each call raises a subclass of `ApiError` when the server refuses it
    (`status`, `detail`, `retry_after`), `NetworkError` when the server cannot be reached.
    A 429 or 503 with Retry-After is retried up to `max_retries` times when the wait is at most
    `max_retry_wait` seconds; nothing else is retried. Use as a context manager, or `close()`.
    """

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
        self._http = httpx.Client(**self.connection.http_options())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    # -- sending -----------------------------------------------------------------------------
    def _send(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
        """The successful response, after the retries the server asked for; else the error."""
        attempt = 0
        while True:
            try:
                response = self._http.send(call.build(self._http), stream=stream)
                if response.is_success:
                    return response
                content = response.read()
                response.close()
            except httpx.TransportError as error:
                raise NetworkError(f"{self.connection.base_url}: {error!r}") from error
            refused = error_for(response.status_code, response.headers, content)
            delay = self.connection.retry.delay(refused, attempt)
            if delay is None:
                raise refused
            time.sleep(delay)
            attempt += 1

    def _call(self, call: Call[T]) -> T:
        return call.read(self._send(call))

    # -- voices ------------------------------------------------------------------------------
    def clone_voice(
        self,
        name: str,
        audio: AudioSource,
        transcript: str | None = None,
        language: str | None = None,
    ) -> VoiceCreated:
        """Clone a voice from reference audio (bytes, a path or a binary file; WAV, MP3, OGG
        or FLAC, recognised from its content, 1 to 60 s). `transcript` is what it says."""
        return self._call(calls.clone_voice(name, audio, transcript, language))

    def design_voice(
        self, name: str, description: str, language: str | None = None
    ) -> VoiceCreated:
        """Make a voice from a description in words (the VoiceDesign model)."""
        return self._call(calls.design_voice(name, description, language))

    def voices(self) -> list[Voice]:
        """Your live voices, newest first."""
        return self._call(calls.voices())

    def voice(self, voice: VoiceRef) -> VoiceDetail:
        """One voice (an id, or a Voice): transcript, description and kind too."""
        return self._call(calls.voice(voice))

    def voice_sample(self, voice: VoiceRef) -> VoiceSample:
        """A voice's reference audio, exactly as stored, with its transcript."""
        return self._call(calls.voice_sample(voice))

    def delete_voice(self, voice: VoiceRef) -> None:
        """Delete a voice (an id, or a Voice). Another user's voice is a NotFoundError."""
        self._call(calls.delete_voice(voice))

    def speakers(self) -> list[Speaker]:
        """The preset speakers (ServiceUnavailableError without the CustomVoice model)."""
        return self._call(calls.speakers())

    # -- speech ------------------------------------------------------------------------------
    def tts(
        self, text: str, voice: VoiceRef | None = None, **options: Unpack[SpeechOptions]
    ) -> Speech:
        """One text as one audio file, with the X- headers' metadata.

        `voice` is one of your voices (an id, or a Voice); or pass `speaker=` (a preset). The
        other options (`format`, `language`, `seed`, `instruct`, `store`, ...): SpeechOptions.
        """
        return self._call(calls.tts(calls.speech_body(text, voice, options)))

    @contextmanager
    def stream(
        self, text: str, voice: VoiceRef | None = None, **options: Unpack[SpeechOptions]
    ) -> Iterator[AudioStream]:
        """The audio of one text as it is made (`format` `pcm`, the default here, or `wav`)::

            with client.stream("Hello.", voice=12) as audio:
                rate = audio.info.sample_rate
                for piece in audio:
                    ...

        Every error the request can cause is raised here, before any audio. Leaving the block
        early closes the stream: the server charges the sentences it had sent."""
        call = calls.stream(calls.speech_body(text, voice, options, default_format="pcm"))
        response = self._send(call, stream=True)
        try:
            yield AudioStream(call.read(response), response)
        finally:
            response.close()

    def batch(
        self, texts: Sequence[str], voice: VoiceRef | None = None, **options: Unpack[SpeechOptions]
    ) -> Batch:
        """Several texts in one call (cheaper per character: the batch discount), unpacked:
        `items` in input order, each with its audio and its line of the manifest."""
        return self._call(calls.batch(calls.speech_body(list(texts), voice, options)))

    def stored(self, generation_id: int) -> StoredAudio:
        """The audio of a generation made with `store=True`."""
        return self._call(calls.stored(generation_id))

    def usage(self) -> Usage:
        """Your usage totals."""
        return self._call(calls.usage())
