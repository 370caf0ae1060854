"""One decoder layer of the talker or the code predictor, run over preallocated K/V buffers.

The weights are pulled out of the stock qwen-tts modules once (prepacked, q/k/v and gate/up
fused into one matrix each when prepacked: 4 GEMMs per layer instead of 7, bit-exact with these
kernels). Every other op is the op the stock module runs, with the same shapes and dtypes: the
same RMSNorm modules, rotary arithmetic, and SDPA with the arguments transformers' sdpa path
picks (no mask, GQA in the kernel, causal only for a multi-token input), so that codes equal
stock qwen-tts for the same dtype.

K/V live in preallocated buffers (talker: a slab of one (rows, kv_heads, capacity, head_dim)
pair per layer, step/table.py; code predictor: one (rows, kv_heads, groups + 1, head_dim) pair per
layer, rewritten every frame); a step writes its new K/V in place: no cache concatenation, no
growth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from qwen3_tts_server.engine.step.linear import Linear, LinearFactory

KV = tuple[torch.Tensor, torch.Tensor]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return (x * cos) + (rotate_half(x) * sin)


def multimodal_rope(
    cos: torch.Tensor, sin: torch.Tensor, section: Sequence[int], interleaved: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, 1, S, head_dim) cos/sin the talker's `apply_multimodal_rotary_pos_emb` builds
    from its rotary module's (3, B, S, head_dim) output (the same ops, so the same values)."""
    if interleaved:
        modality = len(section)
        half = cos.shape[-1] // 2

        def interleave(x: torch.Tensor) -> torch.Tensor:
            out = x[0].clone()
            for i, n in enumerate(section[1:], 1):
                out[..., i : n * modality : modality] = x[i, ..., i : n * modality : modality]
            return out

        cos = torch.cat([interleave(cos[..., :half])] * 2, dim=-1).unsqueeze(1)
        sin = torch.cat([interleave(sin[..., :half])] * 2, dim=-1).unsqueeze(1)
        return cos, sin
    doubled = list(section) * 2
    cos = torch.cat([m[i % 3] for i, m in enumerate(cos.split(doubled, dim=-1))], dim=-1)
    sin = torch.cat([m[i % 3] for i, m in enumerate(sin.split(doubled, dim=-1))], dim=-1)
    return cos.unsqueeze(1), sin.unsqueeze(1)


def _cat_or_none(tensors: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    if all(t is None for t in tensors):
        return None
    if any(t is None for t in tensors):
        raise ValueError("cannot fuse projections where only some have a bias")
    return torch.cat([t for t in tensors if t is not None])


class DecoderLayer:
    """A stock decoder layer's weights and norms, ready for the step loop."""

    def __init__(self, layer: Any, make: LinearFactory) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.ln1, self.ln2 = layer.input_layernorm, layer.post_attention_layernorm
        self.head_dim = int(attn.head_dim)
        self.q_heads = attn.q_proj.weight.shape[0] // self.head_dim
        k_heads = attn.k_proj.weight.shape[0] // self.head_dim
        # q_norm and k_norm as one norm over the q and k heads side by side: each head's values
        # are the ones its own module makes, in half the ops (a decode step is op-bound on CPU).
        self.qk_weight = torch.cat(
            (
                attn.q_norm.weight.detach().expand(self.q_heads, -1),
                attn.k_norm.weight.detach().expand(k_heads, -1),
            )
        )
        self.qk_eps = attn.q_norm.variance_epsilon
        if attn.k_norm.variance_epsilon != self.qk_eps:
            raise ValueError("q_norm and k_norm must share their epsilon")
        self.scale = attn.scaling
        self.act = mlp.act_fn
        q, k, v = attn.q_proj, attn.k_proj, attn.v_proj
        self.n_q, self.n_k = q.weight.shape[0], k.weight.shape[0]
        self.n_inter = mlp.gate_proj.weight.shape[0]
        # Fusing is bit-exact with the prepacked (and int8) kernels; plain F.linear keeps stock's
        # 7 GEMMs.
        self.fused = bool(getattr(make, "fusable", False))
        self.qkv: Linear | None = None
        self.gate_up: Linear | None = None
        if self.fused:
            weights = torch.cat([q.weight, k.weight, v.weight])
            self.qkv = make(weights, _cat_or_none([q.bias, k.bias, v.bias]))
            self.gate_up = make(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), None)
            del weights
        else:
            self.q, self.k, self.v = (make(p.weight, p.bias) for p in (q, k, v))
            self.gate = make(mlp.gate_proj.weight, None)
            self.up = make(mlp.up_proj.weight, None)
        self.o = make(attn.o_proj.weight, attn.o_proj.bias)
        self.down = make(mlp.down_proj.weight, None)

    def qkv_heads(
        self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised, rotated (B, heads, S, head_dim) q and k, and v, for input h (B, S, H)."""
        batch, length, _ = h.shape
        shape = (batch, length, -1, self.head_dim)
        x = self.ln1(h)
        if self.qkv is not None:
            qkv = self.qkv(x)
            qk = qkv[..., : self.n_q + self.n_k]
            vp = qkv[..., self.n_q + self.n_k :]
        else:
            qk, vp = torch.cat((self.q(x), self.k(x)), dim=-1), self.v(x)
        qk = apply_rope(self.qk_norm(qk.view(shape)).transpose(1, 2), cos, sin)
        return qk[:, : self.q_heads], qk[:, self.q_heads :], vp.view(shape).transpose(1, 2)

    def qk_norm(self, heads: torch.Tensor) -> torch.Tensor:
        """Stock's RMSNorm (Qwen3TTSRMSNorm.forward, op for op) of q and k heads (B, S, heads,
        head_dim) at once, each head scaled by its own module's weight."""
        dtype = heads.dtype
        x = heads.to(torch.float32)
        variance = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.qk_eps)
        return self.qk_weight * x.to(dtype)

    def attend(
        self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, causal: bool
    ) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            q, keys, values, attn_mask=None, dropout_p=0.0, scale=self.scale,
            is_causal=causal, enable_gqa=True,
        )  # fmt: skip

    def finish(self, h: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Output projection, residual, MLP and residual, for attention output (B, heads, S, d)."""
        batch, _, length, _ = attn.shape
        o = attn.transpose(1, 2).contiguous().reshape(batch, length, -1).contiguous()
        h = h + self.o(o)
        x = self.ln2(h)
        if self.gate_up is not None:
            gu = self.gate_up(x)
            return h + self.down(self.act(gu[..., : self.n_inter]) * gu[..., self.n_inter :])
        return h + self.down(self.act(self.gate(x)) * self.up(x))

    def step_rows(
        self,
        h: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        at: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """One token per row (h: (B, 1, H)); row i's K/V go to keys/values[i] (B, kv_heads,
        capacity, d) at position at[1][i] (at = (row indices, positions)), and it attends over
        the first `span` positions where mask (B, 1, 1, span) is true. The query heads that
        share a K/V head are laid along the query-length axis, so one attention call serves GQA
        without repeating K/V. The K/V write is an indexed put: a scatter_ with an expanded
        index copies the whole slab on CPU (135 ms against 0.02 ms for 8 rows at 0.6B)."""
        q, k, v = self.qkv_heads(h, cos, sin)
        batch, heads, _, dim = q.shape
        kv_heads = keys.shape[1]
        rows, positions = at
        keys[rows, :, positions] = k[:, :, 0, :]
        values[rows, :, positions] = v[:, :, 0, :]
        span = mask.shape[-1]
        attn = F.scaled_dot_product_attention(
            q.reshape(batch, kv_heads, heads // kv_heads, dim),
            keys[:, :, :span],
            values[:, :, :span],
            attn_mask=mask,
            scale=self.scale,
        )
        return self.finish(h, attn.reshape(batch, heads, 1, dim))

    def prefill(
        self,
        h: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        rows: torch.Tensor,
    ) -> torch.Tensor:
        """A whole prompt per row (h: (B, L, H), right-padded to the longest); row i's K/V go
        to keys/values[rows[i]] at positions [0, L). Causal attention over the prompt itself,
        as stock's prefill calls it: a real position sees only earlier positions, all real, so
        padding needs no mask."""
        q, k, v = self.qkv_heads(h, cos, sin)
        length = h.shape[1]
        keys[rows, :, :length] = k
        values[rows, :, :length] = v
        return self.finish(h, self.attend(q, k, v, length > 1))

    def step_shared(
        self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KV, start: int
    ) -> torch.Tensor:
        """S tokens for every row at the same positions [start, start + S) (code predictor)."""
        q, k, v = self.qkv_heads(h, cos, sin)
        keys, values = cache
        end = start + h.shape[1]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        attn = self.attend(q, keys[:, :, :end], values[:, :, :end], h.shape[1] > 1)
        return self.finish(h, attn)
