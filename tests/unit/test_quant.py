"""int8 linears (QUANT=int8): close to the float linear, same call shape, both kernels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qwen3_tts_server.engine.step.quant import (
    KERNELS,
    Int8Linear,
    Int8LinearModule,
    default_kernel,
    quantize_linears,
    quantize_weight,
)


def _relative_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    return float((y.float() - reference).norm() / reference.norm())


def test_weights_round_to_int8_within_half_a_step() -> None:
    weight = torch.randn(48, 64) * torch.linspace(0.01, 3.0, 48)[:, None]
    values, scale = quantize_weight(weight)
    assert values.dtype == torch.int8 and int(values.abs().max()) == 127
    error = (values.float() * scale[:, None] - weight).abs()
    assert bool((error <= scale[:, None] / 2 + 1e-6).all())


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_matches_the_float_linear(kernel: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    weight, bias = torch.randn(96, 256) * 0.05, torch.randn(96)
    x = torch.randn(2, 3, 256)
    reference = F.linear(x, weight, bias)
    layer = Int8Linear(weight.to(dtype), bias.to(dtype), kernel=kernel)
    y = layer(x.to(dtype))
    assert y.shape == (2, 3, 96) and y.dtype == dtype
    # int8 weights (and, for fbgemm, int8 activations): ~1 % off, never the wrong answer.
    assert _relative_error(y, reference) < 0.03
    assert _relative_error(Int8Linear(weight, None, kernel=kernel)(x), F.linear(x, weight)) < 0.03


def test_default_kernel_is_fbgemm_where_torch_quantizes_with_fbgemm() -> None:
    expected = "fbgemm" if torch.backends.quantized.engine in ("x86", "fbgemm") else "int8pack"
    assert default_kernel() == expected
    assert Int8Linear(torch.randn(8, 16)).kernel == expected


def test_quantize_linears_swaps_every_linear_below_the_roots() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Sequential(nn.Linear(64, 128), nn.SiLU(), nn.Linear(128, 64)),
        nn.Linear(64, 10),
    )
    x = torch.randn(4, 64)
    reference = model(x)
    assert quantize_linears([model[0]]) == 2
    assert isinstance(model[0][0], Int8LinearModule) and isinstance(model[0][2], Int8LinearModule)
    assert isinstance(model[1], nn.Linear)  # not below a root: left alone
    assert _relative_error(model(x).detach(), reference.detach()) < 0.05


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="2-D"):
        Int8Linear(torch.randn(4, 4, 4))
    with pytest.raises(ValueError, match="kernel must be one of"):
        Int8Linear(torch.randn(4, 4), kernel="int3")
