"""Token choice for every row of a step in one batched operation, in Hugging Face's order.

Stock qwen-tts samples through `GenerationMixin.generate`: repetition penalty, min-new-tokens
(EOS blocked for the first `MIN_NEW_TOKENS` talker tokens), suppressed tokens, then temperature,
top-k and top-p (the last three only when sampling), and a draw from the softmax. Here each of
these is one tensor operation over all rows, with per-row parameters, so the step has no
per-slot Python and no host read: greedy rows take the argmax (lowest index on ties, like
`torch.argmax`), sampled rows the argmax of the scores plus Gumbel noise from `noise.py` (the
same distribution as a softmax draw, and a pure function of the row's seed and counter).

The rules match HF's processors value for value (the repetition penalty's
`where(s < 0, s * p, s / p)`, top-k keeping ties with the k-th value, top-p removing the tokens
whose ascending cumulative probability stays at or below 1 - top_p, always keeping the best);
tests/unit/test_step_sampling.py holds them against HF's classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qwen3_tts_server.engine.step.noise import gumbel

#: The talker may not stop before this many tokens (stock qwen-tts passes min_new_tokens=2).
MIN_NEW_TOKENS = 2
#: `top_p_cut` of a row without top-p: no cumulative probability is at or below it.
NO_TOP_P = -1.0


@dataclass(frozen=True)
class RowParams:
    """Per-row sampling parameters of the rows in a step (views of the slot table)."""

    temperature: torch.Tensor  # float32 (B,): 1.0 for greedy rows
    sampled: torch.Tensor  # float32 (B,): 1.0 sampled, 0.0 greedy (scales the noise)
    top_k: torch.Tensor  # int64 (B,): >= 1; the talker's vocab (or more) = no top-k
    top_p_cut: torch.Tensor  # float32 (B,): 1 - top_p, or NO_TOP_P
    seeds: torch.Tensor  # int64 (B,)


def talker_rules(
    logits: torch.Tensor,
    *,
    seen: torch.Tensor,
    penalty: torch.Tensor,
    generated: torch.Tensor,
    eos: torch.Tensor,
    suppress: torch.Tensor,
) -> torch.Tensor:
    """The talker's processors before sampling: repetition penalty over `seen` (B, V) bool,
    EOS blocked for rows with fewer than MIN_NEW_TOKENS `generated` tokens, `suppress` (B, V)."""
    p = penalty.unsqueeze(1)
    logits = torch.where(seen, torch.where(logits < 0, logits * p, logits / p), logits)
    ids = torch.arange(logits.shape[1], device=logits.device)
    early = (ids == eos.unsqueeze(1)) & (generated < MIN_NEW_TOKENS).unsqueeze(1)
    return logits.masked_fill(early | suppress, float("-inf"))


def warp(scores: torch.Tensor, params: RowParams) -> torch.Tensor:
    """HF's sampling warpers for every row: temperature, then top-k (ties with the k-th value
    kept), then top-p; removed tokens score -inf. Greedy rows pass unchanged."""
    vocab = scores.shape[1]
    scores = scores / params.temperature.unsqueeze(1)
    ascending, order = torch.sort(scores, dim=-1)
    kth = ascending.gather(1, (vocab - params.top_k.clamp(max=vocab)).unsqueeze(1))
    scores = scores.masked_fill(scores < kth, float("-inf"))
    ascending = ascending.masked_fill(ascending < kth, float("-inf"))
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= params.top_p_cut.unsqueeze(1)
    drop[:, -1] = False
    return scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))


def choose(
    scores: torch.Tensor, params: RowParams, frames: torch.Tensor, group: int
) -> torch.Tensor:
    """int64 (B,) tokens from float32 scores (B, V): the warpers, then the argmax of the scores
    plus, for sampled rows, Gumbel noise keyed by (seed, frame, group)."""
    scores = warp(scores, params)
    noise = gumbel(params.seeds, frames, group, scores.shape[1]) * params.sampled.unsqueeze(1)
    return torch.argmax(scores + noise, dim=-1)
