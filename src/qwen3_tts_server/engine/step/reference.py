"""Teacher-forced stock logits: the reference the serving step's logits are held to.

One stock `talker.forward` over the prompt (built by qwen-tts's own input code) followed by the
input embeddings of given frames: the codec embedding of each frame's token plus the 15 code
predictor embeddings of its codes plus the next text embedding, or the pad once the text is used
up (what qwen-tts's `talker.forward` feeds per generation step). Its logits at each frame are
what stock would score given the same history, computed by stock's modules alone; tests and
bench/gpu_check.py compare the step's logits with them (README "Reproducibility").
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from qwen3_tts_server.engine.base import Item
from qwen3_tts_server.engine.model.inputs import TalkerPrompt, capture_prompt
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.model.stock_args import generate_kwargs
from qwen3_tts_server.values import Sampling


@torch.inference_mode()
def reference_logits(stock: QwenEngine, item: Item, frames: torch.Tensor) -> torch.Tensor:
    """Stock's talker logits (F, V) after each of `frames` (F, groups), teacher-forced."""
    call = stock.prepare([item])
    kwargs = generate_kwargs(Sampling(temperature=0), frames.shape[0] + 1)
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
    out = stock_forward(talker, prompt, embeds)
    start = prompt.embeds.shape[1]
    return out.logits[0, start:, :].float()


def stock_forward(talker: Any, prompt: TalkerPrompt, embeds: torch.Tensor | None = None) -> Any:
    """Stock `talker.forward` over `embeds` (default: the prompt alone), from an empty cache:
    what admission ran before the batched prefill (step/prefill.py). Its output holds the
    logits, `past_hidden` and the filled `past_key_values`."""
    embeds = prompt.embeds if embeds is None else embeds
    length = embeds.shape[1]
    device = embeds.device
    return talker.forward(
        inputs_embeds=embeds,
        attention_mask=torch.ones(1, length, dtype=torch.long, device=device),
        past_key_values=DynamicCache(),
        use_cache=True,
        cache_position=torch.arange(length, device=device),
        trailing_text_hidden=prompt.trailing,
        tts_pad_embed=prompt.pad,
    )
