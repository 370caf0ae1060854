"""The code predictor's pass g of one frame for every row: the logits of code group g + 1.

Why a function of its own: per 80 ms frame the code predictor runs 15 passes of 5 layers (73 %
of the frame's weights). Pass g has fixed shapes for a number of rows (2 tokens at positions
0..1 for g = 0, then 1 token at position g + 1), so the step body (step/body.py) runs the 15
passes inline and the whole step, passes and sampling included, is captured as one CUDA graph
per bucket (step/graphs.py). The ops are stock's (the same layers, norms and heads).
"""

from __future__ import annotations

from typing import Any

import torch

KV = tuple[torch.Tensor, torch.Tensor]


def predictor_logits(lane: Any, g: int, x: torch.Tensor, caches: list[KV]) -> torch.Tensor:
    """float32 logits (B, vocab) of code group g + 1 for every row.

    x is (B, 2, H) = (the talker's last hidden state, the embedding of its token) for g = 0, and
    (B, 1) = the codes chosen in pass g - 1 for g > 0. Writes K/V at positions [start, end).
    """
    predictor = lane.predictor
    if g == 0:
        h = predictor.small_to_mtp_projection(x)
    else:
        embeddings = predictor.model.get_input_embeddings()
        h = predictor.small_to_mtp_projection(embeddings[g - 1](x))
    start = 0 if g == 0 else g + 1
    end = start + h.shape[1]
    cos, sin = lane.predictor_rope
    for layer, cache in zip(lane.predictor_layers, caches, strict=True):
        h = layer.step_shared(h, cos[:, :, start:end], sin[:, :, start:end], cache, start)
    h = predictor.model.norm(h)
    logits: torch.Tensor = lane.heads[g](h)[:, -1, :].to(copy=True, dtype=torch.float32)
    return logits
