"""An open streamed /tts: what its headers said, and its audio pieces as they arrive."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx

from qwen3_tts_client.errors import StreamInterrupted
from qwen3_tts_client.models import StreamInfo

_CUT = (
    "the stream ended before its end (the server failed mid-way, which costs nothing, or the "
    "connection broke): the audio is incomplete"
)


class AudioStream:
    """Iterate for the audio pieces (bytes: s16le mono for `pcm`, a WAV of unknown length for
    `wav`); `info` has the headers. A stream cut short raises StreamInterrupted, so a cut
    stream never passes for a short file. Leaving early is fine: the server charges what it
    sent and drops the rest."""

    def __init__(self, info: StreamInfo, response: httpx.Response) -> None:
        self.info = info
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_bytes()
        except httpx.TransportError as error:
            raise StreamInterrupted(_CUT) from error


class AsyncAudioStream:
    """`AudioStream` for `AsyncClient`: iterate with `async for`."""

    def __init__(self, info: StreamInfo, response: httpx.Response) -> None:
        self.info = info
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._response.aiter_bytes():
                yield piece
        except httpx.TransportError as error:
            raise StreamInterrupted(_CUT) from error
