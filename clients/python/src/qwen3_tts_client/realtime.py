"""The realtime socket, WS /v1/audio/speech/stream: text in as it is written, audio out per
sentence (the server's README, "Realtime", has the protocol).

Uses the `websockets` package (httpx speaks no WebSocket). The key goes in the Authorization
header of the handshake, never in the URL.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from qwen3_tts_client.connection import Connection
from qwen3_tts_client.errors import (
    ApiError,
    NetworkError,
    Qwen3TTSError,
    UnexpectedResponse,
    error_for,
)

PATH = "/v1/audio/speech/stream"
SUBPROTOCOL = "qwen3-tts"
#: The largest message accepted: a `wav` segment arrives as one frame (~48 KB per second).
MAX_MESSAGE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class RealtimeEvent:
    """One JSON event (`type` and the whole `data`): session.created, audio.start, audio.done,
    cancelled, error, session.done."""

    type: str
    data: dict[str, Any] = field(repr=False)

    @property
    def segment(self) -> int | None:
        value = self.data.get("segment")
        return int(value) if value is not None else None

    @property
    def error(self) -> ApiError | None:
        """For an `error` event: the typed error (`status`, `detail`), not raised: the session
        goes on after a mistake (status 408: a time limit closed it)."""
        if self.type != "error":
            return None
        error = self.data.get("error") or {}
        status = int(error.get("status", 500))
        body = json.dumps({"detail": str(error.get("message", ""))}).encode()
        return error_for(status, {}, body)


@dataclass(frozen=True)
class RealtimeAudio:
    """A binary frame: audio of `segment` (`pcm`: s16le mono at the session's sample rate;
    `wav`: one complete WAV file per segment)."""

    segment: int | None
    data: bytes = field(repr=False)


def websocket_url(base_url: str) -> str:
    """ws(s)://host[/prefix]/v1/audio/speech/stream for an http(s) base URL."""
    scheme, rest = base_url.split("://", 1)
    return {"http": "ws", "https": "wss"}.get(scheme, scheme) + "://" + rest + PATH


class RealtimeSession:
    """An open, configured session. Send text with `send_text`, read with `async for`:
    `RealtimeEvent`s and `RealtimeAudio` in the order the server sent them. The iteration ends
    when the server closes the socket (after `close()` has spoken the rest)."""

    def __init__(self, socket: ClientConnection, created: dict[str, Any]) -> None:
        self._socket = socket
        #: The `session` of session.created: format, sample_rate, language.
        self.config: dict[str, Any] = created.get("session", {})
        self._segment: int | None = None

    @property
    def sample_rate(self) -> int:
        return int(self.config["sample_rate"])

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            await self._socket.send(json.dumps(message))
        except ConnectionClosed as error:
            raise NetworkError(f"the realtime session is closed: {error}") from error

    async def send_text(self, text: str) -> None:
        """More text, appended to what came before; each sentence is spoken once complete."""
        await self._send({"type": "input.text", "text": text})

    async def flush(self) -> None:
        """Speak what is buffered now, even without a full stop (the session stays open)."""
        await self._send({"type": "input.done"})

    async def cancel(self) -> None:
        """Barge-in: drop buffered text, queued segments and the one being sent."""
        await self._send({"type": "cancel"})

    async def close(self) -> None:
        """Speak what is left, then the server sends session.done and closes."""
        await self._send({"type": "session.close"})

    async def __aiter__(self) -> AsyncIterator[RealtimeEvent | RealtimeAudio]:
        try:
            async for message in self._socket:
                if isinstance(message, bytes):
                    yield RealtimeAudio(self._segment, message)
                    continue
                event = _event(message)
                if event.type == "audio.start":
                    self._segment = event.segment
                yield event
        except ConnectionClosed as error:
            raise NetworkError(f"the realtime session was cut: {error}") from error


def _event(message: str) -> RealtimeEvent:
    try:
        data = json.loads(message)
        return RealtimeEvent(str(data["type"]), data)
    except (ValueError, KeyError, TypeError) as error:
        raise UnexpectedResponse(f"unreadable realtime event: {message[:200]!r}") from error


def session_config(**fields: Any) -> dict[str, Any]:
    """The session.config message; fields left as None are left out (server defaults)."""
    return {"type": "session.config", **{k: v for k, v in fields.items() if v is not None}}


async def _handshake(connection: Connection) -> ClientConnection:
    try:
        return await connect(
            websocket_url(connection.base_url),
            additional_headers=connection.headers(),
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            max_size=MAX_MESSAGE_BYTES,
            open_timeout=connection.timeout,
        )
    except InvalidStatus as refused:
        response = refused.response
        body = bytes(response.body or b"")
        raise error_for(response.status_code, response.headers, body) from None
    except (OSError, TimeoutError) as error:
        raise NetworkError(f"{connection.base_url}: {error!r}") from error


@asynccontextmanager
async def open_session(
    connection: Connection, config: dict[str, Any]
) -> AsyncIterator[RealtimeSession]:
    """Connect, send `config`, wait for session.created; a refused key or configuration is
    raised as its ApiError. The socket is closed on leaving."""
    socket = await _handshake(connection)
    try:
        await socket.send(json.dumps(config))
        try:
            answer = _event(str(await socket.recv()))
        except ConnectionClosed as error:
            raise NetworkError(f"the server closed the session: {error}") from error
        refused = answer.error
        if refused is not None:
            raise refused
        if answer.type != "session.created":
            raise Qwen3TTSError(f"expected session.created, got {answer.type}")
        yield RealtimeSession(socket, answer.data)
    finally:
        await socket.close()
