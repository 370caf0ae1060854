"""Teacher-forced talker logits of the serving step against stock qwen-tts (README
"Reproducibility": the stated tolerance).

The reference (engine/step/reference.py) is one stock `talker.forward` over the prompt and the
frames our step made; its logits at each frame are what stock would score given the same
history. Ours come from the step (the table keeps them for tests).
Checked for a row alone and for 8 rows of different prompts sharing every step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qwen3_tts_server.engine.base import CustomItem, DesignItem, Item, SynthItem
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.step.linear import cpu_supports_bf16
from qwen3_tts_server.engine.step.reference import reference_logits
from qwen3_tts_server.engine.step.stepper import Slot, StepEngine
from qwen3_tts_server.values import Sampling

GREEDY = Sampling(temperature=0)
FRAMES = 12
#: The promise (README): max |ours - stock| over every logit, relative to stock's largest |logit|.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def ours(engine: StepEngine, slots: list[Slot]) -> list[torch.Tensor]:
    """Each slot's talker logits after each of its frames, stepping all slots together."""
    kept: list[list[torch.Tensor]] = [[] for _ in slots]
    while not all(slot.done for slot in slots):
        live = [(i, slot) for i, slot in enumerate(slots) if not slot.done]
        engine.step(slots)
        for i, slot in live:
            table = slot.lane.table
            assert table.logits is not None
            kept[i].append(table.logits[slot.row].clone())
    for slot in slots:
        engine.release(slot)
    return [torch.stack(rows) for rows in kept]


def worst_error(engine: StepEngine, items: list[Item]) -> float:
    slots = [engine.admit(item, GREEDY, FRAMES) for item in items]
    logits = ours(engine, slots)
    errors = []
    for item, slot, mine in zip(items, slots, logits, strict=True):
        reference = reference_logits(engine.engine, item, slot.frames)
        assert mine.shape == reference.shape
        errors.append(float((mine - reference).abs().max() / reference.abs().max()))
    return max(errors)


def mixed_items(voice_prompts: dict[str, bytes]) -> list[Item]:
    return [
        SynthItem("Hello there, how are you today?", "english", voice_prompts["icl"]),
        SynthItem("A second, rather longer text to speak.", "auto", voice_prompts["xvec"]),
        CustomItem("Preset speakers speak too.", "chinese", "Dylan"),
        DesignItem("A designed voice says this.", "english", "A calm, deep voice."),
        SynthItem("Short.", "english", voice_prompts["xvec"]),
        SynthItem("The fifth row of the step.", "english", voice_prompts["icl"]),
        CustomItem("Seven.", "english", "Dylan"),
        DesignItem("And the eighth one here.", "english", "A bright voice."),
    ]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_teacher_forced_logits_within_tolerance_at_batch_1_and_8(
    tiny_models_dir: Path, voice_prompts: dict[str, bytes], dtype: str
) -> None:
    if dtype == "bfloat16" and not cpu_supports_bf16():
        pytest.skip("this CPU has no oneDNN bf16 kernels")
    dirs = [tiny_models_dir / name for name in ("base", "voice_design", "custom_voice")]
    engine = StepEngine(QwenEngine.load(*dirs, device="cpu", dtype=dtype), keep_logits=True)
    items = mixed_items(voice_prompts)
    tolerance = TOLERANCE[getattr(torch, dtype)]
    alone, batch = worst_error(engine, items[:1]), worst_error(engine, items)
    print(f"{dtype}: worst relative logit error alone {alone:.2e}, in a step of 8 {batch:.2e}")
    assert alone <= tolerance
    assert batch <= tolerance
