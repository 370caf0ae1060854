"""The batched sampler against Hugging Face's logits processors, and its counter-keyed noise.

HF's classes are what stock qwen-tts samples through; the batched rules must keep exactly the
tokens they keep and score them the same, row by row, whatever each row's parameters. The noise
must depend on (seed, frame, codebook) alone, never on the row or the batch, and its draws must
follow the softmax (a chi-square test on a fixed seed range, so the test is deterministic).
"""

from __future__ import annotations

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

from qwen3_tts_server.engine.step.noise import uniform
from qwen3_tts_server.engine.step.sampling import (
    NO_TOP_P,
    RowParams,
    choose,
    talker_rules,
    warp,
)

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
        seeds=torch.tensor(seeds),
    )


def _rules(logits: torch.Tensor, histories: list[torch.Tensor]) -> torch.Tensor:
    seen = torch.zeros(len(ROWS), VOCAB, dtype=torch.bool)
    for i, history in enumerate(histories):
        seen[i, history] = True
    suppress = torch.zeros(len(ROWS), VOCAB, dtype=torch.bool)
    suppress[:, SUPPRESS] = True
    return talker_rules(
        logits,
        seen=seen,
        penalty=torch.tensor([r[3] for r in ROWS]),
        generated=torch.tensor([r[4] for r in ROWS]),
        eos=torch.full((len(ROWS),), EOS),
        suppress=suppress,
    )


@pytest.mark.parametrize("trial", range(20))
def test_rules_keep_and_score_what_hf_processors_do(trial: int) -> None:
    generator = torch.Generator().manual_seed(trial)
    logits = torch.randn(len(ROWS), VOCAB, generator=generator) * 3
    histories = [torch.randint(0, VOCAB, (row[4],), generator=generator) for row in ROWS]
    ours = warp(_rules(logits, histories), _params(ROWS, list(range(len(ROWS)))))
    for i, row in enumerate(ROWS):
        hf = _hf(row, histories[i])(
            cast(torch.LongTensor, histories[i].unsqueeze(0)),
            cast(torch.FloatTensor, logits[i : i + 1].clone()),
        )[0]
        assert torch.equal(torch.isinf(ours[i]), torch.isinf(hf)), (trial, row)
        kept = ~torch.isinf(hf)
        assert torch.allclose(ours[i][kept], hf[kept], rtol=1e-6, atol=1e-6)


def test_greedy_rows_take_the_lowest_index_of_the_best_score() -> None:
    scores = torch.tensor([[0.0, 2.0, 2.0, 1.0]])
    params = RowParams(
        temperature=torch.ones(1),
        sampled=torch.zeros(1),
        top_k=torch.tensor([4]),
        top_p_cut=torch.tensor([NO_TOP_P]),
        seeds=torch.tensor([123]),
    )
    assert int(choose(scores, params, torch.tensor([9]), 3)[0]) == 1


def test_noise_depends_on_seed_frame_and_group_only() -> None:
    seeds = torch.tensor([5, 7, 5, 2**62 + 3])
    frames = torch.tensor([0, 3, 0, 11])
    draws = uniform(seeds, frames, 4, 50)
    assert torch.equal(draws[0], draws[2])  # same key at another row
    assert torch.equal(uniform(seeds[3:], frames[3:], 4, 50)[0], draws[3])  # alone
    assert not torch.equal(uniform(seeds, frames, 5, 50)[0], draws[0])  # another codebook
    assert not torch.equal(uniform(seeds, frames + 1, 4, 50)[0], draws[0])  # another frame
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
        seeds=torch.arange(draws),
    )
    tokens = choose(
        scores.expand(draws, -1).clone(), params, torch.zeros(draws, dtype=torch.long), 0
    )
    observed = np.bincount(tokens.numpy(), minlength=6)
    expected = torch.softmax(scores, -1).numpy() * draws
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 20.5  # the 0.1 % critical value for 5 degrees of freedom
