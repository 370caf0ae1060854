"""Voice routes: clone, design, list, detail, sample, delete (the caller's own voices only)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Response, UploadFile

from qwen3_tts_server.api.deps import Context, CurrentUser, PathId
from qwen3_tts_server.api.responses import DocumentedRoute
from qwen3_tts_server.api.uploads import read_upload
from qwen3_tts_server.audio.encode import FORMATS
from qwen3_tts_server.schemas import (
    DesignVoiceRequest,
    Status,
    Text,
    VoiceCreatedOut,
    VoiceDetailOut,
    VoiceOut,
)
from qwen3_tts_server.services.voices import VoiceView

router = APIRouter(tags=["voices"], route_class=DocumentedRoute)

#: The longest X-Transcript sent (percent-encoded bytes): proxies refuse response heads past
#: about 8 KB, and a 2000-character CJK transcript encodes to 18 KB.
MAX_TRANSCRIPT_HEADER = 4096


def _extension_for(media_type: str) -> str:
    return next((f.extension for f in FORMATS.values() if f.media_type == media_type), "bin")


def _summary(voice: VoiceView) -> VoiceOut:
    return VoiceOut.model_validate(voice, from_attributes=True)


@router.post(
    "/clonevoice",
    response_model=VoiceCreatedOut,
    summary="Clone a voice from reference audio",
)
async def clone_voice(
    caller: CurrentUser,
    context: Context,
    # min_length: FastAPI takes an empty form field for a missing one (422); say so.
    name: Annotated[Text, Form(min_length=1, max_length=128)],
    transcript: Annotated[
        Text, Form(min_length=1, description="Exactly what the reference audio says.")
    ],
    file: Annotated[UploadFile, File(description="WAV, MP3, OGG (Vorbis/Opus) or FLAC")],
    language: Annotated[Text, Form()] = "auto",
) -> VoiceCreatedOut:
    """The format is read from the audio itself, not the file name. Costs len(transcript)."""
    upload = await read_upload(file, context.settings.max_upload_bytes)
    created = await context.voices.clone(
        caller.user_id, name=name, transcript=transcript, language=language, upload=upload
    )
    context.metrics.record_tokens("clonevoice", created.tokens_used)
    return VoiceCreatedOut(voice_id=created.voice_id, tokens_used=created.tokens_used)


@router.post(
    "/designvoice",
    response_model=VoiceCreatedOut,
    summary="Design a voice from a description",
)
async def design_voice(
    body: DesignVoiceRequest, caller: CurrentUser, context: Context
) -> VoiceCreatedOut:
    """Speaks a coverage phrase in the voice's language with the described voice, then keeps
    that as the reference. Costs len(description) + len(phrase)."""
    created = await context.voices.design(
        caller.user_id, name=body.name, description=body.description, language=body.language
    )
    context.metrics.record_tokens("designvoice", created.tokens_used)
    return VoiceCreatedOut(voice_id=created.voice_id, tokens_used=created.tokens_used)


@router.get("/voices", response_model=list[VoiceOut], summary="List your voices")
def list_voices(caller: CurrentUser, context: Context) -> list[VoiceOut]:
    """Newest first; deleted voices are not listed."""
    return [_summary(voice) for voice in context.voices.list(caller.user_id)]


@router.get(
    "/voices/{voice_id}",
    response_model=VoiceDetailOut,
    summary="Voice detail",
)
def get_voice(voice_id: PathId, caller: CurrentUser, context: Context) -> VoiceDetailOut:
    """The list entry plus the reference transcript, the design description and the kind."""
    voice = context.voices.get(caller.user_id, voice_id)
    return VoiceDetailOut(
        **_summary(voice).model_dump(),
        ref_text=voice.ref_text,
        voice_description=voice.description,
        kind=voice.kind,
    )


@router.get(
    "/voices/{voice_id}/sample",
    response_class=Response,
    responses={
        200: {"content": {"audio/*": {}}, "description": "The reference audio as stored"},
    },
    summary="Download the reference audio",
)
def get_sample(voice_id: PathId, caller: CurrentUser, context: Context) -> Response:
    """The reference exactly as uploaded, with its real content type. The transcript is in
    `X-Transcript`, percent-encoded UTF-8 (decode with `urllib.parse.unquote`), unless it
    would encode to more than 4096 bytes: then `X-Transcript-Omitted` says so and
    GET /voices/{voice_id} has it (`ref_text`)."""
    sample = context.voices.sample(caller.user_id, voice_id)
    filename = f"voice_{voice_id}_sample.{_extension_for(sample.media_type)}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    transcript = quote(sample.ref_text, safe="")
    if len(transcript) <= MAX_TRANSCRIPT_HEADER:
        headers["X-Transcript"] = transcript
    else:
        headers["X-Transcript-Omitted"] = (
            f"too long for a header; read ref_text from GET /voices/{voice_id}"
        )
    return Response(sample.data, media_type=sample.media_type, headers=headers)


def delete_voice(voice_id: PathId, caller: CurrentUser, context: Context) -> Status:
    context.voices.delete(caller.user_id, voice_id)
    return Status(status="deleted")


router.add_api_route(
    "/voices/{voice_id}/delete",
    delete_voice,
    methods=["POST"],
    response_model=Status,
    summary="Delete a voice (original form)",
    description="Shared reference audio is kept while any live voice or stored generation uses it.",
)
router.add_api_route(
    "/voices/{voice_id}",
    delete_voice,
    methods=["DELETE"],
    response_model=Status,
    summary="Delete a voice",
    description="Same as POST /voices/{voice_id}/delete.",
)
