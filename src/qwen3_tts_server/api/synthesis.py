"""Synthesis routes: /tts (one audio file, or a stream), /batchtts (a ZIP), /getstored."""

from __future__ import annotations

from fastapi import APIRouter, Response

from qwen3_tts_server.api.deps import Context, CurrentUser, PathId
from qwen3_tts_server.api.responses import USER_ERRORS, error_responses
from qwen3_tts_server.api.speech_responses import speech_response
from qwen3_tts_server.errors import BadRequest
from qwen3_tts_server.schemas import TTSRequest
from qwen3_tts_server.services.speech import SpeechRequest

router = APIRouter(tags=["synthesis"], responses=USER_ERRORS)

_AUDIO = {"content": {"audio/*": {}}, "description": "The audio file"}
_ERRORS = error_responses(400, 402, 404, 409, 429, 503)


def _speech_request(body: TTSRequest) -> SpeechRequest:
    return SpeechRequest(
        voice_id=body.voice_id,
        language=body.language,
        format=body.format,
        store=body.store,
        temperature=body.temperature,
        seed=body.seed,
        speaker=body.speaker,
        instruct=body.instruct or "",
    )


@router.post(
    "/tts", response_class=Response, responses={200: _AUDIO, **_ERRORS}, summary="Text to speech"
)
async def tts(body: TTSRequest, caller: CurrentUser, context: Context) -> Response:
    """One text → one audio file. Headers: X-Generation-Id, X-Tokens-Used (= characters of the
    stripped text), X-Latency-Ms (model time only), X-Queue-Ms (time waiting for the model),
    X-Sample-Rate, X-Finish-Reason (`eos`: the model ended the speech; `silence`: stopped early
    on trailing silence or a loop once the text was covered; `length`: cut at the server's frame
    cap). Long texts are split into sentences, synthesised side by side and joined. A text the
    model never finishes within its frame budget (also on one retry) fails with 503, uncharged.

    With `stream: true` (formats `pcm` and `wav`) the audio is sent with chunked transfer
    encoding as it is made, a few frames after the model starts; X-Latency-Ms and
    X-Finish-Reason are then unknown (both are recorded on the generation) and X-First-Audio-Ms
    is sent (queue wait included). A stream the client leaves early is recorded as cancelled
    and costs nothing."""
    text = body.payload
    if isinstance(text, list):
        raise BadRequest("Single TTS endpoint expects a single text string, not a list")
    return await speech_response(context, caller.user_id, text, _speech_request(body), body.stream)


@router.post(
    "/batchtts",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "ZIP"}, **_ERRORS},
    summary="Many texts to speech, as a ZIP",
)
async def batch_tts(body: TTSRequest, caller: CurrentUser, context: Context) -> Response:
    """`text` (a list) or `texts` → ZIP of `0.<fmt>`, `1.<fmt>`, ... and `manifest.json`.
    Charged floor(characters × D), D being the deployment's self-calibrated batch discount as
    it stood before this batch (X-Batch-Discount-Used); the items' tokens add up to the total.
    X-Latency-Ms-Total is model time only; X-Queue-Ms the time the batch waited for the model.
    Each item's `finish_reason` (see /tts) is in the manifest.
    Every file's sample rate is in X-Sample-Rate and the manifest's `sample_rate` (a `pcm` file
    has no header to say it)."""
    texts = body.payload
    if isinstance(texts, str):
        raise BadRequest("Batch TTS endpoint expects a list of text strings, not a single string")
    if body.stream:
        raise BadRequest("Batch TTS cannot stream (a ZIP is complete only at its end); use /tts")
    result = await context.synthesis.batch(caller.user_id, texts, _speech_request(body))
    context.metrics.record_tokens("batchtts", result.tokens_used)
    context.metrics.record_audio_seconds(result.audio_seconds)
    return Response(
        result.archive,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="batch_{result.batch_id}.zip"',
            "X-Batch-Id": str(result.batch_id),
            "X-Tokens-Used": str(result.tokens_used),
            "X-Batch-Discount-Used": str(result.discount_used),
            "X-Latency-Ms-Total": str(result.timing.model_ms),
            "X-Queue-Ms": str(result.timing.queue_ms),
            "X-Sample-Rate": str(result.sample_rate),
        },
    )


@router.get(
    "/getstored/{generation_id}",
    response_class=Response,
    responses={200: _AUDIO, **error_responses(404)},
    summary="Download a stored generation",
)
def get_stored(generation_id: PathId, caller: CurrentUser, context: Context) -> Response:
    """Audio of a /tts or /batchtts item made with `store: true`, in its original format."""
    stored = context.synthesis.stored(caller.user_id, generation_id)
    filename = f"{stored.generation_id}.{stored.extension}"
    return Response(
        stored.data,
        media_type=stored.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Generation-Id": str(stored.generation_id),
        },
    )
