"""Synthesis routes: /tts (one audio file, or a stream), /batchtts (a ZIP), /getstored."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from qwen3_tts_server.api.deps import Context, CurrentUser, PathId
from qwen3_tts_server.api.responses import DocumentedRoute
from qwen3_tts_server.api.speech_responses import (
    speech_response,
    timed_speech_response,
    timed_stream_response,
)
from qwen3_tts_server.errors import BadRequest
from qwen3_tts_server.schemas import BatchTTSRequest, SpeechBody, TimedSpeechOut, TTSRequest
from qwen3_tts_server.services.speech import SpeechRequest

router = APIRouter(tags=["synthesis"], route_class=DocumentedRoute)

_AUDIO = {"content": {"audio/*": {}}, "description": "The audio file"}


def _speech_request(body: SpeechBody) -> SpeechRequest:
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


@router.post("/tts", response_class=Response, responses={200: _AUDIO}, summary="Text to speech")
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
    if body.timestamps:
        raise BadRequest("For word timestamps with one text, use POST /tts/timestamps")
    return await speech_response(context, caller.user_id, text, _speech_request(body), body.stream)


@router.post(
    "/tts/timestamps",
    response_model=TimedSpeechOut,
    responses={
        200: {
            "content": {"application/x-ndjson": {}},
            "description": "JSON; with `stream: true`, NDJSON lines",
        },
    },
    summary="Text to speech with word timestamps",
)
async def tts_timestamps(body: TTSRequest, caller: CurrentUser, context: Context) -> Response:
    """/tts's body and rules (billing, quotas, voices, headers), answered as JSON: the audio
    file in base64 and `words`, one entry per word of the text in order, `start` and `end`
    in seconds from the start of the audio, punctuation attached to its word (Chinese: one
    entry per character; Japanese: one per unit of the aligner's word splitter). X-Align-Ms is
    the aligner's time (Qwen3-ForcedAligner, on its own thread beside synthesis). Without an
    aligner (MODEL_ALIGNER_REPO empty) or while it loads: 503, nothing charged; an alignment
    that fails fails the call, uncharged.

    With `stream: true` (formats `pcm` and `wav`): NDJSON, one line per audio piece as it is
    made, `{"audio_base64": <s16le samples, or the WAV header first>, "words": [...]}` with
    the words aligned since the line before (each sentence's words once its audio is
    complete; times from the start of the whole audio), then a last line with the totals:
    `{"done": true, "words": [...], "generation_id", "tokens_used", "duration_s",
    "sample_rate", "format", "align_ms"}`.

    ```bash
    curl -sS -X POST "$BASE/tts/timestamps" -H "Authorization: Bearer $API_KEY" \\
      -H "Content-Type: application/json" \\
      -d '{"text": "Hello, world!", "speaker": "Ryan", "language": "English", "store": true}'
    ```"""
    text = body.payload
    if isinstance(text, list):
        raise BadRequest("/tts/timestamps expects a single text string, not a list")
    request = _speech_request(body)
    if body.stream:
        return await timed_stream_response(context, caller.user_id, text, request)
    return await timed_speech_response(context, caller.user_id, text, request)


@router.post(
    "/batchtts",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "ZIP"}},
    summary="Many texts to speech, as a ZIP",
)
async def batch_tts(body: BatchTTSRequest, caller: CurrentUser, context: Context) -> Response:
    """`text` (a list) or `texts` → ZIP of `0.<fmt>`, `1.<fmt>`, ... and `manifest.json`.
    Charged floor(characters × D), D being the deployment's self-calibrated batch discount as
    it stood before this batch (X-Batch-Discount-Used); the items' tokens add up to the total.
    X-Latency-Ms-Total is model time only; X-Queue-Ms the time the batch waited for the model.
    Each item's `finish_reason` (see /tts) is in the manifest.
    Every file's sample rate is in X-Sample-Rate and the manifest's `sample_rate` (a `pcm` file
    has no header to say it). With `timestamps: true`: a WebVTT file per item (`0.vtt`, ...)
    and each item's `words` and `captions` in the manifest, X-Align-Ms the aligner's time (the
    /tts/timestamps rules; 503 without an aligner)."""
    texts = body.payload
    if isinstance(texts, str):
        raise BadRequest("Batch TTS endpoint expects a list of text strings, not a single string")
    if body.stream:
        raise BadRequest("Batch TTS cannot stream (a ZIP is complete only at its end); use /tts")
    request = _speech_request(body)
    result = await context.synthesis.batch(caller.user_id, texts, request, body.timestamps)
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
        }
        | ({"X-Align-Ms": str(result.align_ms)} if body.timestamps else {}),
    )


@router.get(
    "/getstored/{generation_id}",
    response_class=Response,
    responses={200: _AUDIO},
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


@router.get(
    "/getstored/{generation_id}/captions",
    response_class=Response,
    responses={
        200: {
            "content": {"text/vtt": {}, "application/x-subrip": {}, "application/json": {}},
            "description": "Captions",
        },
    },
    summary="Captions of a stored generation",
)
def get_captions(
    generation_id: PathId,
    caller: CurrentUser,
    context: Context,
    format: Annotated[
        Literal["vtt", "srt", "json"], Query(description="vtt | srt | json (the words)")
    ] = "vtt",
) -> Response:
    """Captions of a generation made with timestamps and `store: true` (/tts/timestamps, or a
    /batchtts item with `timestamps: true`): WebVTT, SubRip, or the words as JSON. Cues end
    at a sentence's end, before 42 characters or before 6 seconds. 404 for another user's or
    an unstored generation, and for one made without timestamps.

    ```python
    import json, os, urllib.request
    base, key = os.environ["BASE"], os.environ["API_KEY"]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = {"text": "Hello, world!", "speaker": "Ryan", "store": True}
    request = urllib.request.Request(f"{base}/tts/timestamps", json.dumps(body).encode(), headers)
    spoken = json.load(urllib.request.urlopen(request))
    url = f"{base}/getstored/{spoken['generation_id']}/captions?format=srt"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as response:
        open("speech.srt", "wb").write(response.read())
    ```"""
    captions = context.synthesis.stored_captions(caller.user_id, generation_id, format)
    filename = f"{captions.generation_id}.{captions.extension}"
    return Response(
        captions.text,
        media_type=captions.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Generation-Id": str(captions.generation_id),
        },
    )
