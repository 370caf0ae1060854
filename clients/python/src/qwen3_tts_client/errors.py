"""What the client raises: one base class, and one class per kind of failure a caller handles
differently (fix the request, fix the key, wait and retry, give up).

The server answers every failure a client can cause with a 4xx and a JSON body that says what to
fix: `{"detail": "..."}` on the native routes, a list of field errors on a 422, OpenAI's
`{"error": {"message": ...}}` below /v1 and on the realtime handshake. `ApiError.detail` is that
message, whatever the shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any


class Qwen3TTSError(Exception):
    """Base of everything this package raises."""


class NetworkError(Qwen3TTSError):
    """The server could not be reached, or stopped answering (connection refused, timeout).

    Never retried by the client: the server said nothing about when to come back, and a call
    that timed out may have been carried out."""


class StreamInterrupted(Qwen3TTSError):
    """A stream ended without its final chunk: the server failed after sending part of the
    audio (such a stream costs nothing), or the connection broke. The audio is incomplete."""


class UnexpectedResponse(Qwen3TTSError):
    """A success status with a body this client cannot read (not a Qwen3-TTS server?)."""


class ApiError(Qwen3TTSError):
    """The server refused the call.

    `status` is the HTTP status code, `detail` the server's message (what to fix),
    `retry_after` the seconds the server asked to wait (Retry-After), or None, and `body` the
    decoded JSON body (None when it was not JSON).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        self.body = body


class BadRequestError(ApiError):
    """400: the request is wrong (text, language, format, voice kind, upload); see `detail`."""


class AuthenticationError(ApiError):
    """401: no API key was sent (native routes), or the key is missing, wrong or revoked
    (the realtime socket, as on OpenAI's /v1)."""


class QuotaExceededError(ApiError):
    """402: the call would pass your token quota."""


class PermissionDeniedError(ApiError):
    """403: the API key is wrong or revoked, the account is disabled, or a limit such as the
    voice count is reached (the native routes keep the original server's codes)."""


class NotFoundError(ApiError):
    """404: no such voice, generation or path (another user's ids answer 404 too)."""


class ConflictError(ApiError):
    """409: e.g. a voice made by another model size than the server's."""


class PayloadTooLargeError(ApiError):
    """413: the upload is too large, or your reference storage is full."""


class UnprocessableEntityError(ApiError):
    """422: the body did not validate (a missing or malformed field); `detail` names it."""


class RateLimitError(ApiError):
    """429: your queue at the server is full; retry after `retry_after` seconds."""


class ServerError(ApiError):
    """5xx: an outage or a bug at the server, not the request's fault."""


class ServiceUnavailableError(ServerError):
    """503: no model loaded, the database down, a generation that never ended, shutting
    down; `retry_after` is set when the server expects to recover."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: QuotaExceededError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: a number of seconds or an HTTP date (RFC 9110 §10.2.3);
    None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if seconds == seconds else None  # NaN is unreadable


def _message(body: Any) -> str | None:
    """The server's message in any of its error shapes."""
    if not isinstance(body, dict):
        return None
    detail = body.get("detail")
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # a 422: [{"loc": [...], "msg": "..."}, ...]
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(part) for part in item.get("loc", ()))
                parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg")))
        return "; ".join(parts) or None
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return None


def error_for(status: int, headers: Mapping[str, str], content: bytes) -> ApiError:
    """The typed error for a refused call, from its status, headers and body."""
    try:
        body: Any = json.loads(content)
    except ValueError:
        body = None
    detail = _message(body) or content.decode("utf-8", "replace").strip() or f"HTTP {status}"
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    retry_after = retry_after_seconds(headers.get("retry-after"))
    return kind(status, detail, retry_after=retry_after, body=body)
