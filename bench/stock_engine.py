"""Stock qwen-tts behind the step interface, for bench/api.py only: the server as it was.

Why: the server's scheduler drives an `Engine` step by step (engine/step/stepper.py). To time the
same HTTP path over stock qwen-tts, `prefill` runs the whole stock `generate` for each text
(`QwenEngine.stock_codes`, with stock's `max_new_tokens` = budget + 1) and `step` then hands
its frames out one per call, so the loop decodes and delivers them as it does the step
engine's. Each request is one stock call of one text: this is the old server for sequential
requests; it does not merge concurrent requests into one padded call as the old scheduler did.
"""

from __future__ import annotations

from collections.abc import Sequence

from qwen3_tts_server.engine.base import EngineInfo, Item
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.serving.guard import EOS, LENGTH
from qwen3_tts_server.engine.step.stepper import Admission, Slot, StepEngine
from qwen3_tts_server.values import Audio, Sampling


class StockEngine:
    """The `Engine` step interface answered by stock `generate`, one text per call."""

    def __init__(self, stock: QwenEngine) -> None:
        self._stock = stock
        # Only for `prepare` (its checks, as the server's) and its lanes' decoders: one row.
        self._lanes = StepEngine(stock, prepack=False, rows=1)
        self._made: dict[int, int] = {}  # frames stock made, by id() of the slot holding them

    def info(self) -> EngineInfo:
        return self._stock.info()

    @property
    def frame_cap(self) -> int:
        return self._stock.max_new_tokens_cap

    def create_prompt(self, audio: Audio, transcript: str | None) -> bytes:
        return self._stock.create_prompt(audio, transcript)

    def warm_up(self) -> None:
        self._stock.warm_up()

    @property
    def prefill_tokens(self) -> int:
        return 1  # one stock call per turn: the old server ran one call at a time

    def prepare(self, item: Item, sampling: Sampling, budget: int) -> Admission:
        return self._lanes.prepare(item, sampling, budget)

    def prefill(self, admissions: Sequence[Admission]) -> list[Slot]:
        return [self._generate(admission) for admission in admissions]

    def _generate(self, admission: Admission) -> Slot:
        budget = admission.budget
        [codes] = self._stock.stock_codes([admission.item], admission.sampling, budget + 1)
        context = admission.context
        slot = Slot(
            lane=admission.lane,
            row=-1,  # stock sampled already: the slot holds no row
            seed=0,
            eos=-1,
            budget=budget,
            position=0,
            codes=codes.cpu(),
            context=None if context is None else context.cpu(),
        )
        self._made[id(slot)] = codes.shape[0]
        return slot

    def step(self, slots: Sequence[Slot]) -> None:
        for slot in slots:
            if slot.done:
                continue
            slot.count += 1
            made = self._made[id(slot)]
            if slot.count >= made:
                slot.finish = EOS if made < slot.budget else LENGTH

    def release(self, slot: Slot) -> None:
        self._made.pop(id(slot), None)
