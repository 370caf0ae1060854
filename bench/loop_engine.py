"""The step loop behind the old `Engine` interface, for bench/api.py only.

Why: until the server's scheduler drives the step loop (engine/serving.py), the app calls
`Engine.synthesize` per batch. This adapter answers such a call with the loop: it admits the
call's items together, steps them to the end, and decodes each slot with its ICL reference tail
as left context (engine/codec.py, one call per slot), so /tts over HTTP can be timed with the
loop's kernels. Frames per call follow the stock engine's bound for the same texts.
"""

from __future__ import annotations

from collections.abc import Sequence

from qwen3_tts_server.engine.base import CustomItem, EngineInfo, SynthItem
from qwen3_tts_server.engine.bounds import max_new_tokens_for_batch
from qwen3_tts_server.engine.codec import WHOLE, StreamDecoder
from qwen3_tts_server.engine.qwen import QwenEngine
from qwen3_tts_server.engine.stepper import StepEngine
from qwen3_tts_server.values import Audio, Sampling


class LoopEngine:
    """`Engine.synthesize` over a StepEngine; everything else is the stock engine's."""

    def __init__(self, stock: QwenEngine, quant: str = "none") -> None:
        self._stock = stock
        self._steps = StepEngine(stock, quant=quant)

    def info(self) -> EngineInfo:
        return self._stock.info()

    def create_prompt(self, audio: Audio, transcript: str | None) -> bytes:
        return self._stock.create_prompt(audio, transcript)

    def synthesize(self, items: Sequence[SynthItem], sampling: Sampling) -> list[Audio]:
        # stock's last token completes no frame: its bound of N tokens is N - 1 frames
        bound = max_new_tokens_for_batch(
            [i.text for i in items], cap=self._stock.max_new_tokens_cap
        )
        slots = [self._steps.admit(item, sampling, max(1, bound - 1)) for item in items]
        while not all(slot.done for slot in slots):
            self._steps.step(slots)
        clips = []
        for slot in slots:
            codec = slot.lane.codec
            samples = StreamDecoder(codec, WHOLE, slot.context).decode(slot.frames)
            self._steps.release(slot)
            clips.append(Audio(samples, codec.sample_rate))
        return clips

    def synthesize_custom(self, items: Sequence[CustomItem], sampling: Sampling) -> list[Audio]:
        return self._stock.synthesize_custom(items, sampling)

    def design(self, text: str, description: str, language: str, sampling: Sampling) -> Audio:
        return self._stock.design(text, description, language, sampling)

    def warm_up(self) -> None:
        self._steps.warm_up()
