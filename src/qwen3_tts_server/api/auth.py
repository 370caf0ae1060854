"""The invite exchange: the only route a user calls without a key."""

from __future__ import annotations

from fastapi import APIRouter

from qwen3_tts_server.api.deps import Context
from qwen3_tts_server.api.responses import DocumentedRoute
from qwen3_tts_server.schemas import ExchangeInviteRequest, ExchangeInviteResponse

router = APIRouter(prefix="/auth", tags=["auth"], route_class=DocumentedRoute)


@router.post(
    "/exchange-invite",
    response_model=ExchangeInviteResponse,
    summary="Exchange an invite code for an API key",
)
def exchange_invite(body: ExchangeInviteRequest, context: Context) -> ExchangeInviteResponse:
    """Single use and atomic: of any number of concurrent exchanges, exactly one gets a key."""
    issued = context.accounts.exchange_invite(body.invite_code)
    return ExchangeInviteResponse(api_key=issued.api_key, key_prefix=issued.key_prefix)
