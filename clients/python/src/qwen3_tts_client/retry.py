"""When a refused call is tried again: only when the server said when.

The server answers 429 (your queue is full) and some 503s (an outage it expects to pass) with
Retry-After, and such a call was not carried out and costs nothing, so sending it again is safe,
uploads and POSTs included. Every other failure is raised at once: a 4xx needs a change to the
request, and a 5xx or a broken connection without Retry-After says nothing about when, or
whether, trying again helps (a timed-out call may even have been carried out).
"""

from __future__ import annotations

from dataclasses import dataclass

from qwen3_tts_client.errors import ApiError

#: Statuses whose Retry-After is honoured.
RETRYABLE_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """`max_retries` further attempts at most, each after the Retry-After the server sent,
    and none when that is longer than `max_wait` seconds (the error is raised instead, with
    its `retry_after`, for the caller to decide)."""

    max_retries: int = 2
    max_wait: float = 30.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.max_wait < 0:
            raise ValueError("max_retries and max_retry_wait must be >= 0")

    def delay(self, error: ApiError, attempt: int) -> float | None:
        """Seconds to wait before retry number `attempt + 1`, or None to raise `error`."""
        if attempt >= self.max_retries or error.status not in RETRYABLE_STATUSES:
            return None
        if error.retry_after is None or error.retry_after > self.max_wait:
            return None
        return error.retry_after
