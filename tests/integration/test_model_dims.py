"""Size presets of the locally built models: real-0.6b has the published sizes, the 1.7B layout
(a narrower code predictor) runs through the step engine, and the cache builds a preset once and
rebuilds it only when the seed or preset changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from qwen3_tts_server.engine.base import SynthItem
from qwen3_tts_server.engine.model.compat import import_qwen_tts
from qwen3_tts_server.engine.model.dims import PRESETS, REAL_0_6B, TINY
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.model.tiny import (
    DIMS_MARKER,
    cached_models,
    make_tiny_models,
    speech_tokenizer_config,
    tts_config,
)
from qwen3_tts_server.engine.model.tiny_text import build_text_tokenizer
from qwen3_tts_server.engine.step.stepper import StepEngine
from qwen3_tts_server.values import Audio, Sampling


def _parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_real_preset_has_the_published_sizes() -> None:
    """Built on the meta device: the sizes without allocating 4 GB."""
    import_qwen_tts()
    from qwen_tts.core.models import Qwen3TTSForConditionalGeneration
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
        Qwen3TTSTokenizerV2Model,
    )

    config = tts_config(build_text_tokenizer(), "base", REAL_0_6B)
    with torch.device("meta"):
        model = Qwen3TTSForConditionalGeneration(config)
        codec = Qwen3TTSTokenizerV2Model(speech_tokenizer_config(REAL_0_6B))
    # Qwen3-TTS-12Hz-0.6B-Base: 915 M parameters; its speech tokenizer 154 M.
    assert _parameters(model) == 914_643_008
    assert _parameters(codec) == 153_714_657
    talker = model.talker
    assert len(talker.model.layers) == 28
    assert len(talker.code_predictor.model.layers) == 5
    assert talker.model.layers[0].mlp.gate_proj.weight.shape == (3072, 1024)
    assert talker.model.layers[0].self_attn.k_proj.weight.shape == (8 * 128, 1024)
    assert talker.config.codec_eos_token_id == 2150


def test_cached_models_build_once_and_rebuild_on_another_seed(tmp_path: Path) -> None:
    first = cached_models(tmp_path, seed=0)
    weights = first.base / "model.safetensors"
    built_at = weights.stat().st_mtime_ns
    assert json.loads((first.base / "config.json").read_text())[DIMS_MARKER] == "tiny"

    again = cached_models(tmp_path, seed=0)
    assert again == first
    assert weights.stat().st_mtime_ns == built_at  # reused, not rebuilt

    cached_models(tmp_path, seed=1)
    assert weights.stat().st_mtime_ns != built_at


def test_unknown_preset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"dims must be one of \['real-0.6b', 'real-1.7b', 'tiny'\]"
    ):
        make_tiny_models(tmp_path, dims="huge")
    assert not any(tmp_path.iterdir())


def test_a_narrower_code_predictor_runs_through_the_step_like_stock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_audio: Callable[..., Audio]
) -> None:
    """The 1.7B layout (a predictor narrower than the talker, behind qwen-tts's projection) at
    tiny sizes: the preset's sizes reach the model, and the step's greedy codes equal stock's."""
    narrow = replace(TINY, name="tiny-narrow", predictor_hidden=16, predictor_intermediate=24)
    monkeypatch.setitem(PRESETS, narrow.name, narrow)
    paths = make_tiny_models(tmp_path, dims=narrow.name)
    stock = QwenEngine.load(paths.base, device="cpu", dtype="float32")
    predictor = stock.model("base").model.talker.code_predictor
    assert isinstance(predictor.small_to_mtp_projection, torch.nn.Linear)
    assert predictor.small_to_mtp_projection.weight.shape == (16, TINY.hidden)
    item = SynthItem("A narrower predictor.", "english", stock.create_prompt(make_audio(), None))
    greedy = Sampling(temperature=0)
    steps = StepEngine(stock)
    slot = steps.admit(item, greedy, 10)
    while not slot.done:
        steps.step([slot])
    [reference] = stock.stock_codes([item], greedy, 11)
    assert torch.equal(slot.frames, reference)
