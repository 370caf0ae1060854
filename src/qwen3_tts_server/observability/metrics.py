"""Prometheus metrics of one app: HTTP traffic, engine batches, usage, and the model's state.

Each `Metrics` owns its own `CollectorRegistry` rather than using the process-wide default one:
tests build many apps in one process, and the default registry refuses a second metric of the
same name. What can be read when Prometheus scrapes (model state, queue depth) is read then,
from the runtime, so it can never go stale; what only exists as events (requests, batches,
tokens, audio) is counted as it happens.

Every label takes values from a small fixed set (route templates, known methods, status codes,
operation and token kinds): a label fed from client input would let anyone grow the series
count without bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from qwen3_tts_server.engine.scheduler import SchedulerStats
from qwen3_tts_server.errors import ServiceUnavailable
from qwen3_tts_server.services.runtime import ModelRuntime

#: What a token charge was for; one value per charging route.
TokenKind = Literal["tts", "batchtts", "clonevoice", "designvoice", "realtime"]

#: `qwen3_tts_model_state` values, by `ModelRuntime.status`.
MODEL_STATE = {"loading": 0.0, "ready": 1.0, "failed": -1.0}

#: HTTP methods counted under their own name; any other (clients may send anything) is "OTHER".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: Request latency: milliseconds for reads, up to minutes for long syntheses on a CPU.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

#: Items per model call; ENGINE_MAX_BATCH bounds it (8 by default).
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)

#: Seconds per model call.
BATCH_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class _RuntimeCollector:
    """Reads the model's state and the scheduler's queue and counters at scrape time.

    The scheduler's own cumulative counters (`Scheduler.stats`) need no wiring, so batch and
    job totals are right from the first call even if nothing subscribed to `on_batch`.
    """

    def __init__(self, runtime: ModelRuntime) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        runtime = self._runtime
        yield GaugeMetricFamily(
            "qwen3_tts_model_state",
            "Model load state: 0 loading, 1 ready, -1 failed to load.",
            value=MODEL_STATE[runtime.status],
        )
        info = runtime.info
        if info is not None:
            family = GaugeMetricFamily(
                "qwen3_tts_model_info",
                "The loaded model (always 1; the labels say which).",
                labels=["model", "device", "dtype"],
            )
            family.add_metric([info.base_model_id, info.device, info.dtype], 1.0)
            yield family
        try:
            scheduler = runtime.loaded().scheduler
            depth, stats = scheduler.queue_depth, scheduler.stats
        except ServiceUnavailable:  # no warm model: nothing queued, nothing run
            depth, stats = 0, SchedulerStats()
        yield GaugeMetricFamily(
            "qwen3_tts_queue_depth", "Engine jobs waiting (not counting the running batch).", depth
        )
        yield CounterMetricFamily(
            "qwen3_tts_engine_batches", "Model calls made.", value=stats.batches_run
        )
        yield CounterMetricFamily(
            "qwen3_tts_engine_items", "Items (texts, prompts) run by the model.", stats.items_run
        )
        jobs = CounterMetricFamily(
            "qwen3_tts_engine_jobs", "Engine jobs, by how they ended.", labels=["outcome"]
        )
        jobs.add_metric(["ok"], stats.jobs_run)
        jobs.add_metric(["failed"], stats.jobs_failed)
        jobs.add_metric(["cancelled"], stats.jobs_cancelled)
        jobs.add_metric(["timed_out"], stats.jobs_timed_out)
        yield jobs


class Metrics:
    """The app's metrics and the few calls that feed them (thread-safe, like prometheus_client).

    Services call `record_tokens` and `record_audio_seconds` after a successful charge; the
    scheduler calls `observe_batch` (its `on_batch` hook) from its inference thread.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "qwen3_tts_http_requests",
            "HTTP requests, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "qwen3_tts_http_request_duration_seconds",
            "Time from request start to the end of the response body.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch_size = Histogram(
            "qwen3_tts_engine_batch_size",
            "Items per model call, by operation.",
            ["op"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self._batch_seconds = Histogram(
            "qwen3_tts_engine_batch_duration_seconds",
            "Duration of one model call, by operation.",
            ["op"],
            buckets=BATCH_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self._tokens = Counter(
            "qwen3_tts_tokens_charged",
            "Tokens charged to users, by what they paid for.",
            ["kind"],
            registry=self.registry,
        )
        self._audio_seconds = Counter(
            "qwen3_tts_audio_seconds_generated",
            "Seconds of speech delivered by /tts and /batchtts.",
            registry=self.registry,
        )

    def watch_runtime(self, runtime: ModelRuntime) -> None:
        """Report the model state and identity, queue depth and engine totals on every scrape."""
        self.registry.register(_RuntimeCollector(runtime))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request; `route` must be a template, never the raw path."""
        method = method if method in KNOWN_METHODS else "OTHER"
        self._requests.labels(method, route, str(status)).inc()
        self._latency.labels(method, route).observe(seconds)

    def observe_batch(self, op: str, n_items: int, seconds: float) -> None:
        """The scheduler's `on_batch` hook: one model call of `n_items` items took `seconds`."""
        self._batch_size.labels(op).observe(n_items)
        self._batch_seconds.labels(op).observe(seconds)

    def record_tokens(self, kind: TokenKind, n: int) -> None:
        """Count tokens charged (the X-Tokens-Used of a successful call)."""
        self._tokens.labels(kind).inc(n)

    def record_audio_seconds(self, seconds: float) -> None:
        """Count seconds of audio delivered to a user."""
        self._audio_seconds.inc(seconds)

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition for a scrape: (body, content type), negotiated from its Accept."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type
