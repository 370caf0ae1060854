"""Request dependencies: the application context and the two kinds of caller (admin, user).

The header rules copy the original server's observable behaviour (case-insensitive "Bearer ",
its 401/403 messages) but never strip Unicode whitespace: a token must be printable ASCII.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyHeader

from qwen3_tts_server.context import AppContext
from qwen3_tts_server.errors import Forbidden, Unauthorized
from qwen3_tts_server.schemas import MAX_ID
from qwen3_tts_server.security import same_secret
from qwen3_tts_server.services.accounts import Caller

# Declared as an API-key header (not HTTPBearer) so that our own messages, not FastAPI's, answer
# a missing or malformed header, while /docs still shows the padlock and an "Authorize" box.
_authorization = APIKeyHeader(
    name="Authorization",
    auto_error=False,
    description="`Bearer <token>`: an API key for user routes, ADMIN_TOKEN for /admin routes.",
)


#: A row id in a path: out-of-range numbers are a 422, not a database overflow.
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


Context = Annotated[AppContext, Depends(get_context)]


def _bearer_token(header: str | None, missing_message: str) -> str:
    if not header or not header[:7].lower() == "bearer ":
        raise Unauthorized(missing_message)
    return header[7:].strip(" \t")


def require_admin(
    context: Context, authorization: Annotated[str | None, Depends(_authorization)]
) -> None:
    token = _bearer_token(authorization, "Missing admin bearer token")
    if not token:
        raise Unauthorized("Missing admin bearer token")
    if not same_secret(token, context.admin_token):
        raise Forbidden("Invalid admin token")


def current_user(
    request: Request,
    context: Context,
    authorization: Annotated[str | None, Depends(_authorization)],
) -> Caller:
    caller = context.accounts.authenticate(_bearer_token(authorization, "Missing bearer token"))
    request.state.user_id = caller.user_id
    return caller


CurrentUser = Annotated[Caller, Depends(current_user)]


def openai_user(
    request: Request,
    context: Context,
    authorization: Annotated[str | None, Depends(_authorization)],
) -> Caller:
    """The caller on /v1, where a missing, wrong, revoked or disabled key is a 401 as on
    OpenAI's API (its SDKs raise AuthenticationError); native routes keep the original 403."""
    try:
        return current_user(request, context, authorization)
    except Forbidden as error:
        raise Unauthorized(error.detail) from None


OpenAIUser = Annotated[Caller, Depends(openai_user)]
AdminOnly = Depends(require_admin)
