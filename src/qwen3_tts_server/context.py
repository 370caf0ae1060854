"""Everything a request handler may use, built once at start-up and handed to routes.

One explicit object instead of module globals: tests build as many apps as they like, each with
its own database, media folder and engine. It holds services only (plus settings and the
metrics recorder): no database session or engine, no ORM row, no model reaches a route.
"""

from __future__ import annotations

from dataclasses import dataclass

from qwen3_tts_server.config import Settings
from qwen3_tts_server.observability.metrics import Metrics
from qwen3_tts_server.services.accounts import AccountService
from qwen3_tts_server.services.realtime import RealtimeService
from qwen3_tts_server.services.runtime import ModelRuntime
from qwen3_tts_server.services.speakers import SpeakerService
from qwen3_tts_server.services.streaming import StreamingService
from qwen3_tts_server.services.synthesis import SynthesisService
from qwen3_tts_server.services.system import SystemService
from qwen3_tts_server.services.usage import UsageService
from qwen3_tts_server.services.voices import VoiceService


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    admin_token: str
    system: SystemService
    runtime: ModelRuntime
    accounts: AccountService
    usage: UsageService
    voices: VoiceService
    speakers: SpeakerService
    synthesis: SynthesisService
    streaming: StreamingService
    realtime: RealtimeService
    metrics: Metrics
