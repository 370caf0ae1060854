"""The batched prefill of new rows (engine/step/prefill.py) against stock's prefill.

Stock = one `talker.forward` per prompt with a `DynamicCache`, what admission ran before. The
prefill runs the prompts of a turn through the step's own layers in one right-padded batch, so
each row must get what stock gives its prompt alone: the K/V of every prompt position, the last
hidden state and the logits that pick the first token (README "Reproducibility": 1e-5 relative
in float32), whatever the other prompts of the batch and their lengths.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from qwen3_tts_server.engine.base import CustomItem, SynthItem
from qwen3_tts_server.engine.step.prefill import prefill_rows
from qwen3_tts_server.engine.step.reference import stock_forward
from qwen3_tts_server.engine.step.stepper import Admission, StepEngine
from qwen3_tts_server.values import Sampling

GREEDY = Sampling(temperature=0)
TOLERANCE = 1e-5  # float32, relative to the largest magnitude (as the step's logits promise)


def _close(ours: torch.Tensor, stock: torch.Tensor) -> bool:
    return float((ours - stock).abs().max() / stock.abs().max()) <= TOLERANCE


@torch.inference_mode()
def _stock_prefill(admission: Admission) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Stock's K/V, last hidden state and last logits for one prompt alone."""
    out = stock_forward(admission.lane.talker, admission.prompt)
    return out.past_key_values, out.past_hidden[0, -1], out.logits[0, -1].float()


def _prefill(admissions: list[Admission], rows: list[int]) -> torch.Tensor:
    lane = admissions[0].lane
    return prefill_rows(
        lane,
        lane.table,
        torch.tensor(rows),
        [admission.prompt.embeds for admission in admissions],
        torch.tensor([admission.tokens for admission in admissions]),
    )


@pytest.mark.parametrize("together", [False, True], ids=["alone", "batched"])
def test_each_row_gets_stocks_kv_hidden_and_first_logits(
    engine: StepEngine, voice_prompts: dict[str, bytes], together: bool
) -> None:
    texts = ["Hello there, how are you today?", "A second, rather longer text to speak."]
    admissions = [
        engine.prepare(SynthItem(texts[0], "english", voice_prompts["icl"]), GREEDY, 4),
        engine.prepare(SynthItem(texts[1], "english", voice_prompts["xvec"]), GREEDY, 4),
    ]
    lengths = [admission.tokens for admission in admissions]
    assert lengths[0] != lengths[1]  # the shorter prompt is padded in the batch
    table = engine.lane("base").table
    rows = [table.take() for _ in admissions]
    try:
        with torch.inference_mode():
            if together:
                logits = _prefill(admissions, rows)
            else:
                logits = torch.cat(
                    [_prefill([a], [r]) for a, r in zip(admissions, rows, strict=True)]
                )
        for i, (admission, row, length) in enumerate(zip(admissions, rows, lengths, strict=True)):
            cache, hidden, stock_logits = _stock_prefill(admission)
            assert int(table.length[row]) == length
            assert _close(table.hidden[row], hidden), f"hidden state of row {i}"
            assert _close(logits[i], stock_logits), f"first-token logits of row {i}"
            for layer, ((keys, values), stock_layer) in enumerate(
                zip(table.kv, cache.layers, strict=True)
            ):
                assert stock_layer.keys is not None and stock_layer.values is not None
                assert _close(keys[row, :, :length], stock_layer.keys[0]), (i, layer, "K")
                assert _close(values[row, :, :length], stock_layer.values[0]), (i, layer, "V")
    finally:
        for row in rows:
            table.give_back(row)


def test_a_failed_prefill_holds_no_row_on_any_model(
    engine: StepEngine, voice_prompts: dict[str, bytes]
) -> None:
    """All or nothing: the base model's rows were prefilled when the preset-speaker model found
    no free row; they are given back."""
    base = engine.prepare(SynthItem("Hello.", "english", voice_prompts["xvec"]), GREEDY, 4)
    custom = engine.prepare(CustomItem("Hi.", "english", "Dylan"), GREEDY, 4)
    base_table, custom_table = base.lane.table, custom.lane.table
    free = base_table.free_rows
    taken = [custom_table.take() for _ in range(custom_table.free_rows)]
    try:
        with pytest.raises(RuntimeError, match="free slot rows"):
            engine.prefill([base, custom])
        assert base_table.free_rows == free
    finally:
        for row in taken:
            custom_table.give_back(row)
