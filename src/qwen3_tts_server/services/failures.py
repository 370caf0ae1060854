"""What a failure means to a client: the status code, message and headers of every error the
server raises on purpose.

Engine and audio errors are typed where they happen; `ERROR_STATUS` is their one mapping to a
status code. app.py answers HTTP requests with `describe`; the realtime socket, which has no
status line for each piece of audio, puts the same code and message in its error events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qwen3_tts_server.audio.errors import AudioError, UploadTooLarge
from qwen3_tts_server.engine.base import (
    InvalidInput,
    JobTimeout,
    ModelUnavailable,
    PromptCorrupt,
    PromptMismatch,
    QueueFull,
    Runaway,
    ShuttingDown,
)
from qwen3_tts_server.engine.serving.memory import RETRY_AFTER_S, OutOfMemory, is_out_of_memory
from qwen3_tts_server.errors import ApiError

#: Typed errors and their status codes (the first matching entry wins).
ERROR_STATUS: list[tuple[type[Exception], int]] = [
    (UploadTooLarge, 413),
    (AudioError, 400),
    (QueueFull, 429),
    (PromptMismatch, 409),
    (PromptCorrupt, 409),
    (InvalidInput, 400),
    (ModelUnavailable, 503),
    (JobTimeout, 503),
    (ShuttingDown, 503),
    (Runaway, 503),
    (OutOfMemory, 503),
]

#: Out of memory, wherever it ran out (engine/serving/memory.py): an outage, retried later, free.
OUT_OF_MEMORY = "The server ran out of memory for this call; try again later"

_PROMPT_HINT = " (the voice was made by another model: recreate it with this server's model)"


@dataclass(frozen=True)
class Failure:
    status: int
    detail: str
    headers: dict[str, str] = field(default_factory=dict)


def describe(error: BaseException) -> Failure | None:
    """How a client is told about `error`; None for an unexpected one (a bug: a 500)."""
    if isinstance(error, ApiError):
        return Failure(error.status_code, error.detail, error.headers)
    if is_out_of_memory(error):
        return Failure(503, OUT_OF_MEMORY, {"Retry-After": str(RETRY_AFTER_S)})
    status = next((code for kind, code in ERROR_STATUS if isinstance(error, kind)), None)
    if status is None:
        return None
    detail = str(error)
    headers = {}
    if isinstance(error, QueueFull):
        headers["Retry-After"] = str(error.retry_after_s)
    if isinstance(error, PromptMismatch | PromptCorrupt):
        detail += _PROMPT_HINT
    return Failure(status, detail, headers)
