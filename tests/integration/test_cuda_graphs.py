"""The GPU path: the code predictor's passes replayed from CUDA graphs give the eager codes.

Runs only where CUDA is present (skipped on the CPU-only development machines and CI; README,
"What is verified where").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from qwen3_tts_server.engine.base import SynthItem
from qwen3_tts_server.engine.predictor import PredictorGraphs
from qwen3_tts_server.engine.qwen import QwenEngine
from qwen3_tts_server.engine.stepper import StepEngine
from qwen3_tts_server.values import Audio, Sampling

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TEXTS = ["Hello there.", "A second, longer sentence of the batch.", "Third."]


def _frames(steps: StepEngine, items: list[SynthItem], budget: int) -> list[torch.Tensor]:
    slots = [steps.admit(item, Sampling(temperature=0.0), budget) for item in items]
    while not all(slot.done for slot in slots):
        steps.step(slots)
    for slot in slots:
        steps.release(slot)
    return [slot.frames.cpu() for slot in slots]


def test_graph_replay_equals_eager_passes(
    tiny_models_dir: Path, make_audio: Callable[..., Audio]
) -> None:
    engine = QwenEngine.load(
        tiny_models_dir / "base", device="cuda", dtype="bfloat16", max_new_tokens_cap=12
    )
    tone = make_audio()
    prompt = engine.create_prompt(tone, None)
    steps = StepEngine(engine)
    lane = steps._lanes["base"]
    assert isinstance(lane.graphs, PredictorGraphs)
    for batch in (1, 3):
        items = [SynthItem(text, "english", prompt) for text in TEXTS[:batch]]
        replayed = _frames(steps, items, 8)
        graphs, lane.graphs = lane.graphs, None  # the same loop, eager passes
        try:
            eager = _frames(steps, items, 8)
        finally:
            lane.graphs = graphs
        assert all(torch.equal(a, b) for a, b in zip(replayed, eager, strict=True))
    assert sorted(lane.graphs._captured) == [1, 4]  # B = 3 replays the bucket of 4


def test_stock_codes_on_cuda_match_the_loop_at_batch_one(
    tiny_models_dir: Path, make_audio: Callable[..., Audio]
) -> None:
    engine = QwenEngine.load(
        tiny_models_dir / "base", device="cuda", dtype="bfloat16", max_new_tokens_cap=12
    )
    tone = make_audio()
    item = SynthItem(TEXTS[1], "english", engine.create_prompt(tone, None))
    ours = _frames(StepEngine(engine), [item], 8)
    stock = engine.stock_codes([item], Sampling(temperature=0.0), 9)
    assert torch.equal(ours[0], stock[0].cpu())
