"""The talker prefill of new rows: their prompts through the step's own layers, in one batch.

Why not stock's `talker.forward` (what admission ran before): it takes one prompt at a time over
unpacked weights (161 ms for a 10-token prompt at 0.6B on this CPU), builds a `DynamicCache`
that then has to be copied into the slab, and reads its rope delta on the host. Here the prompts
admitted in one turn go through one forward of the same layers the step uses: right-padded to
the longest, positions 0..L-1 for each (what stock's multimodal rope makes of an unpadded prompt:
its rope delta is 0), causal attention (a real position attends only to earlier real ones, so
padding needs no mask), K/V written straight into each row's slab. A padded row's K/V beyond its
length are hidden by the step's length mask and overwritten as the row grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from qwen3_tts_server.engine.step.table import SlotTable


def prefill_rows(
    lane: Any,
    table: SlotTable,
    rows: torch.Tensor,
    prompts: Sequence[torch.Tensor],
    lengths: torch.Tensor,
) -> torch.Tensor:
    """Run `prompts` (each (1, L_i, H)) into the table rows `rows` (B,): their K/V, lengths
    and last hidden states. `lengths` (B,) holds each L_i on the device (the host knows them
    too; both index tensors come from the caller, so this runs without host data). Returns each
    prompt's talker logits at its last position, (B, V) float32."""
    longest = max(prompt.shape[1] for prompt in prompts)
    h = torch.nn.utils.rnn.pad_sequence([prompt[0] for prompt in prompts], batch_first=True)
    cos = lane.rope_cos[:longest].view(1, 1, longest, -1)
    sin = lane.rope_sin[:longest].view(1, 1, longest, -1)
    for layer, (keys, values) in zip(lane.talker_layers, table.kv, strict=True):
        h = layer.prefill(h, cos, sin, keys, values, rows)
    batch = torch.arange(len(prompts), device=rows.device)
    final = lane.talker.model.norm(h[batch, lengths - 1])
    table.hidden[rows] = final
    table.length[rows] = lengths
    return lane.codec_head(final.unsqueeze(1))[:, -1, :].to(dtype=torch.float32)
