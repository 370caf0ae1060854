"""QUANT=int8 in the step loop: decoder layers on int8 kernels, heads in float, frames come out.

The codes of an int8 lane are not those of the float lane (by design; bench/speed.py measures
how far apart they are at the real dimensions), so these tests check the wiring, not equality.
"""

from __future__ import annotations

import pytest
import torch

from qwen3_tts_server.engine.base import SynthItem
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.step.linear import linear_factory
from qwen3_tts_server.engine.step.quant import Int8Linear
from qwen3_tts_server.engine.step.stepper import StepEngine
from qwen3_tts_server.values import Sampling


def test_int8_lane_quantizes_the_layers_and_keeps_the_heads(
    stock: QwenEngine, voice_prompts: dict[str, bytes]
) -> None:
    steps = StepEngine(stock, quant="int8")
    lane = steps.lane("base")
    for layer in [*lane.talker_layers, *lane.predictor_layers]:
        assert layer.fused
        assert all(isinstance(p, Int8Linear) for p in (layer.qkv, layer.gate_up, layer.o))
        assert isinstance(layer.down, Int8Linear)
    assert not any(isinstance(head, Int8Linear) for head in [*lane.heads, lane.codec_head])

    budget = 6
    slot = steps.admit(
        SynthItem("Hello there.", "english", voice_prompts["xvec"]), Sampling(), budget
    )
    while not slot.done:
        steps.step([slot])
    steps.release(slot)
    frames = slot.frames
    assert 1 <= frames.shape[0] <= budget
    codebook = lane.predictor.config.vocab_size
    assert int(frames[:, 1:].min()) >= 0 and int(frames[:, 1:].max()) < codebook


def test_int8_is_refused_off_the_cpu_and_unknown_modes_too() -> None:
    with pytest.raises(ValueError, match="QUANT=int8 is for the CPU path"):
        linear_factory("cuda", torch.bfloat16, "int8")
    with pytest.raises(ValueError, match="quant must be none or int8"):
        linear_factory("cpu", torch.float32, "int4")
