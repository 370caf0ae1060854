"""Language names as clients send them ("English", "auto") mapped to qwen-tts's names."""

from __future__ import annotations

from qwen3_tts_server.engine.base import LANGUAGES
from qwen3_tts_server.errors import BadRequest


def normalize_language(value: str | None) -> str:
    """Case-insensitive; blank means "auto". Anything else is a 400 listing the valid names."""
    name = (value or "").strip().lower() or "auto"
    if name not in LANGUAGES:
        valid = ", ".join(LANGUAGES)
        raise BadRequest(f"Unsupported language {value!r}; use one of: {valid} (any case)")
    return name
