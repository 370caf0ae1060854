"""Request id, timing, metrics and the access log, as one pure ASGI middleware.

Pure ASGI rather than `BaseHTTPMiddleware`: it streams bodies untouched, keeps the request's
context (so the request id reaches threadpool code), and sees every response start, including
413s sent by `BodySizeLimit` before any route runs, as long as it is added after it (outermost).

It logs the method, the route template, the status, the latency, the request id, the user id
and the client address, and nothing else: never headers (keys, tokens), query strings or bodies
(invite codes, texts).
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwen3_tts_server.observability.logging import bind_request_id
from qwen3_tts_server.observability.metrics import Metrics

access_log = logging.getLogger("qwen3_tts_server.access")

REQUEST_ID_HEADER = b"x-request-id"

#: An incoming X-Request-Id is echoed only when it is this harmless (safe in logs and headers).
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

#: The route label of a request no route handled: one series for every unknown path.
UNMATCHED = "unmatched"


def request_id_for(scope: Scope) -> str:
    """The caller's X-Request-Id if it is short printable ASCII, else a fresh uuid4 hex."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            candidate = value.decode("latin-1")
            if _VALID_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The path template of the route the router picked, or UNMATCHED when there was none.

    No route means a 404, or a request answered before routing (a 413 refused from its declared
    Content-Length): the raw path is never used, so unknown URLs cannot add series.
    """
    template = getattr(scope.get("route"), "path_format", None)
    return template if isinstance(template, str) else UNMATCHED


class RequestObservability:
    """Gives every HTTP response an X-Request-Id, then counts, times and logs the request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_for(scope)
        # Handlers see it as `request.state.request_id` (e.g. to put it on a 500 they build).
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        bind_request_id(request_id)
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500  # what the client gets if the app raises before responding
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = route_template(scope)
            self.metrics.observe_request(scope["method"], route, status, seconds)
            client = scope.get("client")
            access_log.info(
                "%s %s %d",
                scope["method"],
                route,
                status,
                extra={
                    "request_id": request_id,
                    "user_id": state.get("user_id"),
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "latency_ms": round(seconds * 1000, 1),
                    "client": client[0] if client else None,
                },
            )
