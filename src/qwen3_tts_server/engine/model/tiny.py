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

The same builder makes the real-dimension random model that speed work measures
(`dims="real-0.6b"`, see dims.py): the published 0.6B sizes, ~2.4 GB on disk, about a minute to
build; `cached_models` builds it once under a data folder and reuses it.

`qwen3-tts-server models make-tiny [--dims real-0.6b] DIR` calls `make_tiny_models`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from qwen3_tts_server.engine.model.compat import import_qwen_tts
from qwen3_tts_server.engine.model.dims import PRESETS, TINY, ModelDims
from qwen3_tts_server.engine.model.model_files import ModelPaths, is_complete_model_dir
from qwen3_tts_server.engine.model.qwen import TINY_MARKER
from qwen3_tts_server.engine.model.tiny_text import build_text_tokenizer

VARIANTS = TINY.variants
#: Key in a built model's config.json next to TINY_MARKER: the name of its size preset.
DIMS_MARKER = "qwen3_tts_server_tiny_dims"
SAMPLE_RATE = 24000

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


def make_tiny_models(out_dir: str | Path, seed: int = 0, dims: str = "tiny") -> ModelPaths:
    """Build the preset's variants (tiny: base/, voice_design/, custom_voice/) under `out_dir`.

    Tiny takes a few seconds on a CPU, real-0.6b about a minute (base/ only). The same seed and
    preset give byte-identical weights. An existing variant directory is replaced only when it
    holds a model made here (its config.json carries TINY_MARKER) or is empty; any other existing
    directory raises FileExistsError so a mistyped path never loses real models.
    """
    preset = _preset(dims)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    for variant in preset.variants:
        _check_replaceable(root / variant)
    import_qwen_tts()
    with torch.random.fork_rng(devices=[]):
        tokenizer = build_text_tokenizer()
        torch.manual_seed(seed)
        speech_tokenizer = _speech_tokenizer(preset)
        for index, variant in enumerate(VARIANTS):
            if variant not in preset.variants:
                continue
            staging = Path(tempfile.mkdtemp(prefix=f".{variant}-", dir=root))
            try:
                torch.manual_seed(seed * len(VARIANTS) + index)
                _write_variant(staging, variant, seed, preset, tokenizer, speech_tokenizer)
                if (root / variant).exists():
                    shutil.rmtree(root / variant)
                staging.rename(root / variant)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return _paths(root, preset)


def cached_models(out_dir: str | Path, seed: int = 0, dims: str = "tiny") -> ModelPaths:
    """The preset's models under `out_dir`, built only when missing or made with another seed
    or preset: benchmarks call this so the real-0.6b model is built once per data folder."""
    preset = _preset(dims)
    root = Path(out_dir)
    for variant in preset.variants:
        config = _built_config(root / variant)
        if (
            config is None
            or config.get(TINY_MARKER) != seed
            or config.get(DIMS_MARKER, TINY.name) != preset.name
            or not is_complete_model_dir(root / variant)
        ):
            return make_tiny_models(root, seed=seed, dims=dims)
    return _paths(root, preset)


def _preset(dims: str) -> ModelDims:
    try:
        return PRESETS[dims]
    except KeyError:
        raise ValueError(f"dims must be one of {sorted(PRESETS)}, got {dims!r}") from None


def _paths(root: Path, preset: ModelDims) -> ModelPaths:
    built = {variant: root / variant for variant in preset.variants}
    return ModelPaths(
        base=built["base"],
        voice_design=built.get("voice_design"),
        custom_voice=built.get("custom_voice"),
    )


def _built_config(path: Path) -> dict[str, Any] | None:
    """The config.json of a model made here, else None."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and TINY_MARKER in config else None


def _check_replaceable(path: Path) -> None:
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return
    if _built_config(path) is None:
        raise FileExistsError(
            f"{path} exists and is not a tiny model made by qwen3-tts-server; "
            "choose an empty or new directory"
        )


def _speech_tokenizer(dims: ModelDims) -> Any:
    """The 12 Hz codec (Mimi encoder + decoder) at the preset's size, audible random weights."""
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
        Qwen3TTSTokenizerV2Model,
    )

    model = Qwen3TTSTokenizerV2Model(speech_tokenizer_config(dims)).eval()
    with torch.no_grad():
        # Codebooks start as zeros: give them values so encode/decode are not degenerate.
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith(("embedding_sum", "embed_sum")):
                tensor.copy_(torch.randn(tensor.shape))
        # Random init decodes to ~1e-8 amplitude; scale the last conv to a clearly audible level.
        last = model.decoder.decoder[-1].conv
        if last.bias is not None:
            last.bias.zero_()
        codes = torch.randint(0, dims.codebook, (1, dims.code_groups, 20))
        std = float(model.decoder(codes).std())
        if std > 0:
            last.weight.mul_(0.2 / std)
    return model


def speech_tokenizer_config(dims: ModelDims) -> Any:
    """The speech tokenizer's config at the preset's size."""
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import (
        Qwen3TTSTokenizerV2Config,
    )

    shared = {
        "codebook_size": dims.codebook,
        "max_position_embeddings": 8000,
        "num_quantizers": dims.code_groups,
        "num_semantic_quantizers": 1,
    } | dims.speech_shared
    encoder = (
        shared
        | {
            "sampling_rate": SAMPLE_RATE,
            "frame_rate": 12.5,
            "audio_channels": 1,
            "num_residual_layers": 1,
            "upsampling_ratios": [8, 6, 5, 4],
            "kernel_size": 7,
            "last_kernel_size": 3,
            "residual_kernel_size": 3,
            "dilation_growth_rate": 2,
            "use_causal_conv": True,
            "compress": 2,
            "sliding_window": 250,
            "use_streaming": False,
        }
        | dims.speech_encoder
    )
    decoder = (
        shared
        | {
            "rope_theta": 10000,
            "attention_bias": False,
            "sliding_window": 72,
            "hidden_act": "silu",
            "layer_scale_initial_scale": 0.01,
            "rms_norm_eps": 1e-5,
            "semantic_codebook_size": dims.codebook,
            "upsample_rates": [8, 5, 4, 3],
            "upsampling_ratios": [2, 2],
            "attention_dropout": 0.0,
        }
        | dims.speech_decoder
    )
    return Qwen3TTSTokenizerV2Config(
        encoder_config=encoder,
        decoder_config=decoder,
        encoder_valid_num_quantizers=dims.code_groups,
        input_sample_rate=SAMPLE_RATE,
        output_sample_rate=SAMPLE_RATE,
        decode_upsample_rate=1920,
        encode_downsample_rate=1920,
    )


def tts_config(text_tokenizer: Any, variant: str, dims: ModelDims) -> Any:
    """The talker/code-predictor/speaker-encoder config of one variant at the preset's size."""
    from qwen_tts.core.models import Qwen3TTSConfig

    speakers = variant == "custom_voice"
    token_id = text_tokenizer.convert_tokens_to_ids
    codebook = dims.codebook
    attention = {
        "hidden_size": dims.hidden,
        "intermediate_size": dims.intermediate,
        "num_attention_heads": dims.heads,
        "num_key_value_heads": dims.kv_heads,
        "head_dim": dims.head_dim,
        "max_position_embeddings": dims.max_positions,
        "rope_theta": 1000000,
        "num_code_groups": dims.code_groups,
    }
    talker = attention | {
        # ids in the top 1024 of the codec vocabulary are suppressed except EOS
        "vocab_size": codebook + 1024,
        "num_hidden_layers": dims.talker_layers,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_scaling": {
            "rope_type": "default",
            "mrope_section": list(dims.mrope_section),
            "interleaved": True,
        },
        "text_vocab_size": dims.text_vocab or len(text_tokenizer),
        "text_hidden_size": dims.text_hidden,
        "position_id_per_seconds": 13,
        "codec_pad_id": codebook + _PAD,
        "codec_bos_id": codebook + _BOS,
        "codec_eos_token_id": codebook + _EOS,
        "codec_think_id": codebook + _THINK,
        "codec_nothink_id": codebook + _NOTHINK,
        "codec_think_bos_id": codebook + _THINK_BOS,
        "codec_think_eos_id": codebook + _THINK_EOS,
        "codec_language_id": {name: codebook + off for name, off in _LANGUAGE_OFFSETS.items()},
        "spk_id": {n: codebook + off for n, off in _SPEAKER_OFFSETS.items()} if speakers else {},
        "spk_is_dialect": dict(_SPEAKER_DIALECTS) if speakers else {},
        "code_predictor_config": attention
        | {
            "hidden_size": dims.predictor_hidden or dims.hidden,
            "intermediate_size": dims.predictor_intermediate or dims.intermediate,
            "vocab_size": codebook,
            "num_hidden_layers": dims.predictor_layers,
            "layer_types": ["full_attention"] * dims.predictor_layers,
        },
    }
    speaker_encoder = dims.speaker_encoder | {
        "enc_dim": dims.hidden,  # the x-vector is fed to the talker as one input embedding
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
    out: Path,
    variant: str,
    seed: int,
    dims: ModelDims,
    text_tokenizer: Any,
    speech_tokenizer: Any,
) -> None:
    from qwen_tts.core.models import Qwen3TTSForConditionalGeneration, Qwen3TTSProcessor
    from transformers import EncodecFeatureExtractor

    model = Qwen3TTSForConditionalGeneration(tts_config(text_tokenizer, variant, dims)).eval()
    model.to(getattr(torch, dims.weights_dtype)).save_pretrained(out, safe_serialization=True)
    del model  # real-0.6b: 3.7 GB in float32
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    # Upstream bug: the speaker-encoder config saves "model_type": "" but its __init__ does not
    # accept it, so the file would not load back. The published repos omit it too.
    config["speaker_encoder_config"].pop("model_type", None)
    config[TINY_MARKER] = seed
    config[DIMS_MARKER] = dims.name
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    (out / "generation_config.json").write_text(json.dumps(_GENERATION_CONFIG, indent=2))
    Qwen3TTSProcessor(tokenizer=text_tokenizer).save_pretrained(out)

    speech_dir = out / "speech_tokenizer"
    speech_tokenizer.save_pretrained(speech_dir, safe_serialization=True)
    EncodecFeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, return_attention_mask=True
    ).save_pretrained(speech_dir)
