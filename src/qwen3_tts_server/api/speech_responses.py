"""One text as an HTTP response, whole or streamed: shared by /tts and /v1/audio/speech.

Not a router: route modules import this, never each other.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Sequence

from fastapi import Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from qwen3_tts_server.api.openai_errors import openai_error_body
from qwen3_tts_server.context import AppContext
from qwen3_tts_server.services.speech import SpeechRequest
from qwen3_tts_server.services.streaming import STREAMABLE_FORMATS, SpeechStream
from qwen3_tts_server.services.synthesis import Speech
from qwen3_tts_server.values import Word

log = logging.getLogger(__name__)

_SSE = "text/event-stream"


async def speech_response(
    context: AppContext, user_id: int, text: str, request: SpeechRequest, stream: bool
) -> Response:
    """One text as a whole file or as a stream, with /tts's headers."""
    if stream:
        return _StreamedSpeech(context, await context.streaming.open(user_id, text, request))
    speech = await context.synthesis.tts(user_id, text, request)
    _count(context, speech.tokens_used, speech.duration_s)
    return Response(speech.data, media_type=speech.media_type, headers=_whole_headers(speech))


def _whole_headers(speech: Speech) -> dict[str, str]:
    return {
        **_headers(speech.extension, speech.generation_id, speech.tokens_used),
        "X-Latency-Ms": str(speech.timing.model_ms),
        "X-Queue-Ms": str(speech.timing.queue_ms),
        "X-Sample-Rate": str(speech.sample_rate),
        "X-Finish-Reason": str(speech.finish_reason),
    }


def _words(words: Sequence[Word]) -> list[dict[str, object]]:
    return [word.as_dict() for word in words]


async def timed_speech_response(
    context: AppContext, user_id: int, text: str, request: SpeechRequest
) -> Response:
    """One text and its words as JSON (/tts/timestamps), with /tts's headers and the
    aligner's time in X-Align-Ms."""
    speech = await context.synthesis.tts(user_id, text, request, timestamps=True)
    _count(context, speech.tokens_used, speech.duration_s)
    assert speech.words is not None
    body = {
        "audio_base64": base64.b64encode(speech.data).decode(),
        "format": request.format.strip().lower(),
        "sample_rate": speech.sample_rate,
        "duration_s": round(speech.duration_s, 3),
        "words": _words(speech.words),
        "generation_id": speech.generation_id,
        "tokens_used": speech.tokens_used,
    }
    headers = _whole_headers(speech) | {"X-Align-Ms": str(speech.align_ms)}
    del headers["Content-Disposition"]
    return JSONResponse(body, headers=headers)


def _headers(extension: str, generation_id: int, tokens_used: int) -> dict[str, str]:
    return {
        "Content-Disposition": f'attachment; filename="tts.{extension}"',
        "X-Generation-Id": str(generation_id),
        "X-Tokens-Used": str(tokens_used),
    }


def _count(context: AppContext, tokens_used: int, audio_seconds: float) -> None:
    context.metrics.record_tokens("tts", tokens_used)
    context.metrics.record_audio_seconds(audio_seconds)


class _StreamedSpeech(StreamingResponse):
    """Sends a SpeechStream, then closes it however the response ended.

    Starlette stops iterating a stream whose client went away without closing the iterator,
    so closing here is what lets the stream settle itself as cancelled and withdraw its queued
    jobs. A failure mid-stream cannot become an error response (the headers are gone): the
    response ends without its final chunk, so the server drops the connection and the client
    sees an incomplete body, not a short file. Counted in the metrics with what it was charged
    (all of it once complete; what it was sent when the client left).
    """

    def __init__(
        self,
        context: AppContext,
        stream: SpeechStream,
        content: AsyncIterator[bytes] | None = None,
        media_type: str | None = None,
    ) -> None:
        """`content` (default: the audio itself) is what the body sends, made from `stream`
        (e.g. server-sent events wrapping its chunks)."""
        super().__init__(
            stream.chunks() if content is None else content,
            media_type=media_type or stream.media_type,
            headers={
                **_headers(stream.extension, stream.generation_id, stream.tokens_used),
                "X-First-Audio-Ms": str(stream.first_audio_ms),
                "X-Queue-Ms": str(stream.queue_ms),
                "X-Sample-Rate": str(stream.sample_rate),
            },
        )
        self._context = context
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception as error:  # recorded by the stream, or by close() below
            generation_id = self._stream.generation_id
            log.warning("stream of generation %d ended early: %s", generation_id, error)
        finally:
            await self._stream.close()
            self._context.metrics.observe_stream(self._stream.playback.quality())
        if self._stream.charge is not None:
            _count(self._context, *self._stream.charge)


# -- NDJSON (/tts/timestamps with stream: true) -------------------------------------------------
_NDJSON = "application/x-ndjson"


def _line(payload: dict[str, object]) -> bytes:
    return json.dumps(payload).encode() + b"\n"


async def timed_stream_response(
    context: AppContext, user_id: int, text: str, request: SpeechRequest
) -> Response:
    """Streamed /tts/timestamps: one NDJSON line per audio piece with the words aligned
    since the line before, then a last line with the remaining words and the totals. A
    failure mid-way ends the body without its last line (the stream is recorded as failed,
    uncharged), as a streamed /tts ends without its final chunk."""
    stream = await context.streaming.open(user_id, text, request, timestamps=True)

    async def lines() -> AsyncIterator[bytes]:
        seconds = 0.0
        async for data, words in stream.timed_chunks():
            if data:
                seconds += _pcm_seconds(data, stream.sample_rate, request.format)
                audio = base64.b64encode(data).decode()
                yield _line({"audio_base64": audio, "words": _words(words)})
                continue
            yield _line(
                {
                    "done": True,
                    "words": _words(words),
                    "generation_id": stream.generation_id,
                    "tokens_used": stream.tokens_used,
                    "duration_s": round(seconds, 3),
                    "sample_rate": stream.sample_rate,
                    "format": request.format.strip().lower(),
                    "align_ms": stream.align_ms,
                }
            )

    return _StreamedSpeech(context, stream, lines(), _NDJSON)


def _pcm_seconds(data: bytes, sample_rate: int, fmt: str) -> float:
    """Seconds of s16le audio in one streamed piece (the WAV header is none)."""
    if data.startswith(b"RIFF") and fmt.strip().lower() == "wav":
        return 0.0
    return len(data) / 2 / sample_rate


# -- server-sent events (OpenAI's stream_format "sse") ----------------------------------------
def _event(payload: dict[str, object]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _timed(payload: dict[str, object], words: Sequence[Word] | None) -> dict[str, object]:
    """An event with `words` added (timestamps asked), OpenAI's own fields untouched."""
    return payload if words is None else payload | {"words": _words(words)}


def _delta(audio: bytes, words: Sequence[Word] | None = None) -> bytes:
    payload: dict[str, object] = {
        "type": "speech.audio.delta",
        "audio": base64.b64encode(audio).decode(),
    }
    return _event(_timed(payload, words))


def _done(tokens_used: int, words: Sequence[Word] | None = None) -> bytes:
    """OpenAI's closing event. Usage counts what the call is charged: characters of the input
    (there are no separately billed audio tokens, so output_tokens is 0)."""
    usage = {"input_tokens": tokens_used, "output_tokens": 0, "total_tokens": tokens_used}
    return _event(_timed({"type": "speech.audio.done", "usage": usage}, words))


async def sse_speech_response(
    context: AppContext,
    user_id: int,
    text: str,
    request: SpeechRequest,
    timestamps: bool = False,
) -> Response:
    """One text as server-sent events: `speech.audio.delta` events with base64 audio, then
    `speech.audio.done` with usage. `pcm` and `wav` are sent piece by piece as they are made;
    other formats are complete files only at their end, so they come as one delta.

    Errors a client can cause come before any event, as a JSON error. A model failure mid-way
    (recorded, free of charge) ends the events with an `error` event instead of the done one.
    """
    if request.format.strip().lower() not in STREAMABLE_FORMATS:
        speech = await context.synthesis.tts(user_id, text, request, timestamps)
        _count(context, speech.tokens_used, speech.duration_s)

        async def whole() -> AsyncIterator[bytes]:
            yield _delta(speech.data, speech.words)
            yield _done(speech.tokens_used, None if speech.words is None else [])

        return StreamingResponse(
            whole(),
            media_type=_SSE,
            headers={
                **_headers(speech.extension, speech.generation_id, speech.tokens_used),
                "X-Latency-Ms": str(speech.timing.model_ms),
                "X-Queue-Ms": str(speech.timing.queue_ms),
                "X-Sample-Rate": str(speech.sample_rate),
            },
        )
    stream = await context.streaming.open(user_id, text, request, timestamps)

    async def events() -> AsyncIterator[bytes]:
        last: list[Word] | None = [] if timestamps else None
        try:
            async for chunk, words in stream.timed_chunks():
                if chunk:
                    yield _delta(chunk, words if timestamps else None)
                else:
                    last = words
        except Exception as error:  # already recorded as failed by the stream
            message = f"Synthesis failed after part of the audio was sent: {error}"
            yield _event({"type": "error", "error": openai_error_body(500, message)["error"]})
            return
        yield _done(stream.tokens_used, last)

    return _StreamedSpeech(context, stream, events(), _SSE)
