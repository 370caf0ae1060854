"""int8 weights for the talker and the code predictor (`QUANT=int8`, off by default).

Why: on a CPU a frame costs what its weights cost to read (1.65 G parameters per 80 ms frame at
0.6B, 73 % of them in the code predictor's 15 passes), so one byte per weight instead of two
(bf16) or four (fp32) is the remaining lever once the loop runs at memory bandwidth. The price
is that codes are no longer those of the unquantized model: off by default, a documented
trade-off (README), measured by bench/speed.py.

Kernel, chosen by measurement (bench/quant_kernels.py, 2 threads, AMD Zen 4): FBGEMM's
dynamically quantized linear (`quantized::linear_dynamic`): int8 weights with one scale per
output channel, prepacked once; each call quantizes the activation rows to uint8 with one scale
for the whole call, multiplies in int32 with VNNI and returns float. It ran 2.2x (one row) and
1.9x (8 rows) faster than the oneDNN-prepacked bf16 linear, where torch's weight-only
`_weight_int8pack_mm` gained 1.0-1.35x and torchao 0.18's int8 weight-only has no CPU kernel of
its own (it converts the weight back to float on every call). Strictly this is W8A8 (dynamic), not
weight-only: the activation rounding adds error of the same size as the weight rounding here,
and it makes a row's result depend on the other rows of the same call (the float GEMMs are not
batch-invariant either, so codes already depend on batch composition).
Where FBGEMM is not torch's quantized engine (ARM: qnnpack), `_weight_int8pack_mm` (weight-only)
is used instead (with bf16 activations: its float32-activation path measured ~30x slower on x86;
not measured on ARM). Not for CUDA: the GPU path is launch-bound, not bandwidth-bound.

Interface: `Int8Linear(weight, bias)(x)` has the call shape of the engine's float linears;
`quantize_linears(module)` swaps the nn.Linear layers of a stock model for the same kernel
(how the bench measures agreement on stock qwen-tts).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import Tensor, nn

#: Kernel names, fastest first where available.
KERNELS = ("fbgemm", "int8pack")
_FBGEMM_ENGINES = ("x86", "fbgemm")


def default_kernel() -> str:
    """FBGEMM's dynamic int8 linear where torch uses FBGEMM (x86), else `_weight_int8pack_mm`
    (also once torch drops its deprecated quantized tensors, which FBGEMM's prepacking needs)."""
    if torch.backends.quantized.engine in _FBGEMM_ENGINES and hasattr(
        torch.ops.quantized, "linear_dynamic"
    ):
        return "fbgemm"
    return "int8pack"


def quantize_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per output channel: (int8 values in [-127, 127], float32 scales)."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
    values = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return values.contiguous(), scale


class Int8Linear:
    """`y = x W^T + b` with W held in int8; x of any float dtype and shape (..., in_features),
    y of x's dtype. The float weight is not kept (halves or quarters the model's memory)."""

    #: q/k/v and gate/up may be fused (per-row scales, one activation: the same results).
    fusable = True

    def __init__(self, weight: Tensor, bias: Tensor | None = None, kernel: str | None = None):
        if weight.dim() != 2:
            raise ValueError(f"weight must be 2-D (out_features, in_features), got {weight.shape}")
        self.kernel = kernel or default_kernel()
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        if weight.device.type != "cpu":
            raise ValueError("int8 weights are for the CPU path only")
        self.out_features, self.in_features = weight.shape
        values, scale = quantize_weight(weight)
        self._bias = None if bias is None else bias.detach().float()
        if self.kernel == "fbgemm":
            zero_points = torch.zeros(scale.shape, dtype=torch.long)
            with warnings.catch_warnings():  # "quantized tensors are deprecated": see above
                warnings.simplefilter("ignore", UserWarning)
                qweight = torch._make_per_channel_quantized_tensor(
                    values, scale.double(), zero_points, 0
                )
            self._packed = torch.ops.quantized.linear_prepack(qweight, self._bias)
            # Without VNNI, FBGEMM's u8*s8 pairs saturate int16: use 7-bit activations there.
            self._reduce_range = not torch.cpu._is_vnni_supported()
        else:
            self._values, self._scale = values, scale

    def __call__(self, x: Tensor) -> Tensor:
        if self.kernel == "fbgemm":
            y = torch.ops.quantized.linear_dynamic(
                x.float().contiguous(), self._packed, self._reduce_range
            )
            return y.to(x.dtype)
        rows = x.reshape(-1, self.in_features)
        y = torch._weight_int8pack_mm(rows, self._values, self._scale.to(x.dtype))
        if self._bias is not None:
            y = y + self._bias.to(x.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)


class Int8LinearModule(nn.Module):
    """An `Int8Linear` where a model holds an nn.Linear (stock qwen-tts modules)."""

    def __init__(self, linear: nn.Linear, kernel: str | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.int8 = Int8Linear(linear.weight, linear.bias, kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.int8(x)


def quantize_linears(roots: Iterable[nn.Module], kernel: str | None = None) -> int:
    """Replace every nn.Linear below each root by an Int8LinearModule; returns how many.

    Callers pass the decoder layers (talker and code predictor), not the output heads: the heads
    are 2 % of a frame's weights and decide the codes directly.
    """
    replaced = 0
    for root in roots:
        for parent in list(root.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, Int8LinearModule(child, kernel))
                    replaced += 1
    return replaced
