"""The caller's own usage totals, and what one of its calls was charged."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from qwen3_tts_server.api.deps import Context, CurrentUser, PathId
from qwen3_tts_server.api.responses import DocumentedRoute
from qwen3_tts_server.schemas import GenerationOut, UsageOut

router = APIRouter(tags=["usage"], route_class=DocumentedRoute)


@router.get("/usage", response_model=UsageOut, summary="Your usage totals")
def get_usage(caller: CurrentUser, context: Context) -> UsageOut:
    """The original six totals, plus tokens spent creating voices and seconds of audio made.

    `tokens_used_total` includes voice-creation tokens; `voices_created` counts live voices.
    """
    return UsageOut(**context.usage.for_user(caller.user_id).as_dict())


@router.get(
    "/generations/{generation_id}",
    response_model=GenerationOut,
    summary="One of your generations: its status and charge",
)
def get_generation(generation_id: PathId, caller: CurrentUser, context: Context) -> GenerationOut:
    """What a call was charged, from its row (`X-Generation-Id` names it). A stream is
    `streaming` until the server settles it; a stream stopped early is then `cancelled` with
    the tokens of the audio it was sent."""
    state = context.usage.generation(caller.user_id, generation_id)
    return GenerationOut(**asdict(state))
