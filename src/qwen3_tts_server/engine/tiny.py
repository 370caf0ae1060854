"""Tiny Qwen3-TTS models: the real architecture and repository layout, random weights, ~1.5 MB.

Why: tests and the offline demo need the *real* qwen-tts code path (tokenisers, prompt encoding,
batched generation, decoding, every error) without downloading gigabytes. These directories load
through the unmodified `Qwen3TTSModel.from_pretrained(dir)` exactly like the published repos.
The audio is noise, but shapes, sample rate, frame timing, batching, prompts and errors are real.

What mirrors the published models: the codec special ids sit at the same offsets above the
codebook (pad, bos, eos, think..., the ten languages and the two dialects), the CustomVoice model
has the nine real preset speakers with their dialect flags (dylan → Beijing, eric → Sichuan), and
every API language is accepted. What does not: all dimensions are tiny and the weights are
random, so EOS comes at random; the engine's `max_new_tokens` bound is what ends generation.

`qwen3-tts-server models make-tiny DIR` calls `make_tiny_models`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qwen3_tts_server.engine.compat import import_qwen_tts
from qwen3_tts_server.engine.qwen import TINY_MARKER, ModelPaths

VARIANTS = ("base", "voice_design", "custom_voice")

SAMPLE_RATE = 24000
CODEBOOK = 64  # real: 2048
CODE_GROUPS = 4  # real: 16
HIDDEN = 32  # real: 1024 (0.6B) / 2048 (1.7B)
HEAD_DIM = 16

# Codec ids of the published models minus their codebook size (2048): same layout, tiny codebook.
_PAD, _BOS, _EOS, _THINK, _NOTHINK, _THINK_BOS, _THINK_EOS = 100, 101, 102, 106, 107, 108, 109
_LANGUAGE_OFFSETS = {
    "english": 2,
    "german": 5,
    "spanish": 6,
    "chinese": 7,
    "japanese": 10,
    "french": 13,
    "sichuan_dialect": 14,
    "korean": 16,
    "russian": 21,
    "italian": 22,
    "portuguese": 23,
    "beijing_dialect": 26,
}
_SPEAKER_OFFSETS = {
    "aiden": 813,
    "sohee": 816,
    "ono_anna": 825,
    "eric": 827,
    "dylan": 830,
    "uncle_fu": 962,
    "ryan": 1013,
    "vivian": 1017,
    "serena": 1018,
}
_SPEAKER_DIALECTS: dict[str, str | bool] = {name: False for name in _SPEAKER_OFFSETS} | {
    "eric": "sichuan_dialect",
    "dylan": "beijing_dialect",
}

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
_GENERATION_CONFIG = {
    "do_sample": True,
    "top_k": 50,
    "top_p": 1.0,
    "temperature": 0.9,
    "repetition_penalty": 1.05,
    "subtalker_dosample": True,
    "subtalker_top_k": 50,
    "subtalker_top_p": 1.0,
    "subtalker_temperature": 0.9,
    "max_new_tokens": 2048,
}


def make_tiny_models(out_dir: str | Path, seed: int = 0) -> ModelPaths:
    """Build base/, voice_design/ and custom_voice/ under `out_dir`; a few seconds on a CPU.

    The same seed gives byte-identical weights. An existing variant directory is replaced only
    when it holds a tiny model made here (its config.json carries TINY_MARKER) or is empty; any
    other existing directory raises FileExistsError so a mistyped path never loses real models.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    for variant in VARIANTS:
        _check_replaceable(root / variant)
    import_qwen_tts()
    with torch.random.fork_rng(devices=[]):
        text_tokenizer = _text_tokenizer()
        torch.manual_seed(seed)
        speech_tokenizer = _speech_tokenizer()
        for index, variant in enumerate(VARIANTS):
            staging = Path(tempfile.mkdtemp(prefix=f".{variant}-", dir=root))
            try:
                torch.manual_seed(seed * len(VARIANTS) + index)
                _write_variant(staging, variant, seed, text_tokenizer, speech_tokenizer)
                if (root / variant).exists():
                    shutil.rmtree(root / variant)
                staging.rename(root / variant)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return ModelPaths(
        base=root / "base", voice_design=root / "voice_design", custom_voice=root / "custom_voice"
    )


def _check_replaceable(path: Path) -> None:
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        config = None
    if not isinstance(config, dict) or TINY_MARKER not in config:
        raise FileExistsError(
            f"{path} exists and is not a tiny model made by qwen3-tts-server; "
            "choose an empty or new directory"
        )


def _text_tokenizer() -> Any:
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


def _speech_tokenizer() -> Any:
    """The 12 Hz codec (Mimi encoder + decoder) at tiny size, audible random weights."""
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import (
        Qwen3TTSTokenizerV2Config,
    )
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
        Qwen3TTSTokenizerV2Model,
    )

    shared = {
        "codebook_size": CODEBOOK,
        "codebook_dim": 16,
        "hidden_size": HIDDEN,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": HEAD_DIM,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "max_position_embeddings": 8000,
        "num_quantizers": CODE_GROUPS,
        "num_semantic_quantizers": 1,
    }
    encoder = shared | {
        "sampling_rate": SAMPLE_RATE,
        "frame_rate": 12.5,
        "audio_channels": 1,
        "num_filters": 4,
        "num_residual_layers": 1,
        "upsampling_ratios": [8, 6, 5, 4],
        "kernel_size": 7,
        "last_kernel_size": 3,
        "residual_kernel_size": 3,
        "dilation_growth_rate": 2,
        "use_causal_conv": True,
        "compress": 2,
        "vector_quantization_hidden_dimension": 16,
        "upsample_groups": HIDDEN,  # must divide hidden_size
        "sliding_window": 250,
        "use_streaming": False,
    }
    decoder = shared | {
        "latent_dim": HIDDEN,
        "rope_theta": 10000,
        "attention_bias": False,
        "sliding_window": 72,
        "hidden_act": "silu",
        "layer_scale_initial_scale": 0.01,
        "rms_norm_eps": 1e-5,
        "semantic_codebook_size": CODEBOOK,
        "upsample_rates": [8, 5, 4, 3],
        "upsampling_ratios": [2, 2],
        "decoder_dim": 64,
        "attention_dropout": 0.0,
    }
    config = Qwen3TTSTokenizerV2Config(
        encoder_config=encoder,
        decoder_config=decoder,
        encoder_valid_num_quantizers=CODE_GROUPS,
        input_sample_rate=SAMPLE_RATE,
        output_sample_rate=SAMPLE_RATE,
        decode_upsample_rate=1920,
        encode_downsample_rate=1920,
    )
    model = Qwen3TTSTokenizerV2Model(config).eval()
    with torch.no_grad():
        # Codebooks start as zeros: give them values so encode/decode are not degenerate.
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith(("embedding_sum", "embed_sum")):
                tensor.copy_(torch.randn(tensor.shape))
        # Random init decodes to ~1e-8 amplitude; scale the last conv to a clearly audible level.
        last = model.decoder.decoder[-1].conv
        if last.bias is not None:
            last.bias.zero_()
        codes = torch.randint(0, CODEBOOK, (1, CODE_GROUPS, 20))
        std = float(model.decoder(codes).std())
        if std > 0:
            last.weight.mul_(0.2 / std)
    return model


def _tts_config(text_tokenizer: Any, variant: str) -> Any:
    from qwen_tts.core.models import Qwen3TTSConfig

    speakers = variant == "custom_voice"
    token_id = text_tokenizer.convert_tokens_to_ids
    talker = {
        # ids in the top 1024 of the codec vocabulary are suppressed except EOS
        "vocab_size": CODEBOOK + 1024,
        "hidden_size": HIDDEN,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000,
        "rope_scaling": {"rope_type": "default", "mrope_section": [4, 2, 2], "interleaved": True},
        "num_code_groups": CODE_GROUPS,
        "text_vocab_size": len(text_tokenizer),
        "text_hidden_size": HIDDEN,
        "position_id_per_seconds": 13,
        "codec_pad_id": CODEBOOK + _PAD,
        "codec_bos_id": CODEBOOK + _BOS,
        "codec_eos_token_id": CODEBOOK + _EOS,
        "codec_think_id": CODEBOOK + _THINK,
        "codec_nothink_id": CODEBOOK + _NOTHINK,
        "codec_think_bos_id": CODEBOOK + _THINK_BOS,
        "codec_think_eos_id": CODEBOOK + _THINK_EOS,
        "codec_language_id": {name: CODEBOOK + off for name, off in _LANGUAGE_OFFSETS.items()},
        "spk_id": {n: CODEBOOK + off for n, off in _SPEAKER_OFFSETS.items()} if speakers else {},
        "spk_is_dialect": dict(_SPEAKER_DIALECTS) if speakers else {},
        "code_predictor_config": {
            "vocab_size": CODEBOOK,
            "hidden_size": HIDDEN,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": HEAD_DIM,
            "max_position_embeddings": 4096,
            "rope_theta": 1000000,
            "num_code_groups": CODE_GROUPS,
            "layer_types": ["full_attention"],
        },
    }
    speaker_encoder = {
        "mel_dim": 128,
        "enc_dim": HIDDEN,  # the x-vector is fed to the talker as one input embedding
        "enc_channels": [32, 32, 32, 32, 96],
        "enc_kernel_sizes": [5, 3, 3, 3, 1],
        "enc_dilations": [1, 2, 3, 4, 1],
        "enc_attention_channels": 16,
        "enc_res2net_scale": 8,
        "enc_se_channels": 16,
        "sample_rate": SAMPLE_RATE,
    }
    return Qwen3TTSConfig(
        talker_config=talker,
        speaker_encoder_config=speaker_encoder,
        tokenizer_type="qwen3_tts_tokenizer_12hz",
        # "0b6" makes generate_custom_voice drop `instruct`; "1b7" keeps that path exercised.
        tts_model_size="0b6" if variant == "base" else "1b7",
        tts_model_type=variant,
        im_start_token_id=token_id("<|im_start|>"),
        im_end_token_id=token_id("<|im_end|>"),
        tts_pad_token_id=token_id("<tts_pad>"),
        tts_bos_token_id=token_id("<tts_text_bos>"),
        tts_eos_token_id=token_id("<tts_text_eod>"),
        assistant_token_id=token_id("assistant"),
    )


def _write_variant(
    out: Path, variant: str, seed: int, text_tokenizer: Any, speech_tokenizer: Any
) -> None:
    from qwen_tts.core.models import Qwen3TTSForConditionalGeneration, Qwen3TTSProcessor
    from transformers import EncodecFeatureExtractor

    model = Qwen3TTSForConditionalGeneration(_tts_config(text_tokenizer, variant)).eval()
    model.save_pretrained(out, safe_serialization=True)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    # Upstream bug: the speaker-encoder config saves "model_type": "" but its __init__ does not
    # accept it, so the file would not load back. The published repos omit it too.
    config["speaker_encoder_config"].pop("model_type", None)
    config[TINY_MARKER] = seed
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    (out / "generation_config.json").write_text(json.dumps(_GENERATION_CONFIG, indent=2))
    Qwen3TTSProcessor(tokenizer=text_tokenizer).save_pretrained(out)

    speech_dir = out / "speech_tokenizer"
    speech_tokenizer.save_pretrained(speech_dir, safe_serialization=True)
    EncodecFeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, return_attention_mask=True
    ).save_pretrained(speech_dir)
