"""Liveness and readiness probes (no auth)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from qwen3_tts_server.api.deps import Context
from qwen3_tts_server.db.session import ping
from qwen3_tts_server.schemas import ReadyStatus, Status

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Status, summary="Liveness")
def health() -> Status:
    """The process is up. Never touches the database or the model."""
    return Status(status="ok")


@router.get(
    "/ready",
    response_model=ReadyStatus,
    responses={503: {"model": ReadyStatus, "description": "Not ready yet"}},
    summary="Readiness",
)
def ready(context: Context) -> JSONResponse:
    """200 when the database answers and the model is loaded and warm; 503 otherwise."""
    database_ok = ping(context.db)
    runtime = context.runtime
    is_ready = database_ok and runtime.ready
    body = ReadyStatus(
        status="ready" if is_ready else "not_ready",
        database="ok" if database_ok else "unavailable",
        model=runtime.status,
        error=runtime.error,
    )
    return JSONResponse(body.model_dump(), status_code=200 if is_ready else 503)
