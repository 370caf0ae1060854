"""Errors a client can cause, each with the status code and a message that says what to fix.

Services raise these without knowing about HTTP; app.py turns any of them into
`{"detail": message}` with `status_code`. Anything else reaching the client is a bug (500).
"""

from __future__ import annotations


class ApiError(Exception):
    """An expected failure with a client-facing message."""

    status_code = 400

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadRequest(ApiError):
    status_code = 400


class Unauthorized(ApiError):
    status_code = 401


class Forbidden(ApiError):
    status_code = 403


class NotFound(ApiError):
    status_code = 404


class QuotaExceeded(ApiError):
    status_code = 402


class StorageExceeded(ApiError):
    """A per-user storage limit would be passed (the upload does not fit the room left)."""

    status_code = 413


class ServiceUnavailable(ApiError):
    status_code = 503
