"""Per-slot token choice: Hugging Face's own logits processors, in HF's order, and a generator.

Why HF's classes: stock qwen-tts samples through `GenerationMixin.generate`, which builds
repetition penalty, min-new-tokens, suppressed tokens, then temperature, top-k and top-p (the
last three only when sampling) and draws with `torch.multinomial` on the softmax. Using the same
classes in the same order on the same float32 logits gives the same choices.

Why a generator per slot: slots of different requests share a step, so a seeded request must
not draw from a stream other slots also draw from. A slot's generator is seeded with the
request's seed (the draws then equal stock's after `torch.manual_seed(seed)`, which seeds the
same kind of generator) or, unseeded, with a fresh random seed, which is also what a retry
changes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from qwen3_tts_server.values import Sampling

#: The talker may not stop before this many tokens (stock qwen-tts passes min_new_tokens=2).
MIN_NEW_TOKENS = 2


def random_seed() -> int:
    return secrets.randbits(63)


@dataclass(frozen=True)
class TalkerRules:
    """What the model fixes about the talker's vocabulary (from qwen-tts's generate kwargs)."""

    eos: int
    suppress: tuple[int, ...]


def _processors(
    sampling: Sampling, *, repetition: bool, rules: TalkerRules | None
) -> LogitsProcessorList:
    """HF's list for these settings, in the order `GenerationMixin._get_logits_processor` uses."""
    out = LogitsProcessorList()
    if repetition and sampling.repetition_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(penalty=sampling.repetition_penalty))
    if rules is not None:
        eos = torch.tensor([rules.eos])
        out.append(MinNewTokensLengthLogitsProcessor(0, MIN_NEW_TOKENS, eos, device="cpu"))
        out.append(SuppressTokensLogitsProcessor(list(rules.suppress), device="cpu"))
    if sampling.temperature > 0:  # temperature <= 0 means greedy (see engine.qwen)
        if sampling.temperature != 1.0:
            out.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_k:
            out.append(TopKLogitsWarper(top_k=sampling.top_k, min_tokens_to_keep=1))
        if sampling.top_p < 1.0:
            out.append(TopPLogitsWarper(top_p=sampling.top_p, min_tokens_to_keep=1))
    return out


def _apply(
    processors: LogitsProcessorList, ids: torch.Tensor, logits: torch.Tensor
) -> torch.Tensor:
    return processors(cast(torch.LongTensor, ids), cast(torch.FloatTensor, logits))


class SlotSampler:
    """A slot's talker and code-predictor choices, its token history and its random stream."""

    def __init__(
        self,
        sampling: Sampling,
        rules: TalkerRules,
        capacity: int,
        seed: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.greedy = sampling.temperature <= 0
        self.seed = seed if seed is not None else random_seed()
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(self.seed)
        self._talker = _processors(sampling, repetition=True, rules=rules)
        self._predictor = _processors(sampling, repetition=False, rules=None)
        # Talker tokens so far (HF's input_ids: generated tokens only, the prompt is embeddings).
        self._history = torch.zeros(1, capacity + 1, dtype=torch.long, device=device)
        self._count = 0

    def talker(self, logits: torch.Tensor) -> int:
        """Choose the next talker token from float32 logits (1, V) and remember it."""
        scores = _apply(self._talker, self._history[:, : self._count], logits)
        token = self._pick(scores)
        self._history[0, self._count] = token
        self._count += 1
        return token

    def predictor(self, logits: torch.Tensor, done: torch.Tensor) -> int:
        """Choose one code-predictor code from float32 logits (1, V); `done`: this frame's codes
        so far (1, n), which HF hands its processors (none of them reads it)."""
        return self._pick(_apply(self._predictor, done, logits))

    def _pick(self, scores: torch.Tensor) -> int:
        if self.greedy:
            return int(torch.argmax(scores, dim=-1)[0])
        probs = F.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, num_samples=1, generator=self.generator)[0, 0])
