"""Matrix multiplies of the step loop: weights prepacked once for oneDNN on CPU, and the dtype.

Why prepacking: a decode step reads every weight once per frame, so a frame costs what reading
its weights costs (research/engine-speed-cpu.md). In bf16, `F.linear` runs oneDNN's matmul on the
plain (N, K) weight and re-blocks it on *every* call; a weight reordered once for oneDNN
(`_reorder_linear_weight` + `_linear_pointwise`, what inductor's freezing does) runs the same
microkernel bit-identically at ~1.9x the speed. In fp32 the stock kernel is MKL, whose GEMM for
2+ rows is slow on AMD CPUs; oneDNN prepacked fp32 is ~2x faster but NOT bit-identical (rounding
differences; greedy codes matched stock in every run measured, a flip on a near-tie is
possible). On CUDA weights stay plain (`F.linear`, q/k/v and gate/up fused); where oneDNN is
missing, plain and unfused.

`DTYPE=auto` on a CPU picks bfloat16 where oneDNN has bf16 kernels (avx512_bf16 or AMX), else
float32, and says which in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Linear(Protocol):
    """y = x @ W.T (+ b) for x of shape (..., K). The int8 option plugs in here too."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


#: Builds a Linear from a weight (N, K) and an optional bias (N,).
LinearFactory = Callable[[torch.Tensor, torch.Tensor | None], Linear]


class PlainLinear:
    """`F.linear` on the weight as the model holds it (CUDA, or no oneDNN)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight = weight
        self.bias = bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class CudaLinear(PlainLinear):
    """`F.linear` on CUDA, where q/k/v and gate/up are fused too: fewer, larger GEMMs per layer
    (a GPU step is bound by kernel count, not by FLOPs). Not bit-exact with the unfused GEMMs:
    the serving step's promise on CUDA is a logits tolerance (README "Reproducibility")."""

    fusable = True


class PackedLinear:
    """A weight reordered once into oneDNN's blocked layout; only the packed copy is kept."""

    #: q/k/v and gate/up may be fused into one matrix each (bit-exact with this kernel).
    fusable = True

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), 1)
        self.bias = None if bias is None else bias.detach()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def can_prepack(device: torch.device | str, dtype: torch.dtype) -> bool:
    """oneDNN prepacking applies on CPU for fp32 always and for bf16 where oneDNN runs bf16."""
    if torch.device(device).type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


def linear_factory(
    device: torch.device | str, dtype: torch.dtype, quant: str = "none"
) -> LinearFactory:
    """Prepacked linears where they are known to help (see the module docstring), else plain;
    int8 linears (engine/step/quant.py) for quant="int8", CPU only."""
    if quant == "int8":
        if torch.device(device).type != "cpu":
            raise ValueError("QUANT=int8 is for the CPU path; use QUANT=none on CUDA")
        from qwen3_tts_server.engine.step.quant import Int8Linear

        return Int8Linear
    if quant != "none":
        raise ValueError(f"quant must be none or int8, got {quant!r}")
    if can_prepack(device, dtype):
        return PackedLinear
    if torch.device(device).type == "cuda":
        return CudaLinear
    return PlainLinear


def cpu_supports_bf16() -> bool:
    """oneDNN has bf16 kernels here (avx512_bf16 or AMX): bf16 is then fast, not emulated."""
    if not torch.backends.mkldnn.is_available():
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pick_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """The model dtype for a DTYPE setting; "auto" is bf16 on CUDA and on bf16-capable CPUs."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16
        if cpu_supports_bf16():
            log.info("DTYPE=auto: bfloat16 (this CPU runs oneDNN bf16 kernels; weights prepacked)")
            return torch.bfloat16
        log.info("DTYPE=auto: float32 (no oneDNN bf16 on this CPU; weights prepacked for oneDNN)")
        return torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype must be auto or one of {sorted(_DTYPES)}, got {dtype!r}") from None
