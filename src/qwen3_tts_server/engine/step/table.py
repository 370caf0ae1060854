"""The state of every slot of one model, on the model's device, indexed by row.

Why rows of fixed-size tensors: a step for rows [0, n) then reads and writes views of the same
storage every time (static addresses, so the whole step can be replayed from a CUDA graph), and
the host touches this state only when a slot is admitted (its row is written once) or released
(its row is marked free on the host: nothing to free on the device). Free rows below the highest
busy one are stepped too, on stale but bounded state (every index is clamped), and ignored.

K/V live in padded slabs, one (rows, kv_heads, context, head_dim) pair per talker layer, read by
attention with a per-row length mask. Not paged: at these model sizes memory is not the limit
(112 KiB per token at 0.6B and 1.7B alike), prompts share no prefixes, and a slab needs no block
table on the host. README "Sizing the GPU" has the memory formula.
"""

from __future__ import annotations

from typing import Any

import torch

from qwen3_tts_server.engine.step.noise import row_key
from qwen3_tts_server.engine.step.sampling import NO_TOP_P, TOP_K_WINDOW, RowParams
from qwen3_tts_server.values import Sampling

KV = tuple[torch.Tensor, torch.Tensor]
#: Most text tokens a slot feeds after its prompt (a chunk of CHUNK_MAX_CHARS <= 300 characters
#: is well below it in every tokenizer); longer trailing text is refused at admission.
TEXT_CAPACITY = 512


class SlotTable:
    """Per-row tensors of one lane: tokens, positions, budgets, sampling, K/V, outputs."""

    def __init__(self, lane: Any, rows: int, context: int, *, keep_logits: bool = False) -> None:
        device, dtype = lane.device, lane.dtype
        config = lane.config
        hidden = int(config.hidden_size)
        vocab = int(config.vocab_size)
        groups = lane.groups
        self.rows, self.context, self.vocab, self.groups = rows, context, vocab, groups

        def zeros(*shape: int, kind: torch.dtype = torch.int64) -> torch.Tensor:
            return torch.zeros(shape, dtype=kind, device=device)

        self.token = zeros(rows)  # the talker token whose frame the next step completes
        self.hidden = zeros(rows, hidden, kind=dtype)  # the talker's last hidden state
        self.length = zeros(rows)  # tokens in K/V = the next token's cache position
        self.count = zeros(rows)  # frames made so far
        self.budget = zeros(rows)
        self.text = zeros(rows, TEXT_CAPACITY, hidden, kind=dtype)  # trailing text embeddings
        self.text_length = zeros(rows)
        self.pad = zeros(rows, hidden, kind=dtype)  # fed once the text is used up
        self.eos = zeros(rows)
        self.seen = zeros(rows, vocab, kind=torch.bool)  # talker tokens so far
        self.suppress = zeros(rows, vocab, kind=torch.bool)
        self.penalty = torch.ones(rows, dtype=torch.float32, device=device)
        self.temperature = torch.ones(rows, dtype=torch.float32, device=device)
        self.sampled = zeros(rows, kind=torch.float32)
        self.top_k = torch.full((rows,), vocab, dtype=torch.int64, device=device)
        self.top_p_cut = torch.full((rows,), NO_TOP_P, dtype=torch.float32, device=device)
        self.key = zeros(rows)  # noise key of the row's seed
        kv_heads, head_dim = lane.kv_shape
        self.kv: list[KV] = [
            (
                zeros(rows, kv_heads, context, head_dim, kind=dtype),
                zeros(rows, kv_heads, context, head_dim, kind=dtype),
            )
            for _ in lane.talker_layers
        ]
        shape = lane.predictor_kv_shape
        self.predictor_kv: list[KV] = [
            (zeros(rows, *shape, kind=dtype), zeros(rows, *shape, kind=dtype))
            for _ in lane.predictor_layers
        ]
        #: Each step's result per row: its frame's codes, then 0 (goes on), 1 (EOS), 2 (budget).
        self.out = zeros(rows, groups + 1)
        #: The talker logits of the last step, kept only for tests (teacher forcing).
        self.logits = zeros(rows, vocab, kind=torch.float32) if keep_logits else None
        self._free = list(range(rows))
        #: Host: rows whose top-k/top-p need the full sort (sampling.py); free rows never do.
        self._sorts = [False] * rows

    def params(self, rows: slice) -> RowParams:
        """The sampling parameters of `rows` (views: a captured graph reads them in place)."""
        return RowParams(
            temperature=self.temperature[rows],
            sampled=self.sampled[rows],
            top_k=self.top_k[rows],
            top_p_cut=self.top_p_cut[rows],
            keys=self.key[rows],
        )

    # ---- rows (host side) -------------------------------------------------------------------

    @property
    def free_rows(self) -> int:
        return len(self._free)

    def windowed(self, n: int) -> bool:
        """Whether a step of rows [0, n) may take the top-k window (sampling.py)."""
        return not any(self._sorts[:n])

    def take(self) -> int:
        """The lowest free row (keeps busy rows packed at the bottom: steps cover [0, n))."""
        if not self._free:
            raise RuntimeError("no free slot row; the loop admits only into free slots")
        self._free.sort()
        return self._free.pop(0)

    def give_back(self, row: int) -> None:
        if row in self._free:
            raise RuntimeError(f"slot row {row} is already free")
        self._sorts[row] = False
        self._free.append(row)

    def set_sampling(self, row: int, sampling: Sampling, seed: int) -> None:
        """Write a row's sampling parameters (scalar fills and device ops: no host read). A
        greedy row keeps one token by top-k: its argmax, whatever the other rules."""
        greedy = sampling.temperature <= 0
        top_k = 1 if greedy else min(sampling.top_k or self.vocab, self.vocab)
        top_p = 1.0 if greedy else sampling.top_p
        self.temperature[row] = 1.0 if greedy else sampling.temperature
        self.sampled[row] = 0.0 if greedy else 1.0
        self.top_k[row] = top_k
        self.top_p_cut[row] = 1.0 - top_p if top_p < 1.0 else NO_TOP_P
        self.penalty[row] = sampling.repetition_penalty
        self.key[row] = row_key(torch.tensor(seed, dtype=torch.int64)).to(self.key.device)
        self._sorts[row] = top_p < 1.0 or top_k > TOP_K_WINDOW
