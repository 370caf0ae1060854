"""Token choice for every row of a step in one batched operation, in Hugging Face's order.

Stock qwen-tts samples through `GenerationMixin.generate`: repetition penalty, min-new-tokens
(EOS blocked for the first `MIN_NEW_TOKENS` talker tokens), suppressed tokens, then temperature,
top-k and top-p (the last three only when sampling), and a draw from the softmax. Here each of
these is one tensor operation over all rows, with per-row parameters, so the step has no
per-slot Python and no host read: greedy rows take the argmax (lowest index on ties, like
`torch.argmax`), sampled rows the argmax of the scores plus Gumbel noise from `noise.py` (the
same distribution as a softmax draw, and a pure function of the row's seed and counter).

Top-k reads its threshold from a full sort of the scores, or, when the host knows that every row
of the step keeps at most TOP_K_WINDOW tokens and none uses top-p (the server's defaults: top-k
50, top-p 1), from the TOP_K_WINDOW best scores alone (`torch.topk`): the same threshold, ties
included. Why: on CPU a batched sort costs 0.8 ms per sampling point at 8 rows (16 points a
frame), the window 0.04 ms. CUDA graphs always take the full sort (cheap there, and a captured
graph cannot change paths).

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
#: The most tokens a row may keep by top-k for a step to use the top-k window (see above).
TOP_K_WINDOW = 64


@dataclass(frozen=True)
class RowParams:
    """Per-row sampling parameters of the rows in a step (views of the slot table)."""

    temperature: torch.Tensor  # float32 (B,): 1.0 for greedy rows
    sampled: torch.Tensor  # float32 (B,): 1.0 sampled, 0.0 greedy (scales the noise)
    top_k: torch.Tensor  # int64 (B,): >= 1; the talker's vocab (or more) = no top-k
    top_p_cut: torch.Tensor  # float32 (B,): 1 - top_p, or NO_TOP_P
    keys: torch.Tensor  # int64 (B,): each row's noise key (noise.row_key of its seed)


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


def warp(scores: torch.Tensor, params: RowParams, *, window: bool = False) -> torch.Tensor:
    """HF's sampling warpers for every row: temperature, then top-k (ties with the k-th value
    kept), then top-p; removed tokens score -inf. Greedy rows pass unchanged (their top-k is 1:
    the best score and its ties). `window`: no row keeps more than TOP_K_WINDOW tokens by top-k
    and none uses top-p, so the threshold comes from the best TOP_K_WINDOW scores."""
    vocab = scores.shape[1]
    scores = scores / params.temperature.unsqueeze(1)
    if window:
        size = min(TOP_K_WINDOW, vocab)
        best = torch.topk(scores, size, dim=-1).values  # descending
        kth = best.gather(1, (params.top_k.clamp(max=size) - 1).unsqueeze(1))
        return scores.masked_fill(scores < kth, float("-inf"))
    ascending, order = torch.sort(scores, dim=-1)
    kth = ascending.gather(1, (vocab - params.top_k.clamp(max=vocab)).unsqueeze(1))
    scores = scores.masked_fill(scores < kth, float("-inf"))
    ascending = ascending.masked_fill(ascending < kth, float("-inf"))
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= params.top_p_cut.unsqueeze(1)
    drop[:, -1] = False
    return scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))


def choose(
    scores: torch.Tensor,
    params: RowParams,
    frames: torch.Tensor,
    group: int,
    *,
    window: bool = False,
) -> torch.Tensor:
    """int64 (B,) tokens from float32 scores (B, V): the warpers, then the argmax of the scores
    plus, for sampled rows, Gumbel noise keyed by (seed, frame, group)."""
    scores = warp(scores, params, window=window)
    noise = gumbel(params.keys, frames, group, scores.shape[1]) * params.sampled.unsqueeze(1)
    return torch.argmax(scores + noise, dim=-1)
