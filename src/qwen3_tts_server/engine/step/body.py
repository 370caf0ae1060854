"""One step of rows [0, n) of a slot table: one frame for every row, all on the device.

The same function runs eagerly on CPU and is captured once per (rows, span) bucket as a CUDA
graph (graphs.py): it reads and writes only the table's tensors, makes no host read and no
host-built tensor, and its shapes depend on (n, span) alone. For each row:

1. the code predictor's 15 passes over [last hidden state, embedding of the row's token], each
   followed by the batched sampler (sampling.py), give codes 1..15 of the frame;
2. the frame (token + codes) goes to `out`, the sum of its 16 embeddings plus the next text
   embedding (or the pad embedding once the text is used up) is the talker's next input;
3. one talker token per row: fused projections and MLP batched, RoPE from a table gathered by
   position, K/V put into the row's slab at its length, and one attention call for all
   rows over the first `span` positions with a per-row length mask (the query heads of a K/V
   head ride in the query-length axis: GQA without repeating K/V);
4. the talker's choice through HF's rules, then `out`'s finish flag: 2 when the row's frames
   reached its budget, 1 when it chose EOS, else 0.

The op order of each pass is stock qwen-tts's (the same modules, the same sums), so at batch 1
the greedy codes equal stock's on the tiny models; README "Reproducibility" says what the
attention kernel and batching may change.
"""

from __future__ import annotations

from typing import Any

import torch

from qwen3_tts_server.engine.step.predictor import predictor_logits
from qwen3_tts_server.engine.step.sampling import choose, talker_rules
from qwen3_tts_server.engine.step.table import TEXT_CAPACITY, SlotTable

#: Out flags of a row after a step.
GOES_ON, CHOSE_EOS, BUDGET_USED = 0, 1, 2


def step_rows(lane: Any, table: SlotTable, n: int, span: int, *, window: bool = False) -> None:
    """Advance rows [0, n) by one frame, attending over K/V positions [0, span). `window`: the
    rows' top-k may take the top-k window (SlotTable.windowed, sampling.py)."""
    count = table.count[:n]
    token = table.token[:n]
    params = table.params(slice(n))
    last = lane.talker.get_input_embeddings()(token.unsqueeze(1))  # (n, 1, H)
    first = torch.cat((table.hidden[:n].unsqueeze(1), last), dim=1)
    caches = [(keys[:n], values[:n]) for keys, values in table.predictor_kv]
    codes = []
    x = first
    for g in range(lane.groups - 1):
        code = choose(predictor_logits(lane, g, x, caches), params, count, g + 1, window=window)
        codes.append(code)
        x = code.unsqueeze(1)
    chosen = torch.stack(codes, dim=1)  # (n, groups - 1)
    table.out[:n, : lane.groups] = torch.cat((token.unsqueeze(1), chosen), dim=1)

    embeddings = lane.predictor.get_input_embeddings()
    parts = [last] + [embeddings[g](chosen[:, g : g + 1]) for g in range(lane.groups - 1)]
    e = torch.cat(parts, dim=1).sum(1, keepdim=True)
    rows = torch.arange(n, device=count.device)
    text = table.text[rows, count.clamp(max=TEXT_CAPACITY - 1)].unsqueeze(1)
    in_text = (count < table.text_length[:n]).view(n, 1, 1)
    e = e + torch.where(in_text, text, table.pad[:n].unsqueeze(1))

    position = table.length[:n].clamp(max=table.context - 1)
    cos = lane.rope_cos[position].view(n, 1, 1, -1)
    sin = lane.rope_sin[position].view(n, 1, 1, -1)
    visible = torch.arange(span, device=position.device) <= position.unsqueeze(1)
    mask = visible.view(n, 1, 1, span)
    h = e
    for layer, (keys, values) in zip(lane.talker_layers, table.kv, strict=True):
        h = layer.step_rows(h, cos, sin, keys[:n], values[:n], (rows, position), mask)
    h = lane.talker.model.norm(h)
    logits = lane.codec_head(h)[:, -1, :].to(dtype=torch.float32)
    if table.logits is not None:
        table.logits[:n] = logits
    made = count + 1
    scores = _talker_scores(table, slice(n), logits, made)
    nxt = choose(scores, params, made, 0, window=window)
    flag = torch.where(
        made >= table.budget[:n], BUDGET_USED, (nxt == table.eos[:n]).to(torch.int64)
    )
    table.out[:n, lane.groups] = flag
    table.hidden[:n] = h[:, -1, :]
    table.length[:n] = position + 1
    table.count[:n] = made
    table.token[:n] = nxt
    table.seen[rows, nxt] = True


def first_token(table: SlotTable, row: int, logits: torch.Tensor) -> None:
    """Choose a new row's first talker token from its prefill logits (1, V), float32."""
    view = slice(row, row + 1)
    frames = table.count[view]
    token = choose(_talker_scores(table, view, logits, frames), table.params(view), frames, 0)
    table.token[view] = token
    table.seen[row, token] = True


def _talker_scores(
    table: SlotTable, rows: slice, logits: torch.Tensor, generated: torch.Tensor
) -> torch.Tensor:
    """HF's talker processors for `rows`, from the table's per-row masks and penalties."""
    return talker_rules(
        logits,
        seen=table.seen[rows],
        penalty=table.penalty[rows],
        generated=generated,
        eos=table.eos[rows],
        suppress=table.suppress[rows],
    )
