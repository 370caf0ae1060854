"""Every error status each route answers, declared in one table (`ERRORS`), so /docs lists them
and tests/integration/test_schemathesis.py holds the server to them.

Routers are built with `DocumentedRoute`, which takes a route's error responses from the table
by the name of its endpoint function: a route missing from the table fails at import, and a
status is added or removed for a route here only. A route's decorator still declares its
success responses (content types), which are its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute

from qwen3_tts_server.api.openai_errors import is_openai_path
from qwen3_tts_server.schemas import Detail, OpenAIError

_MEANINGS = {
    400: "Invalid input the schema cannot tell (a body that does not parse, an unknown "
    "language, speaker or format, a text too long, unusable audio, ...); the detail says "
    "what to change",
    401: "Missing bearer token",
    402: "Token quota exhausted",
    403: "Invalid, revoked or disabled credentials",
    404: "Not found (or not yours)",
    409: "The voice was made by another model",
    413: "Body too large, or your storage limit reached",
    429: "Queue full; retry after the Retry-After seconds",
    503: "Not ready, shutting down, a model not configured, or an outage (database, memory); "
    "with Retry-After, retry after that many seconds",
}
#: /v1 answers OpenAI's codes: every key failure is a 401, and validation errors are a 400.
_OPENAI_MEANINGS = {
    **_MEANINGS,
    400: "Invalid input (validation included); the message says what to change",
    401: "Missing, invalid, revoked or disabled API key",
    404: "No such voice (the message lists yours)",
}
#: Retry-After: always on a 429; on a 503 only when the server expects to recover (a database
#: or memory outage, an unusable designed sample), so that clients retry exactly those
#: (clients/python). A 503 without it (no such model, a text the model never finishes) is not
#: retried.
_RETRY_AFTER = {
    code: {
        "Retry-After": {
            "description": "Seconds to wait before trying again",
            "required": code == 429,
            "schema": {"type": "integer", "minimum": 0},
        }
    }
    for code in (429, 503)
}

# Causes shared by many routes. FastAPI adds 422 (validation) to every route with parameters.
#: A route that takes an API key or the admin token (401: none sent; 403: a wrong one) and uses
#: the database (503: it is down).
CALLER = (401, 403, 503)
#: A body that does not parse (400) or passes the size limit (413).
BODY = (400, 413)
#: Work for the model: charged (402), queued (429), run (503: not loaded, shutting down, out of
#: memory, a text the model never finishes).
MODEL = (402, 429, 503)
#: Speech in a voice: one of yours (404) made by this model (409), or a preset speaker.
SPEECH = (*CALLER, *BODY, *MODEL, 404, 409)

#: Error statuses by endpoint function name.
ERRORS: dict[str, tuple[int, ...]] = {
    "health": (),
    "ready": (503,),
    "metrics": (),
    "playground": (),
    "favicon": (),
    "create_user": (*CALLER, *BODY),
    "get_users": CALLER,
    "disable_user": (*CALLER, 404),
    "enable_user": (*CALLER, 404),
    "get_keys": (*CALLER, 404),
    "revoke_key": (*CALLER, 404),
    "create_invite": (*CALLER, 404),
    "exchange_invite": (*BODY, 403, 503),
    # 403 also when the voice limit is reached; 413 also when the storage limit is.
    "clone_voice": (*CALLER, *BODY, *MODEL),
    "design_voice": (*CALLER, *BODY, *MODEL),
    "list_voices": CALLER,
    "get_voice": (*CALLER, 404),
    "get_sample": (*CALLER, 404),
    "delete_voice": (*CALLER, 404),
    "tts": SPEECH,
    "tts_timestamps": SPEECH,  # 503 also without an aligner
    "batch_tts": SPEECH,
    "get_stored": (*CALLER, 404),
    "get_captions": (*CALLER, 404),
    "speakers": CALLER,  # 503 also without the CustomVoice model
    "speech": tuple(code for code in SPEECH if code != 403),  # OpenAI's: key failures are 401s
    "get_usage": CALLER,
    "get_generation": (*CALLER, 404),
}


def error_responses(path: str, codes: tuple[int, ...]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for `codes` on `path`, in the error shape that path answers."""
    openai = is_openai_path(path)
    meanings = _OPENAI_MEANINGS if openai else _MEANINGS
    responses: dict[int | str, dict[str, Any]] = {}
    for code in sorted(set(codes)):
        response: dict[str, Any] = {
            "model": OpenAIError if openai else Detail,
            "description": meanings[code],
        }
        if code in _RETRY_AFTER:
            response["headers"] = _RETRY_AFTER[code]
        responses[code] = response
    return responses


class DocumentedRoute(APIRoute):
    """A route whose error responses are its row of `ERRORS`; what its decorator declares for
    a status (a body model, content types) is laid over the table's entry for it."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        responses = error_responses(path, ERRORS[endpoint.__name__])
        for code, declared in (kwargs.pop("responses", None) or {}).items():
            responses[code] = {**responses.get(code, {}), **declared}
        super().__init__(path, endpoint, responses=responses, **kwargs)
