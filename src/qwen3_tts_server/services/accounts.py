"""Users, invites and API keys: the rules of who may call the server.

The invite exchange is one conditional UPDATE, so however many clients race for a code, the
database lets exactly one of them mark it used and mint a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from qwen3_tts_server.db.models import ApiKey, Invite, User, utcnow
from qwen3_tts_server.db.session import transaction
from qwen3_tts_server.errors import BadRequest, Forbidden, NotFound, Unauthorized
from qwen3_tts_server.security import (
    KEY_PREFIX_LEN,
    hmac_hash,
    is_well_formed_token,
    new_api_key,
    new_invite_code,
)
from qwen3_tts_server.services.usage import Usage, usage_by_user

#: `last_used_at` is written at most this often per key, so authenticated reads stay reads.
LAST_USED_RESOLUTION = timedelta(minutes=1)
INVITE_HOURS_MIN, INVITE_HOURS_MAX = 1, 720


@dataclass(frozen=True)
class Caller:
    """The authenticated user behind a request."""

    user_id: int
    key_id: int


@dataclass(frozen=True)
class IssuedKey:
    api_key: str
    key_prefix: str


@dataclass(frozen=True)
class UserSummary:
    user_id: int
    name: str | None
    is_active: bool
    token_quota: int | None
    created_at: datetime
    usage: Usage


@dataclass(frozen=True)
class KeyInfo:
    key_id: int
    key_prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class AccountService:
    def __init__(self, sessions: sessionmaker[Session], hmac_secret: str) -> None:
        self._sessions = sessions
        self._secret = hmac_secret

    def _hash(self, value: str) -> str:
        return hmac_hash(self._secret, value)

    # -- users ---------------------------------------------------------------------------------
    def create_user(self, name: str | None = None, token_quota: int | None = None) -> int:
        with transaction(self._sessions) as session:
            user = User(name=name, token_quota=token_quota, is_active=True)
            session.add(user)
            session.flush()
            return user.id

    def list_users(self) -> list[UserSummary]:
        """Every user with their usage totals (grouped queries, not one per user)."""
        with self._sessions() as session:
            users = list(session.scalars(select(User).order_by(User.id)))
            usage = usage_by_user(session, [user.id for user in users])
        return [
            UserSummary(
                user.id,
                user.name,
                user.is_active,
                user.token_quota,
                user.created_at,
                usage[user.id],
            )
            for user in users
        ]

    def get_user(self, session: Session, user_id: int) -> User:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound("User not found")
        return user

    def set_active(self, user_id: int, active: bool) -> None:
        with transaction(self._sessions) as session:
            self.get_user(session, user_id).is_active = active

    def list_keys(self, user_id: int) -> list[KeyInfo]:
        with transaction(self._sessions) as session:
            self.get_user(session, user_id)
            rows = session.scalars(
                select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id)
            )
            return [
                KeyInfo(key.id, key.key_prefix, key.created_at, key.last_used_at, key.revoked_at)
                for key in rows
            ]

    def revoke_key(self, user_id: int, key_id: int) -> None:
        with transaction(self._sessions) as session:
            key = session.get(ApiKey, key_id)
            if key is None or key.user_id != user_id:
                raise NotFound("API key not found")
            if key.revoked_at is None:
                key.revoked_at = utcnow()

    # -- invites -------------------------------------------------------------------------------
    def create_invite(self, user_id: int, expires_hours: int) -> str:
        if not INVITE_HOURS_MIN <= expires_hours <= INVITE_HOURS_MAX:
            raise BadRequest(
                f"expires_hours must be between {INVITE_HOURS_MIN} and {INVITE_HOURS_MAX}"
            )
        code = new_invite_code()
        with transaction(self._sessions) as session:
            self.get_user(session, user_id)
            session.add(
                Invite(
                    user_id=user_id,
                    code_hash=self._hash(code),
                    expires_at=utcnow() + timedelta(hours=expires_hours),
                )
            )
        return code

    def exchange_invite(self, code: str) -> IssuedKey:
        if not is_well_formed_token(code):
            raise Forbidden("Invalid invite code")
        code_hash = self._hash(code)
        now = utcnow()
        with transaction(self._sessions) as session:
            invite = session.scalar(select(Invite).where(Invite.code_hash == code_hash))
            if invite is None:
                raise Forbidden("Invalid invite code")
            if invite.used_at is not None:
                raise Forbidden("Invite already used")
            if invite.expires_at <= now:
                raise Forbidden("Invite expired")
            if not self.get_user(session, invite.user_id).is_active:
                raise Forbidden("User disabled")
            claimed = session.execute(
                update(Invite)
                .where(Invite.id == invite.id, Invite.used_at.is_(None))
                .values(used_at=now)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                raise Forbidden("Invite already used")
            api_key = new_api_key()
            session.add(
                ApiKey(
                    user_id=invite.user_id,
                    key_prefix=api_key[:KEY_PREFIX_LEN],
                    key_hash=self._hash(api_key),
                )
            )
        return IssuedKey(api_key=api_key, key_prefix=api_key[:KEY_PREFIX_LEN])

    # -- authentication ------------------------------------------------------------------------
    def authenticate(self, api_key: str) -> Caller:
        """Map a presented key to its user, or raise the original server's 401/403 errors."""
        if not api_key:
            raise Unauthorized("Missing API key")
        if not is_well_formed_token(api_key):
            raise Forbidden("Invalid or revoked API key")
        key_hash = self._hash(api_key)
        with self._sessions() as session:
            row = session.execute(
                select(ApiKey, User.is_active)
                .join(User, User.id == ApiKey.user_id)
                .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
            ).first()
            if row is None:
                raise Forbidden("Invalid or revoked API key")
            key, is_active = row
            if not is_active:
                raise Forbidden("User disabled")
            caller = Caller(user_id=key.user_id, key_id=key.id)
            stale_before = utcnow() - LAST_USED_RESOLUTION
            if key.last_used_at is None or key.last_used_at < stale_before:
                self._touch(session, key.id, stale_before)
        return caller

    @staticmethod
    def _touch(session: Session, key_id: int, stale_before: datetime) -> None:
        """Record use; the WHERE makes concurrent requests write once, not once each."""
        session.execute(
            update(ApiKey)
            .where(
                ApiKey.id == key_id,
                (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < stale_before),
            )
            .values(last_used_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        session.commit()
