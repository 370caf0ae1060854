"""Size presets for the locally built random models (tiny.py): numbers only, no structure.

Why two: tests and the offline demo need a model that runs in milliseconds ("tiny"), while speed
work needs the real compute and memory traffic of Qwen3-TTS-12Hz-0.6B-Base ("real-0.6b": the
published sizes, random weights). Everything structural (codec special ids, rope type, strides,
the repository layout) is shared in tiny.py, so both presets run the same qwen-tts code.

The real-0.6b sizes are those of the published config.json files (talker, code predictor, ECAPA
speaker encoder, Mimi encoder and the 12 Hz decoder of Qwen3-TTS-Tokenizer-12Hz): 915 M
parameters in the model plus 154 M in the speech tokenizer. real-1.7b (below) changes the
talker's width and the predictor's input projection.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class ModelDims:
    """Sizes of one preset. The code predictor has the talker's attention shape; its hidden
    and MLP sizes are the talker's unless given (the 1.7B model's predictor is narrower, with a
    projection from the talker's width, which qwen-tts adds when the sizes differ)."""

    name: str
    #: Which model variants to build (the published 0.6B exists as Base and CustomVoice only).
    variants: tuple[str, ...]
    codebook: int
    code_groups: int
    hidden: int
    intermediate: int
    talker_layers: int
    predictor_layers: int
    heads: int
    kv_heads: int
    head_dim: int
    mrope_section: tuple[int, int, int]
    text_hidden: int
    #: None: the locally trained text tokenizer's size (the real vocabulary is 151,936).
    text_vocab: int | None
    max_positions: int
    #: dtype the weights are saved in (the published repos ship bfloat16).
    weights_dtype: str
    predictor_hidden: int | None = None
    predictor_intermediate: int | None = None
    speaker_encoder: dict[str, Any] = field(default_factory=dict)
    speech_shared: dict[str, Any] = field(default_factory=dict)
    speech_encoder: dict[str, Any] = field(default_factory=dict)
    speech_decoder: dict[str, Any] = field(default_factory=dict)


TINY = ModelDims(
    name="tiny",
    variants=("base", "voice_design", "custom_voice"),
    codebook=64,
    code_groups=4,
    hidden=32,
    intermediate=64,
    talker_layers=2,
    predictor_layers=1,
    heads=2,
    kv_heads=1,
    head_dim=16,
    mrope_section=(4, 2, 2),
    text_hidden=32,
    text_vocab=None,
    max_positions=4096,
    weights_dtype="float32",
    speaker_encoder={
        "mel_dim": 128,
        "enc_channels": [32, 32, 32, 32, 96],
        "enc_kernel_sizes": [5, 3, 3, 3, 1],
        "enc_dilations": [1, 2, 3, 4, 1],
        "enc_attention_channels": 16,
        "enc_res2net_scale": 8,
        "enc_se_channels": 16,
    },
    speech_shared={
        "codebook_dim": 16,
        "hidden_size": 32,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
    },
    speech_encoder={
        "num_filters": 4,
        "vector_quantization_hidden_dimension": 16,
        "upsample_groups": 32,  # must divide hidden_size
    },
    speech_decoder={"latent_dim": 32, "decoder_dim": 64},
)

REAL_0_6B = ModelDims(
    name="real-0.6b",
    variants=("base",),
    codebook=2048,
    code_groups=16,
    hidden=1024,
    intermediate=3072,
    talker_layers=28,
    predictor_layers=5,
    heads=16,
    kv_heads=8,
    head_dim=128,
    mrope_section=(24, 20, 20),
    text_hidden=2048,
    text_vocab=151936,
    max_positions=32768,
    weights_dtype="bfloat16",
    speaker_encoder={},  # the ECAPA-TDNN defaults are the published ones
    speech_shared={"num_hidden_layers": 8},
    speech_encoder={  # Mimi's defaults, 32 quantizers of which the first 16 are used
        "hidden_size": 512,
        "num_filters": 64,
        "codebook_dim": 256,
        "num_quantizers": 32,
        "vector_quantization_hidden_dimension": 256,
        "upsample_groups": 512,
        "intermediate_size": 2048,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "head_dim": 64,
    },
    speech_decoder={
        "codebook_dim": 512,
        "hidden_size": 512,
        "latent_dim": 1024,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "head_dim": 64,
        "intermediate_size": 1024,
        "decoder_dim": 1536,
    },
)

#: Qwen3-TTS-12Hz-1.7B-Base: the talker on the Qwen3-1.7B backbone (hidden 2048, MLP 6144,
#: 28 layers, 16/8 heads of 128), the code predictor at the 0.6B's size behind a 2048 -> 1024
#: projection; codec and speech tokenizer as in 0.6B. The server's default base model.
REAL_1_7B = replace(
    REAL_0_6B,
    name="real-1.7b",
    hidden=2048,
    intermediate=6144,
    predictor_hidden=1024,
    predictor_intermediate=3072,
)

PRESETS: dict[str, ModelDims] = {dims.name: dims for dims in (TINY, REAL_0_6B, REAL_1_7B)}
