"""The batched sampler against Hugging Face's logits processors, and its counter-keyed noise.

HF's classes are what stock qwen-tts samples through; the batched rules must keep exactly the
tokens they keep and score them the same, row by row, whatever each row's parameters. The noise
must depend on (seed, frame, codebook) alone, never on the row or the batch, and its draws must
follow the softmax (a chi-square test on a fixed seed range, so the test is deterministic).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from qwen3_tts_server.engine.step.noise import row_key, uniform
from qwen3_tts_server.engine.step.sampling import (
    NO_TOP_P,
    TOP_K_WINDOW,
    RowParams,
    choose,
    talker_rules,
    warp,
)
from qwen3_tts_server.engine.step.table import SlotTable
from qwen3_tts_server.values import Sampling

VOCAB = 96
EOS = 90
SUPPRESS = list(range(91, 96))
#: (temperature, top_k, top_p, repetition_penalty, tokens generated so far) per row.
ROWS = [
    (1.0, 50, 1.0, 1.05, 0),
    (0.7, 20, 0.8, 1.3, 1),
    (1.3, 0, 0.9, 1.0, 5),
    (0.9, 5, 1.0, 2.0, 2),
    (1.0, 1, 0.5, 1.1, 7),
    (1.0, 0, 1e-9, 1.0, 3),  # 1 - top_p rounds to 1.0: top-p keeps at least the best token
]


def _hf(row: tuple[float, int, float, float, int], ids: torch.Tensor) -> LogitsProcessorList:
    temperature, top_k, top_p, penalty, _ = row
    out = LogitsProcessorList()
    if penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(penalty=penalty))
    out.append(MinNewTokensLengthLogitsProcessor(0, 2, torch.tensor([EOS])))
    out.append(SuppressTokensLogitsProcessor(SUPPRESS))
    if temperature != 1.0:
        out.append(TemperatureLogitsWarper(temperature))
    if top_k:
        out.append(TopKLogitsWarper(top_k=top_k))
    if top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=top_p))
    return out


def _params(rows: list[tuple[float, int, float, float, int]], seeds: list[int]) -> RowParams:
    return RowParams(
        temperature=torch.tensor([r[0] for r in rows]),
        sampled=torch.ones(len(rows)),
        top_k=torch.tensor([r[1] or VOCAB for r in rows]),
        top_p_cut=torch.tensor([1 - r[2] if r[2] < 1 else NO_TOP_P for r in rows]),
        keys=row_key(torch.tensor(seeds)),
    )


def _rules(
    logits: torch.Tensor,
    histories: list[torch.Tensor],
    rows: list[tuple[float, int, float, float, int]] = ROWS,
) -> torch.Tensor:
    seen = torch.zeros(len(rows), VOCAB, dtype=torch.bool)
    for i, history in enumerate(histories):
        seen[i, history] = True
    suppress = torch.zeros(len(rows), VOCAB, dtype=torch.bool)
    suppress[:, SUPPRESS] = True
    return talker_rules(
        logits,
        seen=seen,
        penalty=torch.tensor([r[3] for r in rows]),
        generated=torch.tensor([r[4] for r in rows]),
        eos=torch.full((len(rows),), EOS),
        suppress=suppress,
    )


def _assert_like_hf(
    ours: torch.Tensor,
    logits: torch.Tensor,
    rows: list[tuple[float, int, float, float, int]],
    histories: list[torch.Tensor],
) -> None:
    for i, row in enumerate(rows):
        hf = _hf(row, histories[i])(
            cast(torch.LongTensor, histories[i].unsqueeze(0)),
            cast(torch.FloatTensor, logits[i : i + 1].clone()),
        )[0]
        assert torch.equal(torch.isinf(ours[i]), torch.isinf(hf)), row
        kept = ~torch.isinf(hf)
        assert torch.allclose(ours[i][kept], hf[kept], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("trial", range(20))
def test_rules_keep_and_score_what_hf_processors_do(trial: int) -> None:
    generator = torch.Generator().manual_seed(trial)
    logits = torch.randn(len(ROWS), VOCAB, generator=generator) * 3
    histories = [torch.randint(0, VOCAB, (row[4],), generator=generator) for row in ROWS]
    ours = warp(_rules(logits, histories), _params(ROWS, list(range(len(ROWS)))))
    _assert_like_hf(ours, logits, ROWS, histories)


#: Rows that may take the top-k window: top-k within it, no top-p (a greedy row's top-k is 1).
WINDOW_ROWS = [
    (1.0, 50, 1.0, 1.0, 0),
    (0.7, TOP_K_WINDOW, 1.0, 1.0, 0),
    (1.3, 1, 1.0, 1.0, 0),
    (0.9, 5, 1.0, 1.0, 0),
]


@pytest.mark.parametrize("trial", range(10))
def test_top_k_window_keeps_what_hf_top_k_keeps_ties_included(trial: int) -> None:
    """Logits rounded to bfloat16 (what a bf16 model's heads give) tie often; the last trials
    tie whole blocks of scores across the window's edge, which top-k must keep whole."""
    generator = torch.Generator().manual_seed(trial)
    logits = (torch.randn(len(WINDOW_ROWS), VOCAB, generator=generator) * 3).bfloat16().float()
    if trial >= 7:
        logits[:, : VOCAB - 8] = logits.max(dim=1, keepdim=True).values
    histories = [torch.zeros(0, dtype=torch.long) for _ in WINDOW_ROWS]
    params = _params(WINDOW_ROWS, list(range(len(WINDOW_ROWS))))
    ours = warp(_rules(logits, histories, WINDOW_ROWS), params, window=True)
    _assert_like_hf(ours, logits, WINDOW_ROWS, histories)


def test_a_step_takes_the_window_only_while_no_row_needs_the_full_sort() -> None:
    lane = SimpleNamespace(
        device=torch.device("cpu"),
        dtype=torch.float32,
        config=SimpleNamespace(hidden_size=8, vocab_size=VOCAB),
        groups=4,
        kv_shape=(1, 4),
        talker_layers=[],
        predictor_kv_shape=(1, 5, 4),
        predictor_layers=[],
    )
    table = SlotTable(lane, rows=3, context=16)
    first, second = table.take(), table.take()
    table.set_sampling(first, Sampling(), seed=1)  # the defaults: top-k 50, top-p 1
    table.set_sampling(second, Sampling(temperature=0.0), seed=2)  # greedy: top-k 1
    assert table.windowed(2) and int(table.top_k[second]) == 1
    third = table.take()
    for needs_sort in (Sampling(top_p=0.9), Sampling(top_k=0), Sampling(top_k=TOP_K_WINDOW + 1)):
        table.set_sampling(third, needs_sort, seed=3)
        assert not table.windowed(3), needs_sort
        assert table.windowed(2)
    table.give_back(third)
    assert table.windowed(3)


def test_greedy_rows_take_the_lowest_index_of_the_best_score() -> None:
    scores = torch.tensor([[0.0, 2.0, 2.0, 1.0]])
    params = RowParams(
        temperature=torch.ones(1),
        sampled=torch.zeros(1),
        top_k=torch.tensor([4]),
        top_p_cut=torch.tensor([NO_TOP_P]),
        keys=row_key(torch.tensor([123])),
    )
    assert int(choose(scores, params, torch.tensor([9]), 3)[0]) == 1


def test_noise_depends_on_seed_frame_and_group_only() -> None:
    seeds = torch.tensor([5, 7, 5, 2**62 + 3])
    frames = torch.tensor([0, 3, 0, 11])
    keys = row_key(seeds)
    draws = uniform(keys, frames, 4, 50)
    assert torch.equal(draws[0], draws[2])  # same key at another row
    assert torch.equal(uniform(keys[3:], frames[3:], 4, 50)[0], draws[3])  # alone
    assert not torch.equal(uniform(keys, frames, 5, 50)[0], draws[0])  # another codebook
    assert not torch.equal(uniform(keys, frames + 1, 4, 50)[0], draws[0])  # another frame
    assert float(draws.min()) > 0 and float(draws.max()) < 1


def test_sampled_tokens_follow_the_softmax() -> None:
    """Chi-square over 20,000 draws (seeds 0..19,999) against softmax of fixed scores."""
    scores = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    draws = 20_000
    params = RowParams(
        temperature=torch.ones(draws),
        sampled=torch.ones(draws),
        top_k=torch.full((draws,), 6),
        top_p_cut=torch.full((draws,), NO_TOP_P),
        keys=row_key(torch.arange(draws)),
    )
    tokens = choose(
        scores.expand(draws, -1).clone(), params, torch.zeros(draws, dtype=torch.long), 0
    )
    observed = np.bincount(tokens.numpy(), minlength=6)
    expected = torch.softmax(scores, -1).numpy() * draws
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 20.5  # the 0.1 % critical value for 5 degrees of freedom
