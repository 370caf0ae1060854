"""The composition root: the one place that builds the services, for the app and the CLI alike.

Settings in, an `AppContext` out: secrets resolved, the database migrated, every service wired
to the same database, blob store, model runtime and generation ledger. Nothing loads the model
here; the app's lifespan starts it (`context.system.start()`), the CLI never does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from qwen3_tts_server.config import Settings, resolve_secrets
from qwen3_tts_server.context import AppContext
from qwen3_tts_server.db.session import make_engine, make_session_factory, upgrade
from qwen3_tts_server.engine.base import Engine, ModelUnavailable
from qwen3_tts_server.engine.serving.loop import LoopConfig
from qwen3_tts_server.engine.serving.scheduler import Scheduler
from qwen3_tts_server.observability.metrics import Metrics
from qwen3_tts_server.services.accounts import AccountService
from qwen3_tts_server.services.billing import DiscountPolicy
from qwen3_tts_server.services.deferred import DeferredSettlements
from qwen3_tts_server.services.generations import GenerationLedger
from qwen3_tts_server.services.leases import Lease, new_instance_id
from qwen3_tts_server.services.media import MediaLibrary
from qwen3_tts_server.services.quota import Limits, Quotas
from qwen3_tts_server.services.realtime import RealtimeService
from qwen3_tts_server.services.runtime import ModelRuntime
from qwen3_tts_server.services.speakers import SpeakerService
from qwen3_tts_server.services.speech import SpeechChecks
from qwen3_tts_server.services.streaming import StreamingService
from qwen3_tts_server.services.synthesis import SynthesisService
from qwen3_tts_server.services.system import SystemService
from qwen3_tts_server.services.timestamps import AlignerLoader, AlignerRuntime
from qwen3_tts_server.services.usage import UsageService
from qwen3_tts_server.services.voices import VoiceService
from qwen3_tts_server.storage.blobs import BlobStore

EngineLoader = Callable[[], Engine]


def no_engine() -> Engine:
    """The loader of a context that never serves synthesis (the CLI's admin commands)."""
    raise ModelUnavailable("this process does not load a model")


def build_context(
    settings: Settings,
    load_engine: EngineLoader = no_engine,
    metrics: Metrics | None = None,
    load_aligner: AlignerLoader | None = None,
) -> AppContext:
    """Resolve secrets, migrate the database and build the services (no model loading yet).
    Without `load_aligner` the server runs without word timestamps (their requests: 503)."""
    settings = resolve_secrets(settings)
    assert settings.admin_token is not None and settings.hmac_secret is not None
    metrics = metrics or Metrics()
    db = make_engine(settings.resolved_database_url)
    upgrade(db)
    sessions = make_session_factory(db)

    def make_scheduler(engine: Engine) -> Scheduler:
        config = LoopConfig(
            slots=settings.engine_slots(engine.info().device),
            reserve=settings.engine_reserve_slots,
            queue_max=settings.queue_max,
            user_queue_max=settings.user_queue_max,
            drain_s=settings.shutdown_drain_s,
        )
        return Scheduler(
            engine, config, job_timeout_s=settings.job_timeout_s, on_step=metrics.observe_step
        )

    runtime = ModelRuntime(load_engine, make_scheduler)
    aligner = AlignerRuntime(load_aligner)
    metrics.watch_runtime(runtime)
    media = MediaLibrary(sessions, BlobStore(settings.resolved_media_dir / "blobs"))
    policy = DiscountPolicy.from_settings(settings)
    lease = Lease(sessions, new_instance_id(), timedelta(seconds=settings.lease_s))
    deferred = DeferredSettlements()
    ledger = GenerationLedger(sessions, media, policy, lease.instance_id, deferred)
    quotas = Quotas(sessions, Limits.from_settings(settings), lease.instance_id, deferred)
    voices = VoiceService(settings, sessions, media, runtime, quotas)
    speakers = SpeakerService(runtime, voices)
    synthesis = SynthesisService(
        SpeechChecks(settings),
        sessions,
        media,
        runtime,
        ledger,
        quotas,
        policy,
        settings.chunk_max_chars,
        speakers,
        aligner,
    )
    recovery_grace = timedelta(seconds=settings.resolved_recovery_grace_s)
    return AppContext(
        settings=settings,
        admin_token=settings.admin_token.get_secret_value(),
        system=SystemService(
            db, runtime, ledger, media, quotas, lease, deferred, recovery_grace, aligner
        ),
        runtime=runtime,
        accounts=AccountService(sessions, settings.hmac_secret.get_secret_value()),
        usage=UsageService(sessions),
        voices=voices,
        speakers=speakers,
        synthesis=synthesis,
        streaming=StreamingService(runtime, synthesis, ledger),
        realtime=RealtimeService(synthesis, runtime, ledger, speakers, settings.chunk_max_chars),
        metrics=metrics,
    )
