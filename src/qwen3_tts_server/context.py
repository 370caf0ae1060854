"""Everything a request handler may use, built once at start-up and handed to routes.

One explicit object instead of module globals: tests build as many apps as they like, each with
its own database, media folder and engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine as DbEngine
from sqlalchemy.orm import Session, sessionmaker

from qwen3_tts_server.config import Settings
from qwen3_tts_server.observability.metrics import Metrics
from qwen3_tts_server.services.accounts import AccountService
from qwen3_tts_server.services.media import MediaLibrary
from qwen3_tts_server.services.runtime import ModelRuntime
from qwen3_tts_server.services.streaming import StreamingService
from qwen3_tts_server.services.synthesis import SynthesisService
from qwen3_tts_server.services.voices import VoiceService


@dataclass
class AppContext:
    settings: Settings
    admin_token: str
    db: DbEngine
    sessions: sessionmaker[Session]
    accounts: AccountService
    runtime: ModelRuntime
    media: MediaLibrary
    voices: VoiceService
    synthesis: SynthesisService
    streaming: StreamingService
    metrics: Metrics
