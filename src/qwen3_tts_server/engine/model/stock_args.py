"""What stock qwen-tts takes and how it refuses: a checked text, its language name, the
generation kwargs for our sampling settings, and its ValueErrors as InvalidInput.

Shared by the stock reference path (qwen.py) and the step loop (stepper.py), which builds its
inputs with qwen-tts's own code and must check them the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from qwen3_tts_server.engine.base import LANGUAGES, InvalidInput
from qwen3_tts_server.values import Sampling


def qwen_language(language: str) -> str:
    name = language.strip().lower()
    if name not in LANGUAGES:
        raise InvalidInput(f"unsupported language {language!r}; valid: {', '.join(LANGUAGES)}")
    return "Auto" if name == "auto" else name


def checked_text(text: str) -> str:
    if not text.strip():
        raise InvalidInput("text must not be blank")
    return text


def generate_kwargs(sampling: Sampling, max_new_tokens: int) -> dict[str, Any]:
    """qwen-tts kwargs; sampling applies to the talker and the sub-talker alike.

    temperature <= 0 means greedy decoding (HF rejects a zero temperature).
    """
    greedy = sampling.temperature <= 0
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": not greedy,
        "subtalker_dosample": not greedy,
        "repetition_penalty": sampling.repetition_penalty,
    }
    if not greedy:
        for prefix in ("", "subtalker_"):
            kwargs[f"{prefix}temperature"] = sampling.temperature
            kwargs[f"{prefix}top_k"] = sampling.top_k
            kwargs[f"{prefix}top_p"] = sampling.top_p
    return kwargs


@contextlib.contextmanager
def as_invalid_input() -> Iterator[None]:
    """qwen-tts reports bad inputs as ValueError (or NotImplementedError deep in generate)."""
    try:
        yield
    except (ValueError, NotImplementedError) as exc:
        lines = str(exc).strip().splitlines()
        raise InvalidInput(lines[-1] if lines else type(exc).__name__) from exc
