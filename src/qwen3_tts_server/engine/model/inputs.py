"""The talker's prompt for one request, built by qwen-tts's own input code.

Why not rebuild it: qwen-tts assembles the talker input in `Qwen3TTSForConditionalGeneration.
generate` (chat template, role tokens, language/dialect ids, speaker embedding or preset speaker,
ICL reference codes with their text, instruct text, streaming-text layout) and hands the result
to `talker.generate`. That code is the model's contract; a copy would drift from it. So the
public `generate_*` method runs as stock does, with `talker.generate` replaced on this one
instance, for the duration of the call, by a function that records its arguments and stops the
call before any decoding. Not thread-safe, like the model itself: the engine's thread owns it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TalkerPrompt:
    """What `talker.generate` receives for one unpadded request (batch of 1).

    embeds (1, L, H): the prompt; trailing (1, T, H): text embeddings fed one per step after the
    prompt; pad (1, 1, H): what is fed once the text is used up; eos / suppress: the talker's stop
    token and the codec ids it may never emit.
    """

    embeds: torch.Tensor
    trailing: torch.Tensor
    pad: torch.Tensor
    eos: int
    suppress: tuple[int, ...]


class _Captured(Exception):  # control flow, never escapes this module
    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__("talker inputs captured")
        self.kwargs = kwargs


def _capture(**kwargs: Any) -> None:
    raise _Captured(kwargs)


def capture_prompt(model: Any, call: Callable[[Any], object]) -> TalkerPrompt:
    """Run `call(model)` (a stock `generate_*` call for ONE text) and return the talker prompt
    it built. Errors qwen-tts raises for bad input (ValueError, NotImplementedError) pass through.
    """
    talker = model.model.talker
    talker.generate = _capture  # instance attribute: shadows the class method for this call
    try:
        call(model)
    except _Captured as captured:
        kwargs = captured.kwargs
    else:  # pragma: no cover - qwen-tts always calls talker.generate
        raise RuntimeError("qwen-tts did not reach talker.generate")
    finally:
        del talker.generate
    embeds = kwargs["inputs_embeds"]
    if embeds.shape[0] != 1 or not bool(kwargs["attention_mask"].all()):
        raise RuntimeError("expected one unpadded prompt")
    return TalkerPrompt(
        embeds=embeds,
        trailing=kwargs["trailing_text_hidden"],
        pad=kwargs["tts_pad_embed"],
        eos=int(kwargs["eos_token_id"]),
        suppress=tuple(int(token) for token in kwargs["suppress_tokens"]),
    )
