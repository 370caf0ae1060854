"""Linear kernels for int8 (and int4) weights at the 0.6B model's shapes; prints one JSON object.

    .venv/bin/python bench/quant_kernels.py [--rows 1,2,8] [--layers 8] [--reps 7] [--rounds 3]

Why: QUANT=int8 only pays if its kernel reads weights near memory bandwidth (a frame costs
what reading its weights costs). Per kernel and row count (M = slots in a step): ms per decoder
layer (the 4 fused GEMMs of one layer: q/k/v, o, gate/up, down; 15.7 M weights) over `--layers`
distinct layers (so weights come from memory, not cache), the weight bandwidth that implies
(bytes per weight / time), and the relative error vs the float32 linear (||y - y32|| / ||y32||).
Kernels alternate within each round; min and median over all rounds.
* `bf16_packed`, `fp32_packed`: oneDNN prepacked float (engine/step/linear.py PackedLinear): the
  loop's float kernels, the baseline;
* `int8_fbgemm`: engine/step/quant.py's default: FBGEMM dynamic int8 (int8 weights per channel,
  activations quantized per call);
* `int8_weight_only`: `torch._weight_int8pack_mm` (engine/step/quant.py's fallback kernel);
* `int8_onednn_w8a8`: oneDNN `qlinear_pointwise` with a per-call activation scale (inductor's
  x86 int8 kernel);
* `int4_weight_only`: `torch._weight_int4pack_mm_for_cpu`, groups of 128, for reference.
Not here: torchao 0.18's Int8WeightOnlyConfig, whose CPU path converts the int8 weight to float
on every call (no kernel of its own; slower than bf16), and torch.compile's weight-only lowering
(tens of seconds of compile per shape and batch size).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from qwen3_tts_server.engine.step.linear import PackedLinear
from qwen3_tts_server.engine.step.quant import Int8Linear, quantize_weight

HIDDEN, INTERMEDIATE = 1024, 3072
#: The fused GEMMs of one 0.6B decoder layer: (out_features, in_features).
SHAPES = [(4096, HIDDEN), (HIDDEN, 2048), (2 * INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE)]
Layer = list[Callable[[torch.Tensor], torch.Tensor]]


def _onednn_w8a8(weight: torch.Tensor, rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
    values, scale = quantize_weight(weight)
    packed = torch.ops.onednn.qlinear_prepack(values, [rows, weight.shape[1]])
    zeros = torch.zeros(scale.shape, dtype=torch.long)
    zero_point = torch.tensor(128)

    def run(x: torch.Tensor) -> torch.Tensor:
        x_scale = x.abs().amax().clamp_min(1e-8) / 127.0
        qx = torch.round(x / x_scale).add_(128).clamp_(0, 255).to(torch.uint8)
        return torch.ops.onednn.qlinear_pointwise.tensor(
            qx, x_scale, zero_point, packed, scale, zeros, None, 1.0, 0, torch.float32,
            "none", [], "",
        )  # fmt: skip

    return run


def _int4(weight: torch.Tensor, group: int = 128) -> Callable[[torch.Tensor], torch.Tensor]:
    grouped = weight.reshape(weight.shape[0], -1, group)
    low, high = grouped.amin(-1), grouped.amax(-1)
    scale = ((high - low) / 15).clamp_min(1e-8)
    values = ((grouped - low[..., None]) / scale[..., None]).round().clamp(0, 15)
    packed = torch._convert_weight_to_int4pack_for_cpu(
        values.to(torch.int32).reshape(weight.shape), 1
    )
    scales_zeros = torch.stack([scale, low + 8 * scale], -1).transpose(0, 1).contiguous()
    scales_zeros = scales_zeros.bfloat16()

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int4pack_mm_for_cpu(x.bfloat16(), packed, group, scales_zeros)

    return run


def _kernels(weights: list[list[torch.Tensor]], rows: int) -> dict[str, tuple[list[Layer], float]]:
    """name -> (layers of callables, bytes per weight)."""

    def build(make: Callable[[torch.Tensor], Any], dtype: torch.dtype) -> list[Layer]:
        return [[make(w.to(dtype)) for w in layer] for layer in weights]

    def bf16(w: torch.Tensor) -> Any:  # bf16 activations, as in a bf16 model
        return lambda x, p=PackedLinear(w, None): p(x.bfloat16())

    def int8pack(w: torch.Tensor) -> Any:  # its fp32-activation path is ~30x slower
        return lambda x, p=Int8Linear(w, kernel="int8pack"): p(x.bfloat16())

    return {
        "bf16_packed": (build(bf16, torch.bfloat16), 2.0),
        "fp32_packed": (build(lambda w: PackedLinear(w, None), torch.float32), 4.0),
        "int8_fbgemm": (build(lambda w: Int8Linear(w, kernel="fbgemm"), torch.float32), 1.0),
        "int8_weight_only": (build(int8pack, torch.bfloat16), 1.0),
        "int8_onednn_w8a8": (build(lambda w: _onednn_w8a8(w, rows), torch.float32), 1.0),
        "int4_weight_only": (build(_int4, torch.float32), 0.5),
    }


def run(row_counts: list[int], n_layers: int, reps: int, rounds: int) -> dict[str, Any]:
    torch.manual_seed(0)
    weights = [[torch.randn(shape) * 0.02 for shape in SHAPES] for _ in range(n_layers)]
    params = sum(w.numel() for layer in weights for w in layer)
    result: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "weights": params,
        "unit": "ms per decoder layer (15.7 M weights)",
        "loadavg_start": round(os.getloadavg()[0], 2),
    }
    for rows in row_counts:
        inputs = [torch.randn(rows, shape[1]) for shape in SHAPES]
        reference = [
            [F.linear(x, w) for x, w in zip(inputs, layer, strict=True)] for layer in weights
        ]
        kernels = _kernels(weights, rows)
        times: dict[str, list[float]] = {name: [] for name in kernels}
        for _ in range(rounds):
            for name, (layers, _) in kernels.items():
                for _ in range(reps + 1):
                    started = time.perf_counter()
                    for layer in layers:
                        for x, linear in zip(inputs, layer, strict=True):
                            linear(x)
                    times[name].append((time.perf_counter() - started) / n_layers * 1000)
                times[name].pop(-reps - 1)  # the first pass of a round warms caches up
        block: dict[str, Any] = {}
        for name, (layers, width) in kernels.items():
            error = max(
                float((linear(x).float() - y).norm() / y.norm())
                for layer, ys in zip(layers, reference, strict=True)
                for x, linear, y in zip(inputs, layer, ys, strict=True)
            )
            fastest = min(times[name])
            block[name] = {
                "ms_min": round(fastest, 3),
                "ms_median": round(statistics.median(times[name]), 3),
                "weight_GBps": round(params / n_layers * width / fastest / 1e6, 1),
                "relative_error": round(error, 4),
            }
        base = block["bf16_packed"]["ms_median"]
        for row in block.values():
            row["x_vs_bf16_packed"] = round(base / row["ms_median"], 2)
        result[f"rows_{rows}"] = block
    result["loadavg_end"] = round(os.getloadavg()[0], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,2,8")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = [int(r) for r in args.rows.split(",")]
    print(json.dumps(run(rows, args.layers, args.reps, args.rounds), indent=1))


if __name__ == "__main__":
    main()
