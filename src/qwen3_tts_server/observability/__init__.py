"""Metrics, structured logs and request ids for one app.

`configure_logging` is process-wide (the CLI calls it once); `Metrics` and the
`RequestObservability` middleware are per app, so tests can run several apps side by side, each
with its own metrics. The composition root builds the `Metrics` and points it at the model
runtime; the app adds the middleware; GET /metrics is a route in api/health.py.
"""

from __future__ import annotations

from qwen3_tts_server.observability.logging import configure_logging
from qwen3_tts_server.observability.metrics import Metrics, TokenKind
from qwen3_tts_server.observability.middleware import RequestObservability

__all__ = ["Metrics", "RequestObservability", "TokenKind", "configure_logging"]
