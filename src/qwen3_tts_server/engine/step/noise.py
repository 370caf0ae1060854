"""Counter-based random numbers: the same uniform for the same (seed, frame, codebook, token).

Why not torch generators: a seeded text must give the same codes whatever else shares its step,
and the whole step is replayed from a CUDA graph. One `torch.Generator` per slot cannot be
re-seeded inside a graph without host work per row, and a shared generator makes a row's draws
depend on its neighbours. A hash of the counter has neither problem: it is a pure function of
tensors that live on the device, identical on CPU and CUDA (integer arithmetic only), and costs
a few elementwise kernels per sampling point (what vLLM-Omni's talker sampler does with Philox).

The hash is Chris Wellons' `lowbias32` (two multiply-xorshift rounds, bias ~0.17 of an ideal
32-bit permutation), applied in a chain: seed low word, seed high word (the row's key, made at
admission), then the counter. The arithmetic runs in int64 on 32-bit values; a 32x32-bit
product is split into 16-bit halves so no intermediate overflows int64 (signed overflow is
undefined in the kernels' C++).
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_M1 = 0x7FEB352D
_M2 = 0x846CA68B
_GOLDEN = 0x9E3779B9
#: Codebooks per frame in the counter (the 12 Hz models have 16 code groups).
COUNTER_GROUPS = 16


def _mul32(x: torch.Tensor, m: int) -> torch.Tensor:
    """(x * m) mod 2**32 for x in [0, 2**32) without int64 overflow."""
    low = (x & 0xFFFF) * m
    high = (((x >> 16) * m) & 0xFFFF) << 16
    return (low + high) & _MASK32


def _mix(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, _M1)
    x = x ^ (x >> 15)
    x = _mul32(x, _M2)
    return x ^ (x >> 16)


def row_key(seeds: torch.Tensor) -> torch.Tensor:
    """The noise key of each seed (non-negative int64, 63 bits used): made once when a slot is
    admitted, so a step hashes only its counters."""
    key = _mix((seeds & _MASK32) ^ _GOLDEN)
    return _mix(key ^ ((seeds >> 32) & _MASK32))


def uniform(keys: torch.Tensor, frames: torch.Tensor, group: int, vocab: int) -> torch.Tensor:
    """float32 uniforms in (0, 1), shape (B, vocab): row b's draw for token v is a function of
    (keys[b], frames[b], group, v) only; `keys` come from `row_key`."""
    base = (frames * COUNTER_GROUPS + group) * vocab
    tokens = torch.arange(vocab, device=keys.device, dtype=torch.int64)
    counter = (base.unsqueeze(1) + tokens) & _MASK32
    bits = _mix(counter ^ keys.unsqueeze(1)) >> 8  # 24 bits: exact in float32
    return (bits.to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def gumbel(keys: torch.Tensor, frames: torch.Tensor, group: int, vocab: int) -> torch.Tensor:
    """Standard Gumbel noise (B, vocab): argmax(scores + noise) samples softmax(scores)."""
    return -torch.log(-torch.log(uniform(keys, frames, group, vocab)))
