"""Application factory: the one place that wires settings, database, services and the model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response

from qwen3_tts_server import __version__
from qwen3_tts_server.api import (
    admin,
    auth,
    health,
    openai,
    playground,
    synthesis,
    usage,
    voices,
)
from qwen3_tts_server.api.limits import BodySizeLimit
from qwen3_tts_server.api.uploads import MULTIPART_OVERHEAD
from qwen3_tts_server.audio.errors import AudioError, UploadTooLarge
from qwen3_tts_server.config import Settings, resolve_secrets
from qwen3_tts_server.context import AppContext
from qwen3_tts_server.db.session import make_engine, make_session_factory, upgrade
from qwen3_tts_server.engine.base import (
    Engine,
    InvalidInput,
    JobTimeout,
    ModelUnavailable,
    PromptCorrupt,
    PromptMismatch,
    QueueFull,
    ShuttingDown,
)
from qwen3_tts_server.engine.scheduler import Scheduler
from qwen3_tts_server.errors import ApiError
from qwen3_tts_server.observability import Metrics, install_observability
from qwen3_tts_server.services.accounts import AccountService
from qwen3_tts_server.services.media import MediaLibrary
from qwen3_tts_server.services.recovery import keep_recovering, recover
from qwen3_tts_server.services.runtime import ModelRuntime
from qwen3_tts_server.services.streaming import StreamingService
from qwen3_tts_server.services.synthesis import SynthesisService
from qwen3_tts_server.services.voices import VoiceService
from qwen3_tts_server.storage.blobs import BlobStore

log = logging.getLogger(__name__)

#: Headers browsers may read from cross-origin responses (the original exposed none).
EXPOSED_HEADERS = [
    "X-Generation-Id",
    "X-Tokens-Used",
    "X-Latency-Ms",
    "X-Batch-Id",
    "X-Batch-Discount-Used",
    "X-Latency-Ms-Total",
    "X-Sample-Rate",
    "X-First-Audio-Ms",
    "X-Request-Id",
    "Retry-After",
]

EngineLoader = Callable[[], Engine]


def build_context(settings: Settings, load_engine: EngineLoader, metrics: Metrics) -> AppContext:
    """Resolve secrets, migrate the database and build the services (no model loading yet)."""
    settings = resolve_secrets(settings)
    assert settings.admin_token is not None and settings.hmac_secret is not None
    db = make_engine(settings.resolved_database_url)
    upgrade(db)
    sessions = make_session_factory(db)

    def make_scheduler(engine: Engine) -> Scheduler:
        scheduler = Scheduler(
            engine,
            queue_max=settings.queue_max,
            max_batch=settings.engine_max_batch,
            job_timeout_s=settings.job_timeout_s,
        )
        scheduler.on_batch = metrics.observe_batch
        return scheduler

    runtime = ModelRuntime(load_engine, make_scheduler)
    media = MediaLibrary(sessions, BlobStore(settings.resolved_media_dir / "blobs"))
    synthesis = SynthesisService(settings, sessions, media, runtime)
    return AppContext(
        settings=settings,
        admin_token=settings.admin_token.get_secret_value(),
        db=db,
        sessions=sessions,
        accounts=AccountService(sessions, settings.hmac_secret.get_secret_value()),
        runtime=runtime,
        media=media,
        voices=VoiceService(settings, sessions, media, runtime),
        synthesis=synthesis,
        streaming=StreamingService(settings, runtime, synthesis),
        metrics=metrics,
    )


def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


#: Engine and audio errors are typed where they happen; this is their one mapping to HTTP.
_ERROR_STATUS: list[tuple[type[Exception], int]] = [
    (UploadTooLarge, 413),
    (AudioError, 400),
    (QueueFull, 429),
    (PromptMismatch, 409),
    (PromptCorrupt, 409),
    (InvalidInput, 400),
    (ModelUnavailable, 503),
    (JobTimeout, 503),
    (ShuttingDown, 503),
]

_PROMPT_HINT = " (the voice was made by another model: recreate it with this server's model)"


def _typed_error(_request: Request, exc: Exception) -> JSONResponse:
    status = next(code for kind, code in _ERROR_STATUS if isinstance(exc, kind))
    detail = str(exc)
    headers = {}
    if isinstance(exc, QueueFull):
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, PromptMismatch | PromptCorrupt):
        detail += _PROMPT_HINT
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _validation_error(_request: Request, exc: Exception) -> Response:
    """FastAPI's 422 body, but ASCII-escaped: the echoed input may hold characters (unpaired
    surrogates) that cannot be encoded as UTF-8, and that must not turn a 422 into a 500."""
    assert isinstance(exc, RequestValidationError)
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # Starlette answers unhandled errors outside every middleware: add the request id here.
    request_id = getattr(request.state, "request_id", "")
    return JSONResponse(
        {"detail": f"Internal server error (request id {request_id})"},
        status_code=500,
        headers={"X-Request-Id": request_id} if request_id else None,
    )


def create_app(settings: Settings, load_engine: EngineLoader) -> FastAPI:
    """Build the app. The model loads in the background once the app starts serving."""
    metrics = Metrics()
    context = build_context(settings, load_engine, metrics)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        grace_s = context.settings.resolved_recovery_grace_s
        recover(context.sessions, context.media, grace_s)
        recovering = (
            asyncio.create_task(keep_recovering(context.sessions, context.media, grace_s))
            if grace_s > 0
            else None
        )
        context.runtime.start()
        try:
            yield
        finally:
            if recovering is not None:
                recovering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await recovering
            context.runtime.stop()
            context.db.dispose()

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
    app.add_middleware(
        CORSMiddleware,
        allow_origins=context.settings.cors_origin_list,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
    )
    app.add_middleware(
        BodySizeLimit, max_bytes=context.settings.max_upload_bytes + MULTIPART_OVERHEAD
    )
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for kind, _status in _ERROR_STATUS:
        app.add_exception_handler(kind, _typed_error)
    app.add_exception_handler(Exception, _unexpected)
    install_observability(app, context, metrics)
    for router in (
        health.router,
        admin.router,
        auth.router,
        voices.router,
        synthesis.router,
        openai.router,
        usage.router,
        playground.router,
    ):
        app.include_router(router)
    return app
