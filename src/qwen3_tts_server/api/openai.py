"""OpenAI-compatible speech: POST /v1/audio/speech, for clients written against OpenAI's API.

Billing, limits and storage rules are those of /tts (this is /tts with OpenAI's field names);
the API key is the same Bearer key. What differs is OpenAI's: every authentication failure is
a 401, and every error (validation included) has OpenAI's body (app.py, api/openai_errors.py),
so the official SDKs raise the exceptions their users expect, with our message.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from qwen3_tts_server.api.deps import Context, OpenAIUser
from qwen3_tts_server.api.responses import DocumentedRoute
from qwen3_tts_server.api.speech_responses import speech_response, sse_speech_response
from qwen3_tts_server.errors import BadRequest
from qwen3_tts_server.schemas import OpenAISpeechRequest, VoiceRef
from qwen3_tts_server.services.speech import SpeechRequest
from qwen3_tts_server.services.streaming import STREAMABLE_FORMATS
from qwen3_tts_server.services.threads import in_thread

router = APIRouter(prefix="/v1", tags=["openai"], route_class=DocumentedRoute)


@router.post(
    "/audio/speech",
    response_class=Response,
    responses={
        200: {
            "content": {"audio/*": {}, "text/event-stream": {}},
            "description": "The audio file, or server-sent events with stream_format sse",
        },
    },
    summary="Text to speech (OpenAI-compatible)",
)
async def speech(body: OpenAISpeechRequest, caller: OpenAIUser, context: Context) -> Response:
    """OpenAI's request shape (`input`, `voice`, `response_format` default mp3, `speed`,
    `instructions`, `stream_format`); the same response headers as /tts.

    `voice`: one of your voices by id or name (a string or `{"id": ...}`); with the
    CustomVoice model also a preset speaker or an OpenAI voice name (see GET /speakers).
    `speed` 0.25-4.0 time-stretches the audio, keeping its pitch. `stream_format: "audio"`
    streams `pcm` and `wav` as they are made (other formats come whole); `"sse"` sends
    `speech.audio.delta` events (base64 audio) and a `speech.audio.done` event with usage.
    Extension: `timestamps: true` with `"sse"` adds `words` to those events (the words
    aligned since the event before)."""
    reference = body.voice.id if isinstance(body.voice, VoiceRef) else body.voice
    choice = await in_thread(context.speakers.choose, caller.user_id, reference)
    request = SpeechRequest(
        voice_id=choice.voice_id,
        speaker=choice.speaker,
        instruct=body.instructions or "",
        language=body.language,
        format=body.response_format,
        store=False,
        seed=body.seed,
        speed=body.speed,
    )
    if body.stream_format == "sse":
        return await sse_speech_response(
            context, caller.user_id, body.input, request, body.timestamps
        )
    if body.timestamps:
        raise BadRequest("timestamps need stream_format: sse here (or use POST /tts/timestamps)")
    stream = (
        body.stream_format == "audio" and body.response_format.strip().lower() in STREAMABLE_FORMATS
    )
    return await speech_response(context, caller.user_id, body.input, request, stream)
