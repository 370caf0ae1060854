"""Teacher-forced talker logits of the serving step against stock qwen-tts (README
"Reproducibility": the stated tolerance).

The reference is one stock `talker.forward` over the prompt followed by the input embeddings of
the frames our step made (the codec embedding of the frame's token plus the 15 predictor
embeddings of its codes plus the next text embedding, or the pad once the text is used up: what
qwen-tts's `talker.forward` feeds per generation step). Its logits at each frame are what stock
would score given the same history; ours come from the step (the table keeps them for tests).
Checked for a row alone and for 8 rows of different prompts sharing every step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers.cache_utils import DynamicCache

from qwen3_tts_server.engine.base import CustomItem, DesignItem, Item, SynthItem
from qwen3_tts_server.engine.inputs import capture_prompt
from qwen3_tts_server.engine.linear import cpu_supports_bf16
from qwen3_tts_server.engine.qwen import QwenEngine
from qwen3_tts_server.engine.step.stepper import Slot, StepEngine
from qwen3_tts_server.engine.stock_args import generate_kwargs
from qwen3_tts_server.values import Sampling

GREEDY = Sampling(temperature=0)
FRAMES = 12
#: The promise (README): max |ours - stock| over every logit, relative to stock's largest |logit|.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


@torch.inference_mode()
def reference_logits(engine: StepEngine, item: Item, frames: torch.Tensor) -> torch.Tensor:
    """Stock's talker logits (F, V) after each of `frames` (F, groups), teacher-forced."""
    call = engine.engine.prepare([item])
    kwargs = generate_kwargs(GREEDY, frames.shape[0] + 1)
    prompt = capture_prompt(call.model, lambda _: call.run(kwargs))
    talker = call.model.model.talker
    device = prompt.embeds.device
    codes = frames.to(device)
    groups = codes.shape[1]
    embeddings = talker.code_predictor.get_input_embeddings()
    parts = [talker.get_input_embeddings()(codes[:, :1])] + [
        embeddings[g](codes[:, g + 1 : g + 2]) for g in range(groups - 1)
    ]
    fed = torch.cat(parts, dim=1).sum(1)
    text = prompt.trailing[0]
    after = torch.stack(
        [text[k] if k < text.shape[0] else prompt.pad[0, 0] for k in range(codes.shape[0])]
    )
    embeds = torch.cat([prompt.embeds, (fed + after).unsqueeze(0)], dim=1)
    length = embeds.shape[1]
    out = talker.forward(
        inputs_embeds=embeds,
        attention_mask=torch.ones(1, length, dtype=torch.long, device=device),
        past_key_values=DynamicCache(),
        use_cache=True,
        cache_position=torch.arange(length, device=device),
        trailing_text_hidden=prompt.trailing,
        tts_pad_embed=prompt.pad,
    )
    start = prompt.embeds.shape[1]
    return out.logits[0, start:, :].float()


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
        reference = reference_logits(engine, item, slot.frames)
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
