"""Admin routes (ADMIN_TOKEN): users, invites, keys. Paths and keys follow the original server."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from qwen3_tts_server.api.deps import AdminOnly, Context, PathId
from qwen3_tts_server.api.responses import DocumentedRoute
from qwen3_tts_server.schemas import (
    CreateUserRequest,
    InviteCreated,
    KeyInfoOut,
    Status,
    UserCreated,
    UserInfo,
)
from qwen3_tts_server.services.accounts import INVITE_HOURS_MAX, INVITE_HOURS_MIN

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[AdminOnly], route_class=DocumentedRoute
)


@router.post("/users", response_model=UserCreated, summary="Create a user")
def create_user(
    context: Context, body: Annotated[CreateUserRequest | None, Body()] = None
) -> UserCreated:
    """Create a user. The body is optional (the original server took none)."""
    request = body or CreateUserRequest()
    return UserCreated(user_id=context.accounts.create_user(request.name, request.token_quota))


@router.get("/users", response_model=list[UserInfo], summary="List users with usage")
def get_users(context: Context) -> list[UserInfo]:
    """Every user, oldest first, with the same totals they see on GET /usage."""
    return [
        UserInfo(
            user_id=user.user_id,
            name=user.name,
            is_active=user.is_active,
            token_quota=user.token_quota,
            created_at=user.created_at,
            usage=user.usage.as_dict(),
        )
        for user in context.accounts.list_users()
    ]


@router.post("/users/{user_id}/disable", response_model=Status, summary="Disable a user")
def disable_user(user_id: PathId, context: Context) -> Status:
    """Every key of a disabled user answers 403 until the user is enabled again."""
    context.accounts.set_active(user_id, False)
    return Status(status="disabled")


@router.post("/users/{user_id}/enable", response_model=Status, summary="Enable a user")
def enable_user(user_id: PathId, context: Context) -> Status:
    """Undo a disable: the user's unrevoked keys work again."""
    context.accounts.set_active(user_id, True)
    return Status(status="enabled")


@router.get(
    "/users/{user_id}/keys",
    response_model=list[KeyInfoOut],
    summary="List a user's API keys",
)
def get_keys(user_id: PathId, context: Context) -> list[KeyInfoOut]:
    """Prefixes and timestamps only: the keys themselves are never stored."""
    return [KeyInfoOut(**vars(key)) for key in context.accounts.list_keys(user_id)]


@router.post(
    "/users/{user_id}/keys/{key_id}/revoke",
    response_model=Status,
    summary="Revoke an API key",
)
def revoke_key(user_id: PathId, key_id: PathId, context: Context) -> Status:
    """The key answers 403 from now on; revoking twice is harmless."""
    context.accounts.revoke_key(user_id, key_id)
    return Status(status="revoked")


@router.post(
    "/users/{user_id}/invites",
    response_model=InviteCreated,
    summary="Create an invite code",
)
def create_invite(
    user_id: PathId,
    context: Context,
    expires_hours: Annotated[int, Query(ge=INVITE_HOURS_MIN, le=INVITE_HOURS_MAX)] = 24,
) -> InviteCreated:
    """A single-use code the user exchanges for an API key; only its HMAC is stored."""
    code = context.accounts.create_invite(user_id, expires_hours)
    return InviteCreated(invite_code=code, expires_hours=expires_hours)
