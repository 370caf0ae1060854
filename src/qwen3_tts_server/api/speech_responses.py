"""One text as an HTTP response, whole or streamed: shared by /tts and /v1/audio/speech.

Not a router: route modules import this, never each other.
"""

from __future__ import annotations

import logging

from fastapi import Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from qwen3_tts_server.context import AppContext
from qwen3_tts_server.services.speech import SpeechRequest
from qwen3_tts_server.services.streaming import SpeechStream

log = logging.getLogger(__name__)


async def speech_response(
    context: AppContext, user_id: int, text: str, request: SpeechRequest, stream: bool
) -> Response:
    """One text as a whole file or as a stream, with /tts's headers."""
    if stream:
        return _StreamedSpeech(context, await context.streaming.open(user_id, text, request))
    speech = await context.synthesis.tts(user_id, text, request)
    _count(context, speech.tokens_used, speech.duration_s)
    return Response(
        speech.data,
        media_type=speech.media_type,
        headers={
            **_headers(speech.extension, speech.generation_id, speech.tokens_used),
            "X-Latency-Ms": str(speech.timing.model_ms),
            "X-Queue-Ms": str(speech.timing.queue_ms),
            "X-Sample-Rate": str(speech.sample_rate),
            "X-Finish-Reason": str(speech.finish_reason),
        },
    )


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

    def __init__(self, context: AppContext, stream: SpeechStream) -> None:
        super().__init__(
            stream.chunks(),
            media_type=stream.media_type,
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
        if self._stream.charge is not None:
            _count(self._context, *self._stream.charge)
