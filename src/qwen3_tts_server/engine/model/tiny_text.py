"""The text tokenizer of the locally built models: a Qwen2-style byte-level BPE trained here.

Why: the published tokenizer is a download; qwen-tts only needs one that tokenises any text and
splits its chat template the way the real one does (see `build_text_tokenizer`). Shared by every
size preset in tiny.py, which only changes the embedding table's size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Qwen2's pre-tokenizer split pattern: the text tokenizer is a Qwen2-style byte-level BPE.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_END_OF_TEXT = "<|endoftext|>"
_SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<tts_pad>", "<tts_text_bos>", "<tts_text_eod>"]
_SAMPLE_SENTENCES = (
    "Hello world, this is a tiny test of speech synthesis.",
    "Good morning, how are you today? Thank you very much!",
    "The quick brown fox jumps over the lazy dog.",
    "你好，世界。今天天气很好。",
    "こんにちは、よろしくお願いします。",
    "안녕하세요, 반갑습니다.",
    "Hallo, schön Sie kennenzulernen.",
    "Bonjour, enchanté de vous rencontrer.",
    "Привет, приятно познакомиться.",
    "Olá, prazer em conhecê-lo.",
    "Hola, encantado de conocerte.",
    "Ciao, piacere di conoscerti.",
    "A calm, deep voice reading numbers: 0 1 2 3 4 5 6 7 8 9.",
)


def build_text_tokenizer() -> Any:
    """A Qwen2-style byte-level BPE trained here on a small multilingual corpus.

    qwen-tts slices `input_ids[:, :3]` ("<|im_start|>assistant\\n") and `[:, -5:]`, so
    "assistant" and "\\n" must each be one token; any text still tokenises (byte fallback).
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import Qwen2TokenizerFast

    rng = np.random.default_rng(0)
    corpus = [
        f"{'assistant' if rng.random() < 0.7 else 'user'}\n{_SAMPLE_SENTENCES[i % 13]}\n"
        for i in range(400)
    ]
    bpe = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        min_frequency=2,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=bpe,
        unk_token=None,
        bos_token=None,
        eos_token=_END_OF_TEXT,
        pad_token=_END_OF_TEXT,
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
        padding_side="left",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": _SPECIAL_TOKENS})
    tokenizer.add_tokens([_END_OF_TEXT], special_tokens=True)
    ids = tokenizer("<|im_start|>assistant\nHi<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    if tokens[:3] != ["<|im_start|>", "assistant", "\u010a"] or tokens[-2:] != [
        "assistant",
        "\u010a",
    ]:
        raise RuntimeError(f"tiny text tokenizer splits the chat template wrongly: {tokens}")
    return tokenizer
