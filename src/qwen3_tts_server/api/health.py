"""Liveness, readiness and metrics probes (no auth)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from qwen3_tts_server.api.deps import Context
from qwen3_tts_server.api.responses import DocumentedRoute
from qwen3_tts_server.schemas import ReadyStatus, Status

router = APIRouter(tags=["health"], route_class=DocumentedRoute)


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
    """200 when the database answers, the model is loaded and warm and the aligner has
    finished loading (or failed: then speech is served and `aligner_error` says why
    timestamps are not); 503 otherwise."""
    readiness = context.system.readiness()
    body = ReadyStatus(
        status="ready" if readiness.ready else "not_ready",
        database="ok" if readiness.database_ok else "unavailable",
        model=readiness.model,
        error=readiness.error,
        aligner=readiness.aligner,
        aligner_error=readiness.aligner_error,
    )
    return JSONResponse(body.model_dump(), status_code=200 if readiness.ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
    summary="Prometheus metrics",
)
def metrics(request: Request, context: Context) -> Response:
    """Counters, histograms and gauges in the format the scraper asks for (Accept).

    No authentication, like most Prometheus targets: keep the port off the public internet or
    block the path at the reverse proxy. It exposes counts and the model's name, never a
    user's data.
    """
    body, content_type = context.metrics.render(request.headers.get("accept", ""))
    return Response(body, media_type=content_type)
