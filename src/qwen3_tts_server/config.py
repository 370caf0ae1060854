"""Settings from the environment (seed names kept), read once by whoever builds the app.

Nothing here is read at import time: `Settings()` is built by the CLI or a test and handed to
`create_app`, so two apps with different settings can live in one process.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from qwen3_tts_server.engine.step.sizing import default_rows
from qwen3_tts_server.values import Sampling

log = logging.getLogger(__name__)

#: Where each model variant lives below MODELS_DIR: the last part of its repo id, like the
#: original server's hard-coded directory names.
DEFAULT_BASE_REPO = "Qwen/Qwen3-TTS-12Hz-1.7B-Base"
DEFAULT_VOICEDESIGN_REPO = "Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign"
DEFAULT_ALIGNER_REPO = "Qwen/Qwen3-ForcedAligner-0.6B"


class Settings(BaseSettings):
    """Every knob of the server. Env names are the field names in upper case."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    host: str = "0.0.0.0"  # noqa: S104 - a server in a container listens on all interfaces
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    log_level: str = "INFO"
    log_json: bool = True

    data_dir: Path = Path("data")
    database_url: str = ""
    media_dir: Path | None = None

    models_dir: Path = Path("models")
    model_base_repo: str = DEFAULT_BASE_REPO
    model_voicedesign_repo: str = DEFAULT_VOICEDESIGN_REPO
    model_custom_repo: str = ""
    #: Word timestamps (POST /tts/timestamps, captions): Qwen3-ForcedAligner; empty disables.
    model_aligner_repo: str = DEFAULT_ALIGNER_REPO
    hf_token: SecretStr | None = None
    allow_download: bool = True
    device: Literal["auto", "cuda", "cpu"] = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    #: int8 weights for the talker and code predictor on CPU (faster, codes differ): README.
    quant: Literal["none", "int8"] = "none"
    #: CPU threads for the model (unset: the CPUs this process may run on).
    torch_threads: int | None = Field(None, ge=1)

    admin_token: SecretStr | None = None
    hmac_secret: SecretStr | None = None

    max_text_len: int = Field(3000, ge=1)
    min_batch_size: int = Field(2, ge=1)
    max_batch_size: int = Field(50, ge=1)
    batch_discount_default: float = Field(0.90, gt=0, le=1)
    batch_discount_min: float = Field(0.60, gt=0, le=1)
    batch_discount_max: float = Field(1.00, gt=0, le=1)
    batch_discount_ewma_alpha: float = Field(0.10, gt=0, le=1)

    #: Sampling for every call that does not choose its own (defaults stated once, in Sampling).
    sampling_temperature: float = Field(Sampling.temperature, ge=0.01, le=2)  # as requests
    sampling_top_k: int = Field(Sampling.top_k, ge=1)
    sampling_top_p: float = Field(Sampling.top_p, gt=0, le=1)
    sampling_repetition_penalty: float = Field(Sampling.repetition_penalty, gt=0)

    #: Unfinished jobs (API calls) the scheduler holds in total, and per user.
    queue_max: int = Field(64, ge=1)
    user_queue_max: int = Field(16, ge=1)
    #: Slots (texts generated side by side; default 8 on CPU, 128 on CUDA) and K/V positions
    #: per slot (prompt + frames); README "Sizing the engine". Reserve slots only go to users
    #: holding none.
    engine_max_batch: int | None = Field(None, ge=1, le=256)
    engine_max_context: int = Field(2048, ge=256, le=32768)
    engine_reserve_slots: int = Field(2, ge=0)
    job_timeout_s: float = Field(600.0, gt=0)
    #: Frames (80 ms) one sentence chunk may make at most; each text gets less, its own budget.
    max_frames: int = Field(2048, ge=1)
    #: On shutdown, running and queued work may finish for this long, then it is cancelled.
    shutdown_drain_s: float = Field(10.0, ge=0)
    chunk_max_chars: int = Field(300, ge=20)

    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    min_ref_seconds: float = Field(1.0, gt=0)
    max_ref_seconds: float = Field(60.0, gt=0)

    #: WS /v1/audio/speech/stream: a session that neither sends anything nor waits for audio
    #: this long is closed, and none lasts longer than the second limit.
    realtime_idle_s: float = Field(60.0, gt=0)
    realtime_max_session_s: float = Field(1800.0, gt=0)
    #: Per-user limits on reference audio (clone uploads and designed references of live
    #: voices) and on live voices, and the least a clone is charged (see README, Accounting).
    max_user_storage_bytes: int = Field(200 * 1024 * 1024, ge=0)
    max_user_voices: int = Field(50, ge=0)
    clone_min_tokens: int = Field(20, ge=0)

    cors_origins: str = "*"

    #: HTTP edge (http_server.py): the request head's size cap and how long a client may take
    #: to send its head and its body before the connection is answered 408 and closed.
    max_header_bytes: int = Field(16 * 1024, ge=1024)
    header_timeout_s: float = Field(15.0, gt=0)
    body_timeout_s: float = Field(120.0, gt=0)

    #: A server process renews its lease every LEASE_S / 6 seconds; once its lease is older
    #: than LEASE_S it counts as dead, and any live process settles its open streams and
    #: reservations (services/leases.py).
    lease_s: float = Field(30.0, ge=1)
    #: The media sweep, and rows written before leases existed, leave alone what is younger
    #: than this and repeat this often: a file in a shared MEDIA_DIR may be another replica's
    #: work in progress. Unset: an hour, or twice JOB_TIMEOUT_S if longer. One server alone
    #: may set 0 (everything is swept at start, nothing repeats).
    recovery_grace_s: float | None = Field(None, ge=0)

    @field_validator("admin_token", "hmac_secret", "hf_token", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """compose passes `VAR=""` for an unset variable: blank means absent, never a secret."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    def sampling(self, temperature: float | None = None, seed: int | None = None) -> Sampling:
        """A call's sampling: what the caller chose, the configured defaults for the rest."""
        return Sampling(
            temperature=self.sampling_temperature if temperature is None else temperature,
            top_k=self.sampling_top_k,
            top_p=self.sampling_top_p,
            repetition_penalty=self.sampling_repetition_penalty,
            seed=seed,
        )

    def engine_slots(self, device: str) -> int:
        """Slots per model the loop fills (ENGINE_MAX_BATCH, else the device's default); each
        model's slot table has ENGINE_RESERVE_SLOTS rows more, for the reserve."""
        return self.engine_max_batch or default_rows(device)

    @property
    def resolved_media_dir(self) -> Path:
        return self.media_dir or self.data_dir / "media"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'db.sqlite3'}"

    @property
    def resolved_recovery_grace_s(self) -> float:
        if self.recovery_grace_s is not None:
            return self.recovery_grace_s
        return max(3600.0, 2 * self.job_timeout_s)

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"


def _load_or_create_secret(path: Path) -> str:
    """Read a generated secret, or create it once with owner-only permissions.

    O_EXCL makes two replicas starting together agree on one value instead of overwriting each
    other's; the loser simply reads what the winner wrote.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_text(encoding="ascii").strip()
        if value:
            return value
        raise RuntimeError(f"{path} is empty: delete it to generate a new secret") from None
    value = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(value + "\n")
    log.warning("generated a new secret at %s (owner-only); keep it safe", path)
    return value


def resolve_secrets(settings: Settings) -> Settings:
    """Fill ADMIN_TOKEN and HMAC_SECRET from DATA_DIR/secrets when they are not configured."""
    updates: dict[str, SecretStr] = {}
    for name in ("admin_token", "hmac_secret"):
        if getattr(settings, name) is None:
            path = settings.secrets_dir / name
            updates[name] = SecretStr(_load_or_create_secret(path))
            log.info("%s not set; using the value stored in %s", name.upper(), path)
    return settings.model_copy(update=updates) if updates else settings
