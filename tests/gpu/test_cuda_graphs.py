"""The GPU path: the whole step replayed from CUDA graphs gives the eager step's codes, and the
serving step stays within the stated tolerance of stock on the GPU.

Runs only where CUDA is present: skipped on the CPU-only development machines and CI (README,
"What is verified where"), run by bench/gpu.sh on a GPU machine. The same step body is held on
the CPU by tests/unit/test_step_device.py with fake CUDA tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from qwen3_tts_server.engine.base import SynthItem
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.step.body import step_rows
from qwen3_tts_server.engine.step.stepper import Lane, StepEngine
from qwen3_tts_server.values import Audio, Sampling

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TEXTS = ["Hello there.", "A second, longer sentence of the batch.", "Third."]


def _frames(steps: StepEngine, items: list[SynthItem], sampling: Sampling) -> list[torch.Tensor]:
    slots = [steps.admit(item, sampling, 8) for item in items]
    while not all(slot.done for slot in slots):
        steps.step(slots)
    for slot in slots:
        steps.release(slot)
    return [slot.frames for slot in slots]


class EagerBuckets:
    """The graphs' interface, running the same body eagerly at the same bucket shapes (a
    different row count could pick another GEMM kernel: not what this test is about)."""

    def __init__(self, lane: Lane) -> None:
        assert lane.graphs is not None
        self._lane, self._graphs = lane, lane.graphs

    def run(self, n: int, span: int) -> int:
        rows, span = self._graphs.cover(n, span)
        step_rows(self._lane, self._lane.table, rows, span)
        return rows


@pytest.fixture(scope="module")
def cuda_engine(tiny_models_dir: Path) -> QwenEngine:
    return QwenEngine.load(
        tiny_models_dir / "base", device="cuda", dtype="bfloat16", max_new_tokens_cap=12
    )


@pytest.mark.parametrize("sampling", [Sampling(temperature=0), Sampling(seed=5)])
def test_graph_replay_equals_the_eager_step(
    cuda_engine: QwenEngine, make_audio: Callable[..., Audio], sampling: Sampling
) -> None:
    prompt = cuda_engine.create_prompt(make_audio(), None)
    steps = StepEngine(cuda_engine, rows=4, context=256)
    lane = steps.lane("base")
    lane.capture()
    assert lane.graphs is not None
    for batch in (1, 3):
        items = [SynthItem(text, "english", prompt) for text in TEXTS[:batch]]
        replayed = _frames(steps, items, sampling)
        graphs, lane.graphs = lane.graphs, EagerBuckets(lane)  # type: ignore[assignment]
        try:
            eager = _frames(steps, items, sampling)
        finally:
            lane.graphs = graphs
        assert all(torch.equal(a, b) for a, b in zip(replayed, eager, strict=True))
    assert lane.graphs.cover(3, 20) == (4, 128)


def test_warm_up_captures_before_serving_and_steps_sync_once(
    cuda_engine: QwenEngine, make_audio: Callable[..., Audio]
) -> None:
    steps = StepEngine(cuda_engine, rows=4, context=256)
    steps.warm_up()
    assert steps.lane("base").graphs is not None
    item = SynthItem(TEXTS[1], "english", cuda_engine.create_prompt(make_audio(), None))
    slot = steps.admit(item, Sampling(seed=3), 8)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):  # no implicit sync; the wait for the codes is an event's
            steps.step([slot])
    finally:
        torch.cuda.set_sync_debug_mode(0)
    steps.release(slot)
