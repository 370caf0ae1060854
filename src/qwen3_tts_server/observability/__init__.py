"""Metrics, structured logs and request ids for one app.

`configure_logging` is process-wide (the CLI calls it once); `install_observability` is per app,
so tests can run several apps side by side, each with its own metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response

from qwen3_tts_server.observability.logging import configure_logging
from qwen3_tts_server.observability.metrics import Metrics, TokenKind
from qwen3_tts_server.observability.middleware import RequestObservability

if TYPE_CHECKING:  # context.py imports Metrics from here: no import cycle at run time
    from qwen3_tts_server.context import AppContext

__all__ = ["Metrics", "TokenKind", "configure_logging", "install_observability"]


def install_observability(app: FastAPI, context: AppContext, metrics: Metrics) -> None:
    """Add GET /metrics, the request-id/timing/access-log middleware and `app.state.metrics`.

    Call it after every other `add_middleware`, so this middleware is the outermost one and
    also stamps responses that inner middleware answers on its own (413, CORS preflight).
    `metrics` is the object the scheduler and routes feed (built with the context).

    /metrics has no authentication, like most Prometheus targets: keep the port off the public
    internet or block the path at the reverse proxy. It exposes counts and the model's name,
    never a user's data.
    """
    if getattr(app.state, "metrics", None) is not None:
        raise RuntimeError("observability is already installed on this app")
    metrics.watch_runtime(context.runtime)
    app.state.metrics = metrics

    def scrape(request: Request) -> Response:
        """Counters, histograms and gauges in the format the scraper asks for (Accept)."""
        body, content_type = metrics.render(request.headers.get("accept", ""))
        return Response(body, media_type=content_type)

    app.add_api_route(
        "/metrics",
        scrape,
        methods=["GET"],
        tags=["health"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
    )
    app.add_middleware(RequestObservability, metrics=metrics)
