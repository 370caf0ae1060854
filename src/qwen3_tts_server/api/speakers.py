"""GET /speakers: the CustomVoice model's preset speakers, for `speaker` on /tts and /batchtts."""

from __future__ import annotations

from fastapi import APIRouter

from qwen3_tts_server.api.deps import Context, CurrentUser
from qwen3_tts_server.api.responses import DocumentedRoute
from qwen3_tts_server.schemas import SpeakerOut, SpeakersOut

router = APIRouter(tags=["speakers"], route_class=DocumentedRoute)


@router.get(
    "/speakers",
    response_model=SpeakersOut,
    summary="Preset speakers",
)
def speakers(_caller: CurrentUser, context: Context) -> SpeakersOut:
    """The preset speakers of the CustomVoice model: what `speaker` takes on /tts, /batchtts
    and streaming (with optional `instruct` where `supports_instructions`), their languages,
    and the OpenAI voice names /v1/audio/speech maps to each. 503 when the server runs
    without the CustomVoice model (MODEL_CUSTOM_REPO)."""
    return SpeakersOut(
        speakers=[
            SpeakerOut(
                name=view.name,
                native_language=view.native_language,
                languages=list(view.languages),
                description=view.description,
                supports_instructions=view.supports_instructions,
                openai_voices=list(view.openai_voices),
            )
            for view in context.speakers.list()
        ]
    )
