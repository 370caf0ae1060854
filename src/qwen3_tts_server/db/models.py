"""The tables (SQLAlchemy 2 ORM). Alembic migrations in `migrations/` create and evolve them.

Every time is timezone-aware UTC (`UtcDateTime`), whichever database stores it, so the API can
always print ISO 8601 with an offset.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from qwen3_tts_server.values import FinishReason, GenerationStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Stores UTC and always hands back aware datetimes (SQLite drops the offset otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _string_enum(kind: type[GenerationStatus] | type[FinishReason]) -> Enum:
    """A StrEnum stored as its plain value in a VARCHAR(16): no database enum type to migrate
    when a value is added, but the ORM refuses any string that is not a member."""
    return Enum(
        kind,
        native_enum=False,
        create_constraint=False,
        length=16,
        validate_strings=True,
        values_callable=lambda members: [member.value for member in members],
    )


class Base(DeclarativeBase):
    pass


class User(Base):
    """A user, with the running totals that quota and storage checks compare against.

    The totals are kept by `services/quota.py` alone, each change a conditional UPDATE of this
    row, so a check never re-aggregates history and concurrent calls (on any replica) cannot
    both pass it. `tokens_used` is what was charged, `tokens_reserved` what calls in progress
    hold; `storage_bytes` and `voice_count` cover live voices (and voices being created).
    """

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(128))
    token_quota: Mapped[int | None] = mapped_column(BigInteger)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    tokens_used: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    tokens_reserved: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    storage_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    voice_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Reservation(Base):
    """What one call in progress holds of its user's totals, from before its work starts until
    it is settled (charged, or released on failure). A row a dead process left behind is
    released at start-up, so a crash never keeps a user's quota."""

    __tablename__ = "reservations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: tts | stream | batch | clone | design | realtime
    purpose: Mapped[str] = mapped_column(String(16))
    tokens: Mapped[int] = mapped_column(BigInteger)
    storage_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    voices: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    #: The server process (`Instance.id`) whose call holds it: released once that process's
    #: lease has lapsed. None only for holds taken before leases existed (migration 0004).
    instance_id: Mapped[str | None] = mapped_column(String(32), index=True)


class Instance(Base):
    """A running server process and its lease (services/leases.py).

    Each process inserts its row at start and renews `heartbeat_at` every few seconds; a row
    whose heartbeat is older than LEASE_S belongs to a process that died, and any live process
    then settles the open streams and reservations that name it, and deletes it. Rows and holds
    name their instance by id, without a foreign key: the id stays on a generation as the
    record of who served it after its instance row is gone.
    """

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Invite(Base):
    __tablename__ = "invites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AudioBlob(Base):
    """One stored file, keyed by the SHA-256 of its bytes, shared by every row that uses it."""

    __tablename__ = "audio_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    media_type: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    duration_s: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Voice(Base):
    __tablename__ = "voices"
    __table_args__ = (Index("ix_voices_user_live", "user_id", "deleted_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # clone | design
    language: Mapped[str] = mapped_column(String(32), default="auto")
    ref_text: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    ref_audio_sha256: Mapped[str | None] = mapped_column(
        ForeignKey("audio_blobs.sha256", ondelete="SET NULL"), index=True
    )
    prompt: Mapped[bytes] = mapped_column(LargeBinary)
    tokens_used: Mapped[int] = mapped_column(Integer, default=0)
    use_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    voice_id: Mapped[int | None] = mapped_column(ForeignKey("voices.id", ondelete="SET NULL"))
    format: Mapped[str] = mapped_column(String(8))
    language: Mapped[str] = mapped_column(String(32))
    store: Mapped[bool] = mapped_column(Boolean, default=False)
    item_count: Mapped[int] = mapped_column(Integer)
    chars: Mapped[int] = mapped_column(Integer)
    tokens_used: Mapped[int] = mapped_column(Integer, default=0)
    discount_used: Mapped[float] = mapped_column(Float)
    latency_ms_total: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[GenerationStatus] = mapped_column(_string_enum(GenerationStatus))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Generation(Base):
    """One synthesised text: a /tts call or one item of a batch. Text and audio only when stored."""

    __tablename__ = "generations"
    __table_args__ = (Index("ix_generations_user_batch", "user_id", "batch_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    voice_id: Mapped[int | None] = mapped_column(ForeignKey("voices.id", ondelete="SET NULL"))
    #: The CustomVoice preset that spoke it (lower case), when no stored voice did.
    speaker: Mapped[str | None] = mapped_column(String(64))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    format: Mapped[str] = mapped_column(String(8))
    language: Mapped[str] = mapped_column(String(32))
    temperature: Mapped[float] = mapped_column(Float)
    chars: Mapped[int] = mapped_column(Integer)
    tokens_used: Mapped[int] = mapped_column(Integer, default=0)
    #: Model time only (queue wait is `queue_ms`): what X-Latency-Ms reports and what the batch
    #: discount is calibrated on.
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    queue_ms: Mapped[int | None] = mapped_column(Integer)
    finish_reason: Mapped[FinishReason | None] = mapped_column(_string_enum(FinishReason))
    audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    store: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[GenerationStatus] = mapped_column(_string_enum(GenerationStatus))
    error: Mapped[str | None] = mapped_column(Text)
    input_text: Mapped[str | None] = mapped_column(Text)
    #: Stored generations made with timestamps: their words, JSON [[text, start, end], ...].
    words: Mapped[str | None] = mapped_column(Text)
    audio_sha256: Mapped[str | None] = mapped_column(
        ForeignKey("audio_blobs.sha256", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    #: A stream's playback (services/playback.py): when its first audio was sent, its longest
    #: underrun, and the earliest start that plays it without one (ms from submission).
    first_audio_ms: Mapped[int | None] = mapped_column(Integer)
    underrun_ms: Mapped[int | None] = mapped_column(Integer)
    safe_start_ms: Mapped[int | None] = mapped_column(Integer)
    #: The server process that opened it (a stream): set while it is STREAMING, kept after.
    instance_id: Mapped[str | None] = mapped_column(String(32), index=True)


class RuntimeStat(Base):
    """Deployment-wide calibration values (batch discount state), shared by every replica."""

    __tablename__ = "runtime_stats"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
