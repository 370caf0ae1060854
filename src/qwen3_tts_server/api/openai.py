"""OpenAI-compatible speech: POST /v1/audio/speech, for clients written against OpenAI's API.

Billing, limits and storage rules are those of /tts (this is /tts with OpenAI's field names):
the API key is the same Bearer key, and `voice` names one of the caller's own voices.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from qwen3_tts_server.api.deps import Context, CurrentUser
from qwen3_tts_server.api.responses import USER_ERRORS, error_responses
from qwen3_tts_server.api.speech_responses import speech_response
from qwen3_tts_server.errors import BadRequest
from qwen3_tts_server.schemas import OpenAISpeechRequest
from qwen3_tts_server.services.speech import SpeechRequest

router = APIRouter(prefix="/v1", tags=["openai"], responses=USER_ERRORS)


@router.post(
    "/audio/speech",
    response_class=Response,
    responses={
        200: {"content": {"audio/*": {}}, "description": "The audio file"},
        **error_responses(400, 402, 404, 409, 429, 503),
    },
    summary="Text to speech (OpenAI-compatible)",
)
async def speech(body: OpenAISpeechRequest, caller: CurrentUser, context: Context) -> Response:
    """OpenAI's request shape (`input`, `voice`, `response_format`, default mp3); the same
    response headers as /tts. `speed` other than 1.0 is refused rather than silently ignored.
    `stream_format: "audio"` streams like /tts's `stream: true` (`pcm` or `wav`)."""
    if body.speed != 1.0:
        raise BadRequest("speed other than 1.0 is not supported; resample the audio client-side")
    if body.stream_format == "sse":
        raise BadRequest('stream_format "sse" is not supported; use "audio" or leave it out')
    voice_id = await run_in_threadpool(context.voices.resolve, caller.user_id, body.voice)
    request = SpeechRequest(
        voice_id=voice_id,
        language=body.language,
        format=body.response_format,
        store=False,
    )
    return await speech_response(
        context, caller.user_id, body.input, request, body.stream_format == "audio"
    )
