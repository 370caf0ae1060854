"""Application factory: the HTTP shell around the context that `composition.build_context`
builds (middleware, error mapping, routers, lifespan)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import InterfaceError, InternalError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from qwen3_tts_server import __version__
from qwen3_tts_server.api import (
    admin,
    auth,
    health,
    openai,
    playground,
    realtime,
    speakers,
    synthesis,
    usage,
    voices,
)
from qwen3_tts_server.api.limits import BodySizeLimit
from qwen3_tts_server.api.openai_errors import is_openai_path, openai_error
from qwen3_tts_server.api.openai_errors import validation_error as openai_validation_error
from qwen3_tts_server.api.uploads import MULTIPART_OVERHEAD
from qwen3_tts_server.composition import AlignerLoader, EngineLoader, build_context
from qwen3_tts_server.config import Settings
from qwen3_tts_server.errors import ApiError
from qwen3_tts_server.observability import RequestObservability
from qwen3_tts_server.schemas import MAX_ID
from qwen3_tts_server.services.failures import ERROR_STATUS, describe

log = logging.getLogger(__name__)

#: Headers browsers may read from cross-origin responses (the original exposed none).
EXPOSED_HEADERS = [
    "X-Generation-Id",
    "X-Tokens-Used",
    "X-Latency-Ms",
    "X-Queue-Ms",
    "X-Batch-Id",
    "X-Batch-Discount-Used",
    "X-Latency-Ms-Total",
    "X-Sample-Rate",
    "X-First-Audio-Ms",
    "X-Finish-Reason",
    "X-Align-Ms",
    "X-Request-Id",
    "Retry-After",
]


def _error(
    request: Request, status: int, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """`{"detail": ...}`, or OpenAI's error shape on /v1 (see api/openai_errors.py)."""
    if is_openai_path(request.url.path):
        return openai_error(status, detail, headers=headers)
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _error(request, exc.status_code, exc.detail, exc.headers)


def _typed_error(request: Request, exc: Exception) -> JSONResponse:
    failure = describe(exc)
    assert failure is not None  # registered for the types in ERROR_STATUS only
    return _error(request, failure.status, failure.detail, failure.headers)


#: Failures that are outages, neither bugs nor the client's doing: 503 with a detail that says
#: to retry, and no internals (a database error's text holds its SQL).
_DATABASE_DOWN = "The database is unavailable; try again shortly"
_OUTAGES: list[tuple[type[Exception], str]] = [
    (OperationalError, _DATABASE_DOWN),
    (InterfaceError, _DATABASE_DOWN),
    (InternalError, _DATABASE_DOWN),
]


def _outage(request: Request, exc: Exception) -> JSONResponse:
    log.error("outage on %s %s: %r", request.method, request.url.path, exc)
    detail = next(text for kind, text in _OUTAGES if isinstance(exc, kind))
    return _error(request, 503, detail, {"Retry-After": "5"})


def _maybe_typed(request: Request, exc: Exception) -> JSONResponse:
    """MemoryError and RuntimeError: out of memory (torch raises a RuntimeError on the CPU, a
    subclass of it on a GPU) is a 503 like the typed errors; any other is a bug."""
    failure = describe(exc)
    if failure is None:
        return _unexpected(request, exc)
    log.error("outage on %s %s: %r", request.method, request.url.path, exc)
    return _error(request, failure.status, failure.detail, failure.headers)


def _validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 body, but ASCII-escaped: the echoed input may hold characters (unpaired
    surrogates) that cannot be encoded as UTF-8, and that must not turn a 422 into a 500.
    On /v1, OpenAI's 400 naming the field instead."""
    assert isinstance(exc, RequestValidationError)
    if is_openai_path(request.url.path):
        return openai_validation_error(exc.errors())
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # Starlette answers unhandled errors outside every middleware: add the request id here.
    request_id = getattr(request.state, "request_id", "")
    return _error(
        request,
        500,
        f"Internal server error (request id {request_id})",
        {"X-Request-Id": request_id} if request_id else None,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (no such path, wrong method): FastAPI's own answer, but in OpenAI's shape
    below /v1, where an SDK pointed at a path we do not serve should read why."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        exc.headers = {**(exc.headers or {}), "Allow": _allowed_methods(request)}
    if is_openai_path(request.url.path):
        return openai_error(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
    return await http_exception_handler(request, exc)


#: The methods a 405's Allow may list: every one a route here can have.
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method of the path, for a 405's Allow. Starlette names only those of the first
    route that matched the path, but FastAPI makes one route per method (GET and DELETE of
    /voices/{id} are two): each method is tried against every route instead."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]
    return ", ".join(allowed)


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _exact_integer_bounds(node: Any) -> None:
    """FastAPI's OpenAPI model keeps bounds as floats, which turns MAX_ID (2**63 - 1) into
    2**63: a bound the server rejects. Integer schemas get their integer bounds back."""
    if isinstance(node, list):
        for item in node:
            _exact_integer_bounds(item)
    elif isinstance(node, dict):
        if node.get("type") == "integer":
            for key in _BOUNDS:
                if isinstance(node.get(key), float):
                    node[key] = MAX_ID if node[key] == float(MAX_ID) else int(node[key])
        for value in node.values():
            _exact_integer_bounds(value)


def _no_422_on_openai_paths(spec: dict[str, Any]) -> None:
    """FastAPI documents its 422 on every route with parameters, but /v1 answers validation
    errors with OpenAI's 400 (documented by api/responses.py)."""
    for path, operations in spec["paths"].items():
        if is_openai_path(path):
            for operation in operations.values():
                operation["responses"].pop("422", None)


def _exact_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            _exact_integer_bounds(spec)
            _no_422_on_openai_paths(spec)
        assert app.openapi_schema is not None
        return app.openapi_schema

    return openapi


def create_app(
    settings: Settings, load_engine: EngineLoader, load_aligner: AlignerLoader | None = None
) -> FastAPI:
    """Build the app. The model (and the aligner, when given) loads in the background once
    the app starts serving."""
    context = build_context(settings, load_engine, load_aligner=load_aligner)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        context.system.start()
        try:
            yield
        finally:
            context.system.stop()

    app = FastAPI(
        title="Qwen3-TTS Server",
        version=__version__,
        description=(
            "Self-hosted, multi-user text-to-speech API for Qwen3-TTS. User routes take "
            "`Authorization: Bearer <api_key>`; /admin routes take the ADMIN_TOKEN."
        ),
        lifespan=lifespan,
    )
    app.state.context = context
    app.openapi = _exact_openapi(app)  # type: ignore[method-assign]
    app.add_middleware(
        CORSMiddleware,
        allow_origins=context.settings.cors_origin_list,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
    )
    app.add_middleware(
        BodySizeLimit,
        max_bytes=context.settings.max_upload_bytes + MULTIPART_OVERHEAD,
        upload_limit=context.settings.max_upload_bytes,
    )
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for kind, _status in ERROR_STATUS:
        app.add_exception_handler(kind, _typed_error)
    for kind, _detail in _OUTAGES:
        app.add_exception_handler(kind, _outage)
    for kind in (MemoryError, RuntimeError):
        app.add_exception_handler(kind, _maybe_typed)
    app.add_exception_handler(Exception, _unexpected)
    # Last, so it is the outermost middleware and also stamps the responses that inner
    # middleware answers on its own (413, CORS preflight).
    app.add_middleware(RequestObservability, metrics=context.metrics)
    for router in (
        health.router,
        admin.router,
        auth.router,
        voices.router,
        synthesis.router,
        speakers.router,
        openai.router,
        realtime.router,
        usage.router,
        playground.router,
    ):
        app.include_router(router)
    return app
