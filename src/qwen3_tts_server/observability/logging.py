"""Log lines as one JSON object each (or readable text), tagged with the current request id.

Fields passed with `extra=` become top-level JSON keys, so the access log and any other logger
can add structure without string formatting. The request id lives in a context variable set by
the middleware: every record logged while a request is handled (in the event loop or in a
threadpool worker, which copies the context) carries it, with no plumbing through call sites.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

#: Attributes every LogRecord has; anything else on a record came from `extra=`. (uvicorn
#: adds `color_message`, `msg` with terminal colour codes: not wanted in a log file.)
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def bind_request_id(request_id: str) -> None:
    """Tag every record logged from now on in this context (one request's task) with the id.

    Deliberately never reset: each request runs in its own task with its own copy of the
    context, and the server-error handler that logs an unhandled exception runs after the
    middleware has returned, yet must still carry the id.
    """
    _request_id.set(request_id)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRS and not key.startswith("_")
    }


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to records logged while a request is being handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = _request_id.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


class WebSocketLogFilter(logging.Filter):
    """uvicorn's own lines about WebSocket handshakes, made safe and true.

    uvicorn logs each handshake's path *with its query string*: a client that put its API key
    in the URL (which the realtime route refuses) would leave it in the log, so the query is
    cut off. And uvicorn (0.54, websockets-sansio) logs a handshake refused with an HTTP
    response (our 401) as the ERROR "ASGI callable returned without completing handshake",
    although the response went out: that line is kept, at INFO.
    """

    _REFUSED = "ASGI callable returned without completing handshake."

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("uvicorn"):
            return True
        if '"WebSocket %s"' in str(record.msg) and isinstance(record.args, tuple):
            record.args = tuple(
                arg.split("?", 1)[0] if isinstance(arg, str) and arg.startswith("/") else arg
                for arg in record.args
            )
        elif record.msg == self._REFUSED and record.levelno == logging.ERROR:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = "a WebSocket handshake was refused with an HTTP response"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then every `extra` field."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    """`PLAIN_FORMAT` followed by the `extra` fields as key=value, for a human at a console."""

    def __init__(self) -> None:
        super().__init__(PLAIN_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{key}={value}" for key, value in _extras(record).items())
        line = super().formatMessage(record)
        return f"{line} {fields}" if fields else line


class _ObservabilityHandler(logging.StreamHandler):
    """Marks the handler `configure_logging` installed, so a second call replaces it."""


def configure_logging(level: str, json_logs: bool) -> None:
    """Send every log record to stderr, as JSON lines or plain text, at `level` and above.

    Idempotent: calling it again replaces the handler it installed (no duplicated lines) and
    leaves handlers installed by anything else alone. An unknown level raises ValueError before
    anything changes, so a typo in LOG_LEVEL stops the server at start-up.
    """
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"unknown log level {level!r}")
    root = logging.getLogger()
    for old in [handler for handler in root.handlers if isinstance(handler, _ObservabilityHandler)]:
        root.removeHandler(old)
        old.close()
    handler = _ObservabilityHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_logs else PlainFormatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(WebSocketLogFilter())
    root.addHandler(handler)
    root.setLevel(numeric_level)
