"""Stock qwen-tts behind the step interface, for bench/api.py only: the server as it was.

Why: the server's scheduler drives an `Engine` step by step (engine/stepper.py). To time the
same HTTP path over stock qwen-tts, `admit` runs the whole stock `generate` for the one text
(`QwenEngine.stock_codes`, with stock's `max_new_tokens` = budget + 1) and `step` then hands
its frames out one per call, so the loop decodes and delivers them as it does the step
engine's. Each request is one stock call of one text: this is the old server for sequential
requests; it does not merge concurrent requests into one padded call as the old scheduler did.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from qwen3_tts_server.engine.base import EngineInfo, Item
from qwen3_tts_server.engine.guard import EOS, LENGTH
from qwen3_tts_server.engine.qwen import QwenEngine
from qwen3_tts_server.engine.stepper import Slot, StepEngine
from qwen3_tts_server.values import Audio, Sampling


class StockEngine:
    """The `Engine` step interface answered by stock `generate`, one text per call."""

    def __init__(self, stock: QwenEngine) -> None:
        self._stock = stock
        self._lanes = StepEngine(stock, prepack=False)  # only for its decoders and lanes

    def info(self) -> EngineInfo:
        return self._stock.info()

    @property
    def frame_cap(self) -> int:
        return self._stock.max_new_tokens_cap

    def create_prompt(self, audio: Audio, transcript: str | None) -> bytes:
        return self._stock.create_prompt(audio, transcript)

    def warm_up(self) -> None:
        self._stock.warm_up()

    def admit(self, item: Item, sampling: Sampling, budget: int) -> Slot:
        call = self._stock.prepare([item])
        [codes] = self._stock.stock_codes([item], sampling, budget + 1)
        lane = self._lanes._lanes[call.role]
        empty = torch.zeros(1, 1)
        slot = Slot(
            lane=lane,
            sampler=None,  # type: ignore[arg-type]  # stock sampled already
            kv=[],
            length=0,
            rope_delta=0,
            trailing=empty,
            pad=empty,
            eos=-1,
            hidden=empty,
            token=0,
            budget=budget,
            codes=codes,
            context=call.ref_codes[0],
        )
        slot.extra["made"] = codes.shape[0]
        return slot

    def step(self, slots: Sequence[Slot]) -> None:
        for slot in slots:
            if slot.done:
                continue
            slot.count += 1
            made = slot.extra["made"]
            if slot.count >= made:
                slot.finish = EOS if made < slot.budget else LENGTH

    def release(self, slot: Slot) -> None:
        slot.kv = []
