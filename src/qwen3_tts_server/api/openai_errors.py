"""Errors on /v1 in OpenAI's shape, so OpenAI's SDKs raise the exception their users expect.

OpenAI answers `{"error": {"message", "type", "param", "code"}}`; its SDKs read
`error.message` into the exception's text and pick the exception class by status. The native
routes keep `{"detail": ...}` and their original codes (drop-in compatibility with the original
server); app.py asks `is_openai_path` which shape a failed request gets. Validation errors,
which FastAPI answers 422 with a list, are a 400 naming the field here, as OpenAI's are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.responses import JSONResponse

#: Paths answered in OpenAI's error shape.
OPENAI_PREFIX = "/v1/"

#: OpenAI's `type` for each status we answer with (anything else 4xx is a bad request).
_TYPES = {
    401: "invalid_request_error",
    402: "insufficient_quota",
    404: "invalid_request_error",
    429: "rate_limit_error",
}
#: OpenAI's `code` where it has one for the same situation.
_CODES = {
    401: "invalid_api_key",
    402: "insufficient_quota",
    404: "not_found",
    429: "rate_limit_exceeded",
}


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PREFIX)


def openai_error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    error_type = "server_error" if status >= 500 else _TYPES.get(status, "invalid_request_error")
    return {
        "error": {
            "message": message,
            "type": error_type,
            "param": param,
            "code": _CODES.get(status),
        }
    }


def openai_error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(openai_error_body(status, message, param), status, headers=headers)


def validation_error(errors: Sequence[Any]) -> JSONResponse:
    """FastAPI's validation errors as OpenAI's 400: the first field at fault (`param`) and what
    is wrong with it (each alternative of a union, such as `voice`, says its own problem)."""
    first = errors[0] if errors else {}
    location = [part for part in first.get("loc", ()) if part != "body"]
    param = str(location[0]) if location else None
    same_field = [error for error in errors if _field(error) == param] or [first]
    problems = list(dict.fromkeys(str(error.get("msg", "invalid")) for error in same_field))
    problem = " or ".join(problems)
    if param is None:
        message = f"Invalid request body: {problem}"
    elif first.get("type") == "missing" and len(location) == 1:
        message = f"Missing required parameter: '{param}'."
    else:
        message = f"Invalid value for '{param}': {problem}."
    others = len(errors) - len(same_field)
    if others > 0:
        message += f" ({others} more problem{'s' if others > 1 else ''} in the body)"
    return openai_error(400, message, param=param)


def _field(error: Any) -> str | None:
    location = [part for part in error.get("loc", ()) if part != "body"]
    return str(location[0]) if location else None
