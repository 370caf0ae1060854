"""Session fixtures for every test: tiny real-architecture models, built once, and one engine.

`engine` is the step engine the server runs (the real qwen-tts code under the step loop);
`stock` is the stock qwen-tts path under it, the reference. Generation is capped at
TEST_MAX_FRAMES frames so a text takes a fraction of a second on a CPU: the tiny model's weights
are random, EOS comes at random, and the cap is what ends most generations.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from qwen3_tts_server.aligner.model import ForcedAligner
from qwen3_tts_server.aligner.tiny import make_tiny_aligner
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.model.tiny import make_tiny_models
from qwen3_tts_server.engine.step import stepper
from qwen3_tts_server.engine.step.stepper import StepEngine
from qwen3_tts_server.values import Audio

#: Frames (80 ms each) any test generation may produce at most.
TEST_MAX_FRAMES = 12


def _tone(seconds: float = 1.0, sample_rate: int = 24000, pitch: float = 220.0) -> Audio:
    t = np.arange(int(seconds * sample_rate), dtype=np.float32) / sample_rate
    return Audio((0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32), sample_rate)


@pytest.fixture(autouse=True)
def _seeds_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unseeded generations draw their seeds from a counter instead of the OS: each test sees
    the same "random" audio on every run (production draws them at random)."""
    monkeypatch.setattr(stepper, "random_seed", itertools.count(1).__next__)


@pytest.fixture(scope="session")
def make_audio() -> Callable[..., Audio]:
    """make_audio(seconds=1.0, sample_rate=24000, pitch=220.0): a tone, as if recorded."""
    return _tone


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with base/, voice_design/ and custom_voice/ tiny models (seed 0)."""
    root = tmp_path_factory.mktemp("tiny-models")
    make_tiny_models(root, seed=0)
    return root


@pytest.fixture(scope="session")
def aligner(tiny_models_dir: Path) -> ForcedAligner:
    """The tiny Qwen3-ForcedAligner (real qwen-asr code, random weights) on the CPU. Not
    thread-safe: one app at a time (an app runs it on its own aligner thread)."""
    return ForcedAligner.load(make_tiny_aligner(tiny_models_dir / "aligner"), device="cpu")


@pytest.fixture(scope="session")
def stock(tiny_models_dir: Path) -> QwenEngine:
    """A QwenEngine with all three tiny models on the CPU in float32 (the same on every CPU,
    whatever DTYPE=auto picks). Not thread-safe: one user at a time."""
    return QwenEngine.load(
        tiny_models_dir / "base",
        tiny_models_dir / "voice_design",
        tiny_models_dir / "custom_voice",
        device="cpu",
        dtype="float32",
        max_new_tokens_cap=TEST_MAX_FRAMES,
    )


@pytest.fixture(scope="session")
def engine(stock: QwenEngine) -> StepEngine:
    """The step engine over `stock`, as the server runs it. One user (app) at a time."""
    return StepEngine(stock)


@pytest.fixture(scope="session")
def base_only_engine(tiny_models_dir: Path) -> StepEngine:
    """The Base model alone: no voice design, no preset speakers (MODEL_CUSTOM_REPO unset)."""
    return StepEngine(
        QwenEngine.load(tiny_models_dir / "base", device="cpu", max_new_tokens_cap=TEST_MAX_FRAMES)
    )


@pytest.fixture(scope="session")
def small_custom_engine(
    tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> StepEngine:
    """Base plus a CustomVoice model that says it is the 0.6B, which cannot follow
    instructions (qwen-tts drops them for that size)."""
    small = tmp_path_factory.mktemp("tiny-custom-0b6") / "custom_voice"
    shutil.copytree(tiny_models_dir / "custom_voice", small)
    config = json.loads((small / "config.json").read_text())
    config["tts_model_size"] = "0b6"
    (small / "config.json").write_text(json.dumps(config))
    stock = QwenEngine.load(
        tiny_models_dir / "base",
        custom_voice=small,
        device="cpu",
        max_new_tokens_cap=TEST_MAX_FRAMES,
    )
    return StepEngine(stock)


@pytest.fixture(scope="session")
def voice_prompts(engine: StepEngine) -> dict[str, bytes]:
    """Prompt bytes of two voices: "icl" (with transcript) and "xvec" (x-vector only)."""
    return {
        "icl": engine.create_prompt(_tone(pitch=220.0), "Hello, this is my voice."),
        "xvec": engine.create_prompt(_tone(pitch=330.0, sample_rate=16000), None),
    }
