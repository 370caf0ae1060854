"""Synthesis routes: /tts (one audio file, or a stream), /batchtts (a ZIP), /getstored."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from qwen3_tts_server.api.deps import Context, CurrentUser, PathId
from qwen3_tts_server.api.responses import USER_ERRORS, error_responses
from qwen3_tts_server.context import AppContext
from qwen3_tts_server.errors import BadRequest
from qwen3_tts_server.schemas import TTSRequest
from qwen3_tts_server.services.streaming import SpeechStream
from qwen3_tts_server.services.synthesis import SpeechRequest
from qwen3_tts_server.values import Sampling

log = logging.getLogger(__name__)

router = APIRouter(tags=["synthesis"], responses=USER_ERRORS)

_AUDIO = {"content": {"audio/*": {}}, "description": "The audio file"}
_ERRORS = error_responses(400, 402, 404, 409, 429, 503)


def _speech_request(body: TTSRequest) -> SpeechRequest:
    return SpeechRequest(
        voice_id=body.voice_id,
        language=body.language,
        format=body.format,
        store=body.store,
        sampling=Sampling(temperature=body.temperature, seed=body.seed),
    )


@router.post(
    "/tts", response_class=Response, responses={200: _AUDIO, **_ERRORS}, summary="Text to speech"
)
async def tts(body: TTSRequest, caller: CurrentUser, context: Context) -> Response:
    """One text → one audio file. Headers: X-Generation-Id, X-Tokens-Used (= characters of the
    stripped text), X-Latency-Ms (model time), X-Sample-Rate. Long texts are split into
    sentences, synthesised together and joined.

    With `stream: true` (formats `pcm` and `wav`) the audio is sent with chunked transfer
    encoding as it is made, starting once the first sentences are synthesised; X-Latency-Ms is
    then unknown and replaced by X-First-Audio-Ms. A stream the client leaves early is
    recorded as cancelled and costs nothing."""
    text = body.payload
    if isinstance(text, list):
        raise BadRequest("Single TTS endpoint expects a single text string, not a list")
    return await synthesize(context, caller.user_id, text, _speech_request(body), body.stream)


async def synthesize(
    context: AppContext, user_id: int, text: str, request: SpeechRequest, stream: bool
) -> Response:
    """One text as a whole file or as a stream (shared by /tts and /v1/audio/speech)."""
    if stream:
        return _StreamedSpeech(context, await context.streaming.open(user_id, text, request))
    speech = await context.synthesis.tts(user_id, text, request)
    _count(context, speech.tokens_used, speech.duration_s)
    return Response(
        speech.data,
        media_type=speech.media_type,
        headers={
            **_headers(speech.extension, speech.generation_id, speech.tokens_used),
            "X-Latency-Ms": str(speech.latency_ms),
            "X-Sample-Rate": str(speech.sample_rate),
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
    so closing here is what records the generation as cancelled and withdraws its queued jobs.
    A failure mid-stream cannot become an error response (the headers are gone): the response
    ends without its final chunk, so the server drops the connection and the client sees an
    incomplete body, not a short file. Counted in the metrics only once complete (charged).
    """

    def __init__(self, context: AppContext, stream: SpeechStream) -> None:
        super().__init__(
            stream.chunks(),
            media_type=stream.media_type,
            headers={
                **_headers(stream.extension, stream.generation_id, stream.tokens_used),
                "X-First-Audio-Ms": str(stream.first_audio_ms),
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
        if self._stream.audio_seconds is not None:
            _count(self._context, self._stream.tokens_used, self._stream.audio_seconds)


@router.post(
    "/batchtts",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "ZIP"}, **_ERRORS},
    summary="Many texts to speech, as a ZIP",
)
async def batch_tts(body: TTSRequest, caller: CurrentUser, context: Context) -> Response:
    """`text` (a list) or `texts` → ZIP of `0.<fmt>`, `1.<fmt>`, ... and `manifest.json`.
    Charged floor(characters × D), D being the deployment's self-calibrated batch discount as
    it stood before this batch (X-Batch-Discount-Used). Every file's sample rate is in
    X-Sample-Rate and the manifest's `sample_rate` (a `pcm` file has no header to say it)."""
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
            "X-Latency-Ms-Total": str(result.latency_ms_total),
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
