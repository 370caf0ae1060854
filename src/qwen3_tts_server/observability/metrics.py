"""Prometheus metrics of one app: HTTP traffic, engine steps, usage, and the model's state.

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

from qwen3_tts_server.engine.serving.loop import LoopStats
from qwen3_tts_server.errors import ServiceUnavailable
from qwen3_tts_server.services.playback import StreamQuality
from qwen3_tts_server.services.runtime import ModelRuntime

#: What a token charge was for; one value per charging route.
TokenKind = Literal["tts", "batchtts", "clonevoice", "designvoice", "realtime"]

#: `qwen3_tts_model_state` values, by `ModelRuntime.status`.
MODEL_STATE = {"loading": 0.0, "ready": 1.0, "failed": -1.0}

#: HTTP methods counted under their own name; any other (clients may send anything) is "OTHER".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: Request latency: milliseconds for reads, up to minutes for long syntheses on a CPU.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

#: Slots per engine step; ENGINE_MAX_BATCH + ENGINE_RESERVE_SLOTS bounds it (10 by default).
STEP_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 10, 12, 16, 24, 32, 64)

#: Seconds per engine step (one 80 ms frame for every active slot, decoding included).
STEP_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
#: Seconds: a stream's first audio, its longest underrun, its safe play start.
PLAYBACK_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)

#: How a chunk (one sentence-sized text in a slot) can end; see engine/serving/guard.py.
FINISH_REASONS = ("eos", "length", "silence", "cancelled")


class _RuntimeCollector:
    """Reads the model's state and the scheduler's queue and counters at scrape time.

    The scheduler's own cumulative counters (`Scheduler.stats`) need no wiring, so step, frame,
    job and finish-reason totals are right from the first call.
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
            depth, active, stats = scheduler.queue_depth, scheduler.active, scheduler.stats
            slot_limit = scheduler.loop.shedder.limit()
        except ServiceUnavailable:  # no warm model: nothing queued, nothing run
            depth, active, stats, slot_limit = 0, 0, LoopStats(), 0
        yield GaugeMetricFamily(
            "qwen3_tts_queue_depth", "Chunks (sentence-sized texts) waiting for a slot.", depth
        )
        yield GaugeMetricFamily(
            "qwen3_tts_engine_active_slots", "Chunks being generated now.", active
        )
        yield CounterMetricFamily(
            "qwen3_tts_engine_steps", "Engine steps run (one frame for every active slot).",
            value=stats.steps,
        )  # fmt: skip
        yield CounterMetricFamily(
            "qwen3_tts_engine_frames", "Codec frames generated (80 ms of audio each).", stats.frames
        )
        chunks = CounterMetricFamily(
            "qwen3_tts_engine_chunks",
            "Chunks that left a slot, by finish reason (eos: the model stopped; silence: "
            "stopped early, speech had ended; length: frame budget used up; cancelled).",
            labels=["finish_reason"],
        )
        for reason in FINISH_REASONS:
            chunks.add_metric([reason], stats.finish_reasons[reason])
        yield chunks
        phases = CounterMetricFamily(
            "qwen3_tts_engine_seconds",
            "Seconds the inference thread spent, by phase (admit: prompts and prefill; step: "
            "the engine step; decode: audio, runaway guard and hand-over).",
            labels=["phase"],
        )
        for phase in ("admit", "step", "decode"):
            phases.add_metric([phase], stats.seconds[phase])
        yield phases
        yield CounterMetricFamily(
            "qwen3_tts_engine_chunk_retries",
            "Chunks retried with a new seed after using their whole frame budget.",
            stats.chunks_retried,
        )
        yield CounterMetricFamily(
            "qwen3_tts_engine_runaways",
            "Jobs failed (uncharged) because a chunk used its frame budget twice.",
            stats.runaways,
        )
        yield CounterMetricFamily(
            "qwen3_tts_engine_out_of_memory",
            "Steps that ran out of memory (the loop then sheds slots for a while).",
            stats.out_of_memory,
        )
        yield GaugeMetricFamily(
            "qwen3_tts_engine_slot_limit",
            "Slots the loop may keep active now (fewer for a while after out of memory).",
            value=slot_limit,
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
    scheduler calls `observe_step` (its `on_step` hook) from its inference thread.
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
        self._step_size = Histogram(
            "qwen3_tts_engine_step_size",
            "Active slots per engine step.",
            buckets=STEP_SIZE_BUCKETS,
            registry=self.registry,
        )
        self._step_seconds = Histogram(
            "qwen3_tts_engine_step_duration_seconds",
            "Duration of one engine step, with the audio decoded after it.",
            buckets=STEP_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self._tokens = Counter(
            "qwen3_tts_tokens_charged",
            "Tokens charged to users, by what they paid for.",
            ["kind"],
            registry=self.registry,
        )
        self._stream_first_audio = Histogram(
            "qwen3_tts_stream_first_audio_seconds",
            "Streams: from submission until the first audio was handed to the connection.",
            buckets=PLAYBACK_BUCKETS,
            registry=self.registry,
        )
        self._stream_underrun = Histogram(
            "qwen3_tts_stream_underrun_seconds",
            "Streams: the longest a player starting at the first audio would run dry (0: never).",
            buckets=(0.0, *PLAYBACK_BUCKETS),
            registry=self.registry,
        )
        self._stream_safe_start = Histogram(
            "qwen3_tts_stream_safe_start_seconds",
            "Streams: the earliest play start (from submission) with no underrun at all.",
            buckets=PLAYBACK_BUCKETS,
            registry=self.registry,
        )
        self._audio_seconds = Counter(
            "qwen3_tts_audio_seconds_generated",
            "Seconds of speech delivered by /tts and /batchtts.",
            registry=self.registry,
        )

    def observe_stream(self, quality: StreamQuality | None) -> None:
        """One stream ended: how it played (services/playback.py); None if it sent nothing."""
        if quality is None:
            return
        self._stream_first_audio.observe(quality.first_audio_ms / 1000)
        self._stream_underrun.observe(quality.largest_underrun_ms / 1000)
        self._stream_safe_start.observe(quality.safe_start_ms / 1000)

    def watch_runtime(self, runtime: ModelRuntime) -> None:
        """Report the model state and identity, queue depth and engine totals on every scrape."""
        self.registry.register(_RuntimeCollector(runtime))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request; `route` must be a template, never the raw path."""
        method = method if method in KNOWN_METHODS else "OTHER"
        self._requests.labels(method, route, str(status)).inc()
        self._latency.labels(method, route).observe(seconds)

    def observe_step(self, slots: int, seconds: float) -> None:
        """The scheduler's `on_step` hook: one step over `slots` slots took `seconds`."""
        self._step_size.observe(slots)
        self._step_seconds.observe(seconds)

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
