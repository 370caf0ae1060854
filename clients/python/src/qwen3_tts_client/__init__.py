"""Python client for Qwen3-TTS Server: `Client` (blocking) and `AsyncClient` (asyncio).

from qwen3_tts_client import Client

with Client("http://localhost:8000", api_key="...") as client:
    voice = client.design_voice("narrator", "Warm, calm narrator voice.")
    client.tts("Hello!", voice=voice).save("hello.wav")
"""

from qwen3_tts_client.async_client import AsyncClient
from qwen3_tts_client.calls import SpeechOptions
from qwen3_tts_client.client import Client
from qwen3_tts_client.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NetworkError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QuotaExceededError,
    Qwen3TTSError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    StreamInterrupted,
    UnexpectedResponse,
    UnprocessableEntityError,
)
from qwen3_tts_client.models import (
    Batch,
    BatchItem,
    Speaker,
    Speech,
    StoredAudio,
    StreamInfo,
    Usage,
    Voice,
    VoiceCreated,
    VoiceDetail,
    VoiceSample,
)
from qwen3_tts_client.realtime import RealtimeAudio, RealtimeEvent, RealtimeSession
from qwen3_tts_client.streams import AsyncAudioStream, AudioStream

__all__ = [
    "ApiError",
    "AsyncAudioStream",
    "AsyncClient",
    "AudioStream",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BatchItem",
    "Client",
    "ConflictError",
    "NetworkError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "Qwen3TTSError",
    "RateLimitError",
    "RealtimeAudio",
    "RealtimeEvent",
    "RealtimeSession",
    "ServerError",
    "ServiceUnavailableError",
    "Speaker",
    "Speech",
    "SpeechOptions",
    "StoredAudio",
    "StreamInfo",
    "StreamInterrupted",
    "UnexpectedResponse",
    "UnprocessableEntityError",
    "Usage",
    "Voice",
    "VoiceCreated",
    "VoiceDetail",
    "VoiceSample",
]
