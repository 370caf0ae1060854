"""WS /v1/audio/speech/stream: text in as it arrives, audio out per sentence (README: protocol).

This module is the transport: the handshake (the API key comes in the Authorization header or
as the subprotocol `bearer.<key>`, never in the URL, which servers and proxies log), JSON
messages in, JSON events and binary audio frames out, and the session's idle and total time
limits. What the messages do is `services/realtime.py`'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import MutableMapping
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import TypeAdapter, ValidationError

from qwen3_tts_server.api.openai_errors import openai_error
from qwen3_tts_server.context import AppContext
from qwen3_tts_server.errors import ApiError, BadRequest, Unauthorized
from qwen3_tts_server.schemas import RealtimeConfig, RealtimeMessage, RealtimeText, VoiceRef
from qwen3_tts_server.services.realtime import (
    RealtimeSession,
    SessionConfig,
    error_event,
    usage,
)
from qwen3_tts_server.services.threads import in_thread

log = logging.getLogger(__name__)

router = APIRouter()

#: The subprotocol the server answers with; offer it along with `bearer.<key>`.
SUBPROTOCOL = "qwen3-tts"
KEY_SUBPROTOCOL_PREFIX = "bearer."
#: Query parameters that would put a key in the URL: refused, so no log ever keeps one.
_URL_KEY_NAMES = frozenset({"api_key", "key", "token", "access_token", "authorization"})

_MESSAGES: TypeAdapter[Any] = TypeAdapter(RealtimeMessage)


def _presented_key(websocket: WebSocket) -> str:
    header = websocket.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip(" \t")
    for protocol in websocket.scope.get("subprotocols", []):
        if protocol.startswith(KEY_SUBPROTOCOL_PREFIX):
            return str(protocol.removeprefix(KEY_SUBPROTOCOL_PREFIX))
    return ""


async def _deny(websocket: WebSocket, message: str) -> None:
    """Refuse the handshake: a 401 with OpenAI's error body where the server can send one,
    else a close (1008) with the reason."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(openai_error(401, message))
    else:
        await websocket.close(code=1008, reason=message[:120])


@router.websocket("/v1/audio/speech/stream")
async def realtime_speech(websocket: WebSocket) -> None:
    context: AppContext = websocket.app.state.context
    try:
        if _URL_KEY_NAMES & {name.lower() for name in websocket.query_params}:
            raise Unauthorized(
                "API keys are refused in the URL, which logs keep: send the header "
                "Authorization: Bearer <key>, or the subprotocol bearer.<key>"
            )
        caller = await in_thread(context.accounts.authenticate, _presented_key(websocket))
    except ApiError as error:
        await _deny(websocket, error.detail)
        return
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    await _Connection(websocket, context, caller.user_id).run()


def _config(message: RealtimeConfig) -> SessionConfig:
    voice = message.voice.id if isinstance(message.voice, VoiceRef) else message.voice
    return SessionConfig(
        voice=voice,
        speaker=message.speaker,
        instructions=(message.instructions or "").strip(),
        language=message.language,
        format=message.format,
        sample_rate=message.sample_rate,
        speed=message.speed,
        temperature=message.temperature,
        seed=message.seed,
        timestamps=message.timestamps,
    )


def _invalid(error: ValidationError) -> BadRequest:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "message"
    return BadRequest(f"Invalid message ({where}): {first['msg']}")


class _Connection:
    """One accepted socket: its session, its limits, and the `Sink` the session sends to."""

    def __init__(self, websocket: WebSocket, context: AppContext, user_id: int) -> None:
        self._ws = websocket
        self._context = context
        self._user_id = user_id
        self._session: RealtimeSession | None = None
        self._deadline = 0.0  # loop time when the session must end (set by `run`)
        self._lock = asyncio.Lock()  # one frame at a time from the session and the reader

    # -- Sink --------------------------------------------------------------------------------
    async def event(self, payload: dict[str, Any]) -> None:
        async with self._lock:
            await self._ws.send_text(json.dumps(payload))
        if payload["type"] == "audio.done":
            self._context.metrics.record_tokens("realtime", payload["usage"]["total_tokens"])
            self._context.metrics.record_audio_seconds(payload["audio_seconds"])

    async def audio(self, data: bytes) -> None:
        async with self._lock:
            await self._ws.send_bytes(data)

    # -- reading -----------------------------------------------------------------------------
    async def run(self) -> None:
        settings = self._context.settings
        loop = asyncio.get_running_loop()
        deadline = self._deadline = loop.time() + settings.realtime_max_session_s
        last_input = loop.time()
        try:
            while True:
                now = loop.time()
                if now >= deadline:
                    await self._expire()
                    return
                wait = min(deadline, last_input + settings.realtime_idle_s) - now
                try:
                    message = await asyncio.wait_for(self._ws.receive(), timeout=max(wait, 0))
                except TimeoutError:
                    if loop.time() >= deadline:
                        continue
                    if self._session is not None and self._session.busy:
                        last_input = loop.time()  # waiting for audio is not idling
                        continue
                    idle = settings.realtime_idle_s
                    await self._end(f"no message for {idle:g} s: the session was closed")
                    return
                if message["type"] == "websocket.disconnect":
                    return
                last_input = loop.time()
                if not await self._handle(message):
                    return
        except (WebSocketDisconnect, RuntimeError) as error:  # gone while we were sending
            log.info("realtime session of user %d ended: %r", self._user_id, error)
        finally:
            if self._session is not None:
                await self._session.close()

    async def _expire(self) -> None:
        limit = self._context.settings.realtime_max_session_s
        await self._end(f"the session reached its limit of {limit:g} s")

    async def _end(self, reason: str) -> None:
        """Close for a limit: say why, then close normally (undelivered audio is cancelled)."""
        await self.event({"type": "error", "error": {"status": 408, "message": reason}})
        await self._ws.close(code=1000, reason=reason[:120])

    async def _handle(self, message: MutableMapping[str, Any]) -> bool:
        """One client message; False once the session has ended."""
        try:
            text = message.get("text")
            if text is None:
                raise BadRequest("Send JSON text messages; binary frames are not accepted")
            try:
                parsed = _MESSAGES.validate_json(text)
            except ValidationError as error:
                raise _invalid(error) from None
            if isinstance(parsed, RealtimeConfig):
                await self._configure(parsed)
                return True
            session = self._session
            if session is None:
                raise BadRequest("Send session.config first")
            if isinstance(parsed, RealtimeText):
                session.append(parsed.text)
            elif parsed.type == "input.done":
                session.flush()
            elif parsed.type == "cancel":
                dropped = await session.cancel()
                await self.event({"type": "cancelled", "segments": dropped})
            else:  # session.close
                await self._close(session)
                return False
        except ApiError as error:
            await self.event(error_event(error))
        return True

    async def _configure(self, message: RealtimeConfig) -> None:
        if self._session is not None:
            raise BadRequest("The session is configured already; open a new one to change it")
        self._session = await self._context.realtime.open(self._user_id, _config(message), self)
        await self.event(
            {
                "type": "session.created",
                "session": {
                    "format": message.format,
                    "sample_rate": self._session.sample_rate,
                    "language": message.language,
                },
            }
        )

    async def _close(self, session: RealtimeSession) -> None:
        remaining = self._deadline - asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(session.finish(), timeout=max(remaining, 0))
        except TimeoutError:
            await self._expire()
            return
        await self.event(
            {
                "type": "session.done",
                "segments": session.segments_done,
                "usage": usage(session.tokens_used),
            }
        )
        await self._ws.close(code=1000)
