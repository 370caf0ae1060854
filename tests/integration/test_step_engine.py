"""The step engine against stock qwen-tts on the tiny models (README "Reproducibility").

Stock = `Qwen3TTSModel.generate_*` as the server called it before (QwenEngine.stock_codes), the
reference path. The promises held here: greedy codes equal stock's for clone (ICL and x-vector),
voice design and preset speakers, alone and as one row of a mixed step, in float32 and (where the
CPU runs oneDNN bf16) bfloat16; teacher-forced talker logits within a stated tolerance of stock's
at batch 1 and 8; a seeded text gives the same codes alone, twice, and the same in a mixed step
(seeded draws come from counter-keyed noise, so they differ from stock's generator draws).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from qwen3_tts_server.engine.base import (
    CustomItem,
    DesignItem,
    InvalidInput,
    Item,
    ModelUnavailable,
    PromptCorrupt,
    SynthItem,
)
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.serving.guard import EOS, LENGTH
from qwen3_tts_server.engine.step.linear import PackedLinear, PlainLinear, cpu_supports_bf16
from qwen3_tts_server.engine.step.stepper import Slot, StepEngine
from qwen3_tts_server.values import Sampling

BUDGET = 16
GREEDY = Sampling(temperature=0)
SEEDED = Sampling(seed=7)
#: Every sampling knob away from its default.
KNOBS = Sampling(seed=11, temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.3)


@pytest.fixture(scope="module")
def items(voice_prompts: dict[str, bytes]) -> dict[str, Item]:
    return {
        "icl": SynthItem("Hello there, how are you today?", "english", voice_prompts["icl"]),
        "xvec": SynthItem("A second, rather longer text to speak.", "auto", voice_prompts["xvec"]),
        "custom": CustomItem("Preset speakers speak too.", "chinese", "Dylan"),
        "design": DesignItem("A designed voice says this.", "english", "A calm, deep voice."),
    }


def run(engine: StepEngine, slots: list[Slot]) -> list[torch.Tensor]:
    while not all(slot.done for slot in slots):
        engine.step(slots)
    for slot in slots:
        engine.release(slot)
    return [slot.frames.clone() for slot in slots]


def solo(engine: StepEngine, item: Item, sampling: Sampling, budget: int = BUDGET) -> torch.Tensor:
    return run(engine, [engine.admit(item, sampling, budget)])[0]


@pytest.mark.parametrize(
    ("kind", "sampling"),
    [
        (kind, sampling)
        for kind in ("icl", "xvec", "custom", "design")
        for sampling in (GREEDY, Sampling(temperature=0, repetition_penalty=1.5))
    ],
)
def test_greedy_codes_equal_stock_alone(
    stock: QwenEngine,
    engine: StepEngine,
    items: dict[str, Item],
    kind: str,
    sampling: Sampling,
) -> None:
    # stock's max_new_tokens counts the token whose frame is never made: budget + 1
    [reference] = stock.stock_codes([items[kind]], sampling, BUDGET + 1)
    ours = solo(engine, items[kind], sampling)
    assert ours.shape[1] == 4 and 1 <= ours.shape[0] <= BUDGET
    assert torch.equal(ours, reference)


def test_each_item_of_a_mixed_batch_equals_stock_alone(
    stock: QwenEngine, engine: StepEngine, items: dict[str, Item]
) -> None:
    """Four kinds, three models, different prompt lengths, in one step; rows end apart."""
    budgets = {"icl": 9, "xvec": 16, "custom": 12, "design": 5}
    slots = [engine.admit(items[k], GREEDY, budgets[k]) for k in budgets]
    mixed = run(engine, slots)
    for kind, codes in zip(budgets, mixed, strict=True):
        [reference] = stock.stock_codes([items[kind]], GREEDY, budgets[kind] + 1)
        assert torch.equal(codes, reference), kind


@pytest.mark.parametrize("sampling", [SEEDED, KNOBS], ids=["seeded", "knobs"])
def test_a_seeded_text_gives_the_same_codes_alone_twice_and_in_a_mixed_step(
    engine: StepEngine, items: dict[str, Item], sampling: Sampling
) -> None:
    alone = solo(engine, items["icl"], sampling)
    assert torch.equal(solo(engine, items["icl"], sampling), alone)
    others = [engine.admit(items[k], Sampling(), BUDGET) for k in ("xvec", "custom", "design")]
    mixed = run(engine, [*others, engine.admit(items["icl"], sampling, BUDGET)])
    assert torch.equal(mixed[-1], alone)
    other_seed = solo(engine, items["icl"], Sampling(seed=sampling.seed + 1))  # type: ignore[operator]
    assert not torch.equal(other_seed, alone)


def test_slots_join_and_leave_between_steps(engine: StepEngine, items: dict[str, Item]) -> None:
    """A slot admitted while another is half done gets its solo codes; so does the first."""
    alone = {k: solo(engine, items[k], GREEDY) for k in ("icl", "xvec")}
    first = engine.admit(items["icl"], GREEDY, BUDGET)
    for _ in range(5):
        engine.step([first])
    second = engine.admit(items["xvec"], GREEDY, BUDGET)
    run(engine, [first, second])
    assert torch.equal(first.frames, alone["icl"])
    assert torch.equal(second.frames, alone["xvec"])


def test_finish_reasons_and_budget(engine: StepEngine, items: dict[str, Item]) -> None:
    ended = []
    for seed in range(40):  # sampled runs: some stop by EOS, some use the whole budget
        slot = engine.admit(items["xvec"], Sampling(seed=seed), 6)
        run(engine, [slot])
        assert (slot.finish, slot.count == 6) in ((LENGTH, True), (EOS, False))
        ended.append(slot.finish)
    assert {EOS, LENGTH} <= set(ended)


def test_unseeded_slots_draw_their_own_seeds(engine: StepEngine, items: dict[str, Item]) -> None:
    first = engine.admit(items["icl"], Sampling(), BUDGET)
    second = engine.admit(items["icl"], Sampling(), BUDGET)
    assert first.seed != second.seed
    same = engine.admit(items["icl"], Sampling(), BUDGET, seed=first.seed)
    run(engine, [first, second])
    run(engine, [same])
    assert torch.equal(first.frames, same.frames)


def test_bad_requests_are_refused_at_admission(
    tiny_models_dir: Path, engine: StepEngine, voice_prompts: dict[str, bytes]
) -> None:
    with pytest.raises(InvalidInput):
        engine.admit(SynthItem("   ", "english", voice_prompts["icl"]), GREEDY, 4)
    with pytest.raises(InvalidInput):
        engine.admit(SynthItem("Hi.", "klingon", voice_prompts["icl"]), GREEDY, 4)
    with pytest.raises(InvalidInput):
        engine.admit(CustomItem("Hi.", "english", "nobody"), GREEDY, 4)
    with pytest.raises(PromptCorrupt):
        engine.admit(SynthItem("Hi.", "english", b"not a prompt"), GREEDY, 4)
    with pytest.raises(InvalidInput, match="ENGINE_MAX_CONTEXT"):
        engine.admit(SynthItem("Hi.", "english", voice_prompts["icl"]), GREEDY, engine.context)
    base_only = StepEngine(QwenEngine.load(tiny_models_dir / "base", device="cpu"))
    with pytest.raises(ModelUnavailable):
        base_only.admit(DesignItem("Hi.", "english", "calm"), GREEDY, 4)


def test_weights_are_prepacked_on_cpu(engine: StepEngine) -> None:
    lane = engine.lane("base")
    layer = lane.talker_layers[0]
    assert isinstance(layer.o, PackedLinear) and layer.qkv is not None
    plain = StepEngine(engine.engine, prepack=False).lane("base").talker_layers[0]
    assert isinstance(plain.o, PlainLinear) and plain.qkv is None


@pytest.fixture(scope="module")
def bf16(tiny_models_dir: Path, voice_prompts: dict[str, bytes]) -> Iterator[StepEngine]:
    if not cpu_supports_bf16():
        pytest.skip("this CPU has no oneDNN bf16 kernels")
    dirs = [tiny_models_dir / name for name in ("base", "voice_design", "custom_voice")]
    yield StepEngine(QwenEngine.load(*dirs, device="cpu", dtype="bfloat16"))


def test_bf16_greedy_codes_equal_stock_bf16(bf16: StepEngine, items: dict[str, Item]) -> None:
    assert bf16.info().dtype == "bfloat16"
    budgets = {"icl": 16, "xvec": 11, "custom": 14, "design": 8}
    mixed = run(bf16, [bf16.admit(items[k], GREEDY, budgets[k]) for k in budgets])
    for kind, codes in zip(budgets, mixed, strict=True):
        [reference] = bf16.engine.stock_codes([items[kind]], GREEDY, budgets[kind] + 1)
        assert torch.equal(solo(bf16, items[kind], GREEDY, budgets[kind]), reference), kind
        assert torch.equal(codes, reference), kind


def test_bf16_seeded_text_is_reproducible_alone(bf16: StepEngine, items: dict[str, Item]) -> None:
    first = solo(bf16, items["xvec"], SEEDED)
    assert torch.equal(solo(bf16, items["xvec"], SEEDED), first)
