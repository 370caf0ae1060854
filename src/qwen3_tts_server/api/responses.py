"""OpenAPI descriptions of error responses, so /docs lists what each route can answer."""

from __future__ import annotations

from typing import Any

from qwen3_tts_server.schemas import Detail

_MEANINGS = {
    400: "Invalid input; the detail says what to change",
    401: "Missing bearer token",
    402: "Token quota exhausted",
    403: "Invalid, revoked or disabled credentials",
    404: "Not found (or not yours)",
    409: "Conflicts with stored state",
    413: "Upload too large",
    429: "Queue full; retry after the Retry-After seconds",
    503: "Model not loaded yet or shutting down",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Detail, "description": _MEANINGS[code]} for code in codes}


ADMIN_ERRORS = error_responses(401, 403)
USER_ERRORS = error_responses(401, 403)
NOT_FOUND = error_responses(404)
