"""The caller's own usage totals."""

from __future__ import annotations

from fastapi import APIRouter

from qwen3_tts_server.api.deps import Context, CurrentUser
from qwen3_tts_server.api.responses import USER_ERRORS
from qwen3_tts_server.schemas import UsageOut

router = APIRouter(tags=["usage"], responses=USER_ERRORS)


@router.get("/usage", response_model=UsageOut, summary="Your usage totals")
def get_usage(caller: CurrentUser, context: Context) -> UsageOut:
    """The original six totals, plus tokens spent creating voices and seconds of audio made.

    `tokens_used_total` includes voice-creation tokens; `voices_created` counts live voices.
    """
    return UsageOut(**context.usage.for_user(caller.user_id).as_dict())
