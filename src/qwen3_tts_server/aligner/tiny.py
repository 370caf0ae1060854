"""A Qwen3-ForcedAligner with the real architecture and repository layout, random weights.

Why: tests and the offline demo must run the *real* qwen-asr alignment code (its text
splitting, the processor's audio features and placeholder expansion, the thinker's forward
pass, the timestamp repair) without downloading 1.8 GB. The directory loads through the
unmodified `Qwen3ForcedAligner.from_pretrained(dir)` exactly like the published repo.
The times it gives are meaningless (random weights); their number, order and plumbing are real.

What mirrors the published model (config.json of Qwen/Qwen3-ForcedAligner-0.6B): a
`qwen3_asr` config whose thinker is a `qwen3_forced_aligner` with a 5000-class timestamp head
(80 ms each), the audio encoder's windows (n_window 50, n_window_infer 800: the processor's
length formula assumes 100-frame chunks), 128 mel bins at 16 kHz, interleaved M-RoPE, and the
special tokens the processor and aligner look for. The text tokenizer is the one the tiny TTS
models use (engine/model/tiny_text.py) plus those tokens.

`dims="real-0.6b"` builds the published sizes (about 0.6 B parameters) for the speed bench.
`qwen3-tts-server models make-tiny DIR` builds it next to the TTS models, as DIR/aligner.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qwen3_tts_server.aligner.compat import import_qwen_asr
from qwen3_tts_server.aligner.files import is_complete_aligner_dir
from qwen3_tts_server.engine.model.tiny_text import build_text_tokenizer

#: Key in a built aligner's config.json: the seed it was made with (also: "made here").
TINY_ALIGNER_MARKER = "qwen3_tts_server_tiny_aligner"
DIMS_MARKER = "qwen3_tts_server_tiny_dims"

#: The languages the published aligner lists (its config's `support_languages`).
SUPPORTED_LANGUAGES = (
    "Chinese",
    "English",
    "Cantonese",
    "French",
    "German",
    "Italian",
    "Japanese",
    "Korean",
    "Portuguese",
    "Russian",
    "Spanish",
)
_AUDIO_TOKENS = {
    "audio_bos_token": "<|audio_start|>",
    "audio_eos_token": "<|audio_end|>",
    "audio_token": "<|audio_pad|>",
}
_TIMESTAMP = "<timestamp>"


@dataclass(frozen=True)
class AlignerDims:
    """The sizes that differ between the tiny aligner and the published 0.6B one."""

    name: str
    audio_width: int
    audio_layers: int
    audio_heads: int
    audio_ffn: int
    downsample: int
    text_width: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    head_dim: int
    text_ffn: int
    mrope_section: tuple[int, int, int]
    vocab: int | None  # None: the tokenizer's size
    weights_dtype: str


TINY = AlignerDims("tiny", 32, 2, 2, 64, 8, 32, 2, 2, 1, 16, 64, (4, 2, 2), None, "float32")
REAL_06B = AlignerDims(
    "real-0.6b", 1024, 24, 16, 4096, 480, 1024, 28, 16, 8, 128, 3072, (24, 20, 20), 152064,
    "bfloat16",
)  # fmt: skip
PRESETS = {dims.name: dims for dims in (TINY, REAL_06B)}


def make_tiny_aligner(out_dir: str | Path, seed: int = 0, dims: str = "tiny") -> Path:
    """Build the aligner at `out_dir` (replaced only if empty or made here) and return it.

    Tiny takes about a second; real-0.6b about a minute and 1.2 GB (bfloat16). The same seed
    and preset give the same weights.
    """
    preset = _preset(dims)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and _built_config(out) is None:
        raise FileExistsError(
            f"{out} exists and is not an aligner made by qwen3-tts-server; "
            "choose an empty or new directory"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".aligner-", dir=out.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _write(staging, seed, preset)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def cached_aligner(out_dir: str | Path, seed: int = 0, dims: str = "tiny") -> Path:
    """The aligner at `out_dir`, built only when missing or made with another seed or preset
    (benchmarks: the real-0.6b one is built once per data folder)."""
    out = Path(out_dir)
    config = _built_config(out)
    if (
        config is None
        or config.get(TINY_ALIGNER_MARKER) != seed
        or config.get(DIMS_MARKER) != _preset(dims).name
        or not is_complete_aligner_dir(out)
    ):
        return make_tiny_aligner(out, seed=seed, dims=dims)
    return out


def _preset(dims: str) -> AlignerDims:
    try:
        return PRESETS[dims]
    except KeyError:
        raise ValueError(f"dims must be one of {sorted(PRESETS)}, got {dims!r}") from None


def _built_config(path: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and TINY_ALIGNER_MARKER in config else None


def _write(out: Path, seed: int, dims: AlignerDims) -> None:
    import_qwen_asr()  # the package first, with the floating-point environment kept
    from qwen_asr.core.transformers_backend import (
        Qwen3ASRConfig,
        Qwen3ASRForConditionalGeneration,
        Qwen3ASRProcessor,
    )
    from transformers import AutoTokenizer, WhisperFeatureExtractor

    tokenizer = build_text_tokenizer()
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [*_AUDIO_TOKENS.values(), _TIMESTAMP]},
        replace_additional_special_tokens=False,
    )
    tokenizer.save_pretrained(out)
    # The processor reads tokenizer.audio_token & co., which transformers sets from
    # `extra_special_tokens` in tokenizer_config.json (as in the published repo).
    _update_json(out / "tokenizer_config.json", {"extra_special_tokens": _AUDIO_TOKENS})
    tokenizer = AutoTokenizer.from_pretrained(out)
    features = WhisperFeatureExtractor(
        feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400
    )
    Qwen3ASRProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(out)

    token_id = tokenizer.convert_tokens_to_ids
    config = Qwen3ASRConfig(
        thinker_config=_thinker(dims, len(tokenizer), token_id),
        support_languages=list(SUPPORTED_LANGUAGES),
        timestamp_token_id=token_id(_TIMESTAMP),
        timestamp_segment_time=80,
    )
    model = Qwen3ASRForConditionalGeneration(config).eval()
    model.to(getattr(torch, dims.weights_dtype)).save_pretrained(out, safe_serialization=True)
    del model
    # save_pretrained writes the sub-config's class model_type; the aligner's head (5000 time
    # classes instead of the vocabulary) is chosen by "forced_aligner" in this name on load.
    config_path = out / "config.json"
    saved = json.loads(config_path.read_text())
    saved["thinker_config"]["model_type"] = "qwen3_forced_aligner"
    _update_json(config_path, saved | {TINY_ALIGNER_MARKER: seed, DIMS_MARKER: dims.name})


def _thinker(dims: AlignerDims, tokenizer_size: int, token_id: Any) -> dict[str, Any]:
    return {
        "model_type": "qwen3_forced_aligner",
        "classify_num": 5000,
        "audio_token_id": token_id(_AUDIO_TOKENS["audio_token"]),
        "audio_start_token_id": token_id(_AUDIO_TOKENS["audio_bos_token"]),
        "audio_end_token_id": token_id(_AUDIO_TOKENS["audio_eos_token"]),
        "audio_config": {
            "num_mel_bins": 128,
            "d_model": dims.audio_width,
            "encoder_layers": dims.audio_layers,
            "encoder_attention_heads": dims.audio_heads,
            "encoder_ffn_dim": dims.audio_ffn,
            "output_dim": dims.text_width,
            "downsample_hidden_size": dims.downsample,
            "max_source_positions": 1500,
            "n_window": 50,
            "n_window_infer": 800,
        },
        "text_config": {
            "vocab_size": dims.vocab or tokenizer_size,
            "hidden_size": dims.text_width,
            "intermediate_size": dims.text_ffn,
            "num_hidden_layers": dims.text_layers,
            "num_attention_heads": dims.text_heads,
            "num_key_value_heads": dims.text_kv_heads,
            "head_dim": dims.head_dim,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000,
            "tie_word_embeddings": False,
            "rope_scaling": {
                "rope_type": "default",
                "mrope_section": list(dims.mrope_section),
                "interleaved": True,
                "mrope_interleaved": True,
            },
        },
    }


def _update_json(path: Path, values: dict[str, Any]) -> None:
    data = json.loads(path.read_text()) | values
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
