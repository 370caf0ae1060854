"""QwenEngine end to end on the tiny models: the real qwen-tts code, no stand-ins."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from qwen3_tts_server.engine.base import (
    LANGUAGES,
    Audio,
    CustomItem,
    InvalidInput,
    ModelsMissing,
    ModelUnavailable,
    PromptCorrupt,
    PromptMismatch,
    Sampling,
    SynthItem,
)
from qwen3_tts_server.engine.model.compat import import_qwen_tts
from qwen3_tts_server.engine.model.model_files import resolve_model_paths
from qwen3_tts_server.engine.model.prompts import PromptData, decode_prompt, encode_prompt
from qwen3_tts_server.engine.model.qwen import TINY_MARKER, QwenEngine
from qwen3_tts_server.engine.model.tiny import make_tiny_models

FRAME = 1920  # samples per 80 ms codec frame at 24 kHz


def assert_plausible(clip: Audio, stock: QwenEngine) -> None:
    """Real decoder output: float32 at 24 kHz, whole frames, within the generation cap.

    In ICL mode qwen-tts cuts the reference part off with int(ratio x length), which can keep
    one sample too many: hence "% FRAME <= 1".
    """
    assert clip.sample_rate == 24000
    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert clip.samples.shape[0] % FRAME <= 1
    assert FRAME <= clip.samples.shape[0] <= stock.max_new_tokens_cap * FRAME + 1
    assert np.isfinite(clip.samples).all() and float(np.abs(clip.samples).max()) > 0


@pytest.fixture(scope="module")
def base_config(tiny_models_dir: Path) -> dict[str, Any]:
    """The base model's own config.json: what the expectations below are derived from."""
    config: dict[str, Any] = json.loads((tiny_models_dir / "base" / "config.json").read_text())
    return config


def prompt_shape(config: dict[str, Any]) -> dict[str, int]:
    """A prompt's dimensions as the model files state them."""
    talker = config["talker_config"]
    return {
        "embedding_size": config["speaker_encoder_config"]["enc_dim"],
        "code_groups": talker["num_code_groups"],
        "codebook_size": talker["code_predictor_config"]["vocab_size"],
    }


@pytest.fixture
def read(stock: QwenEngine, base_config: dict[str, Any]) -> Callable[[bytes], PromptData]:
    """Decode prompt bytes for this model, with the dimensions from its config.json."""
    model_id = stock.info().base_model_id
    return lambda data: decode_prompt(data, model_id=model_id, **prompt_shape(base_config))


def test_info_describes_the_loaded_models(stock: QwenEngine, base_config: dict[str, Any]) -> None:
    info = stock.info()
    # The tiny model is named by its seed (0, as conftest builds it) and, like every model, by
    # its speaker-embedding width, so a prompt from another size is never fed to it.
    assert base_config[TINY_MARKER] == 0
    assert info.base_model_id == f"tiny-seed0:{base_config['speaker_encoder_config']['enc_dim']}"
    assert (info.device, info.dtype, info.sample_rate) == ("cpu", "float32", 24000)
    assert info.has_voice_design and info.has_custom_voice
    assert {"vivian", "ryan", "eric", "dylan"} <= set(info.speakers)


def test_warm_up_runs_every_model(stock: QwenEngine) -> None:
    """Each loaded model's talker and speech decoder run at least once during warm-up."""
    models = {
        "base": stock._base.model,
        "voice_design": stock._voice_design.model,
        "custom_voice": stock._custom_voice.model,
    }
    watched = {
        f"{name} {part}": module
        for name, model in models.items()
        for part, module in (
            ("talker", model.talker),
            ("decoder", model.speech_tokenizer.model.decoder),
        )
    }
    ran: set[str] = set()
    hooks = [
        module.register_forward_pre_hook(lambda *_, label=label: ran.add(label))
        for label, module in watched.items()
    ]
    try:
        stock.warm_up()
    finally:
        for hook in hooks:
            hook.remove()
    assert ran == set(watched)


def test_prompt_creation_icl_and_x_vector(
    stock: QwenEngine,
    make_audio: Callable[..., Audio],
    read: Callable[[bytes], PromptData],
    base_config: dict[str, Any],
) -> None:
    icl = read(stock.create_prompt(make_audio(seconds=1.5), "  Hello there.  "))
    assert icl.icl and not icl.x_vector_only and icl.ref_text == "Hello there."
    shape = prompt_shape(base_config)
    assert icl.ref_code is not None  # ceil(1.5 s x 12.5 frames/s) frames of every code group
    assert icl.ref_code.shape == (19, shape["code_groups"])
    assert icl.spk_embedding.shape == (shape["embedding_size"],)

    # 16 kHz input: resampled to 24 kHz inside qwen-tts; a blank transcript means x-vector only
    xvec = read(stock.create_prompt(make_audio(sample_rate=16000), "   "))
    assert xvec.x_vector_only and not xvec.icl
    assert xvec.ref_code is None and xvec.ref_text is None


def test_prompt_creation_refuses_unusable_audio(
    stock: QwenEngine, make_audio: Callable[..., Audio]
) -> None:
    with pytest.raises(InvalidInput, match="at least"):
        stock.create_prompt(make_audio(seconds=0.1), "Too short.")
    noisy = make_audio()
    noisy.samples[10] = np.nan
    with pytest.raises(InvalidInput, match="non-finite"):
        stock.create_prompt(noisy, None)
    stereo = Audio(np.zeros((24000, 2), dtype=np.float32), 24000)
    with pytest.raises(InvalidInput, match="mono"):
        stock.create_prompt(stereo, None)


def test_prompt_bytes_round_trip_exactly(
    stock: QwenEngine, voice_prompts: dict[str, bytes], read: Callable[[bytes], PromptData]
) -> None:
    for data in voice_prompts.values():
        prompt = read(data)
        assert encode_prompt(prompt, stock.info().base_model_id) == data
    icl = read(voice_prompts["icl"])
    again = read(encode_prompt(icl, stock.info().base_model_id))
    assert again.ref_code is not None and icl.ref_code is not None
    assert torch.equal(again.ref_code, icl.ref_code)
    assert torch.equal(again.spk_embedding, icl.spk_embedding)
    assert (again.ref_text, again.icl, again.x_vector_only) == (icl.ref_text, True, False)


def test_synthesize_one_text(stock: QwenEngine, voice_prompts: dict[str, bytes]) -> None:
    [clip] = stock.synthesize(
        [SynthItem("Hello world.", "english", voice_prompts["icl"])], Sampling()
    )
    assert_plausible(clip, stock)


def test_synthesize_several_texts_voices_and_languages_in_one_call(
    stock: QwenEngine, voice_prompts: dict[str, bytes]
) -> None:
    items = [
        SynthItem(f"Sentence number {i}.", language, voice_prompts["icl" if i % 2 else "xvec"])
        for i, language in enumerate(LANGUAGES)
    ]
    clips = stock.synthesize(items, Sampling())
    assert len(clips) == len(LANGUAGES)
    for clip in clips:
        assert_plausible(clip, stock)


def test_same_seed_same_audio(stock: QwenEngine, voice_prompts: dict[str, bytes]) -> None:
    items = [
        SynthItem("Reproducible, please.", "auto", voice_prompts["icl"]),
        SynthItem("你好，世界。", "chinese", voice_prompts["xvec"]),
    ]
    first = stock.synthesize(items, Sampling(seed=42))
    stock.synthesize(items, Sampling())  # moves the global RNG on
    second = stock.synthesize(items, Sampling(seed=42))
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a.samples, b.samples)
    greedy = Sampling(temperature=0.0)
    assert np.array_equal(
        stock.synthesize(items[:1], greedy)[0].samples,
        stock.synthesize(items[:1], greedy)[0].samples,
    )


def test_custom_voice_with_real_speaker_names(stock: QwenEngine) -> None:
    items = [
        CustomItem("Hi from Vivian.", "english", "Vivian"),
        CustomItem("Hi from Ryan.", "german", "ryan", instruct="Cheerful."),
        CustomItem("四川话。", "chinese", "eric"),  # dialect speaker: the language id is swapped
        CustomItem("Auto.", "auto", "DYLAN"),
    ]
    for clip in stock.synthesize_custom(items, Sampling()):
        assert_plausible(clip, stock)
    with pytest.raises(InvalidInput, match="Unsupported speakers"):
        stock.synthesize_custom([CustomItem("Hi.", "english", "nobody")], Sampling())
    with pytest.raises(InvalidInput, match="blank"):
        stock.synthesize_custom([CustomItem("Hi.", "english", " ")], Sampling())


def test_voice_design(stock: QwenEngine) -> None:
    clip = stock.design("A designed voice.", "A calm, deep narrator.", "french", Sampling(seed=1))
    assert_plausible(clip, stock)
    with pytest.raises(InvalidInput, match="description"):
        stock.design("Text.", "  ", "english", Sampling())


def test_bad_inputs_are_invalid_input(stock: QwenEngine, voice_prompts: dict[str, bytes]) -> None:
    with pytest.raises(InvalidInput, match="klingon"):
        stock.synthesize([SynthItem("Hi.", "klingon", voice_prompts["icl"])], Sampling())
    with pytest.raises(InvalidInput, match="blank"):
        stock.synthesize([SynthItem("  ", "english", voice_prompts["icl"])], Sampling())
    assert stock.synthesize([], Sampling()) == []


def test_foreign_prompts_are_refused(
    stock: QwenEngine, voice_prompts: dict[str, bytes], read: Callable[[bytes], PromptData]
) -> None:
    prompt = read(voice_prompts["icl"])
    other_model = encode_prompt(prompt, "Qwen3-TTS-12Hz-1.7B-Base:2048")
    wider = PromptData(None, torch.zeros(2048), True, False, None)
    same_id_other_size = encode_prompt(wider, stock.info().base_model_id)
    for data in (other_model, same_id_other_size):
        with pytest.raises(PromptMismatch, match="recreate"):
            stock.synthesize([SynthItem("Hi.", "english", data)], Sampling())


def test_damaged_prompts_are_refused(
    stock: QwenEngine, voice_prompts: dict[str, bytes], base_config: dict[str, Any]
) -> None:
    data = voice_prompts["icl"]
    rng = np.random.default_rng(0)
    damaged = [b"", b"\x00" * 7, b"not a prompt at all", rng.bytes(len(data))]
    damaged += [data[:n] for n in range(0, len(data), 37)]
    for position in range(0, len(data), 13):
        flipped = bytearray(data)
        flipped[position] ^= 0x41
        damaged.append(bytes(flipped))
    model_id = stock.info().base_model_id
    for blob in damaged:
        with pytest.raises(PromptCorrupt):
            decode_prompt(blob, model_id=model_id, **prompt_shape(base_config))
    with pytest.raises(PromptCorrupt):
        stock.synthesize([SynthItem("Hi.", "english", damaged[-1])], Sampling())


def test_missing_models_are_unavailable(tiny_models_dir: Path) -> None:
    base_only = QwenEngine.load(tiny_models_dir / "base", device="cpu", max_new_tokens_cap=4)
    info = base_only.info()
    assert not info.has_voice_design and not info.has_custom_voice and info.speakers == ()
    with pytest.raises(ModelUnavailable, match="MODEL_VOICEDESIGN_REPO"):
        base_only.design("Hi.", "A voice.", "english", Sampling())
    with pytest.raises(ModelUnavailable, match="MODEL_CUSTOM_REPO"):
        base_only.synthesize_custom([CustomItem("Hi.", "english", "ryan")], Sampling())
    with pytest.raises(ModelUnavailable, match="expected a base model"):
        QwenEngine.load(tiny_models_dir / "custom_voice", device="cpu")
    with pytest.raises(ModelsMissing, match="not a complete model directory"):
        QwenEngine.load(tiny_models_dir / "no-such-model", device="cpu")


def test_resolve_model_paths(tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = resolve_model_paths(
        tiny_models_dir,
        base_repo="local/base",
        voice_design_repo="voice_design",
        custom_voice_repo="",
    )
    assert paths.base == tiny_models_dir / "base"
    assert paths.voice_design == tiny_models_dir / "voice_design" and paths.custom_voice is None

    empty = tiny_models_dir.parent / "empty-models"
    with pytest.raises(ModelsMissing) as missing:
        resolve_model_paths(empty, base_repo="Qwen/Qwen3-TTS-12Hz-0.6B-Base")
    message = str(missing.value)
    assert "Qwen3-TTS-12Hz-0.6B-Base" in message and "downloads are disabled" in message
    assert "MODELS_DIR" in message and "models download" in message and "make demo" in message

    import huggingface_hub

    def offline(**kwargs: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelsMissing, match=r"could not be downloaded.*network unreachable"):
        resolve_model_paths(empty, base_repo="Qwen/Qwen3-TTS-12Hz-0.6B-Base", allow_download=True)

    downloads: list[dict[str, object]] = []

    def fake_download(**kwargs: object) -> None:
        downloads.append(kwargs)
        import shutil

        shutil.copytree(tiny_models_dir / "base", str(kwargs["local_dir"]), dirs_exist_ok=True)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    paths = resolve_model_paths(
        empty, base_repo="Qwen/Qwen3-TTS-12Hz-0.6B-Base", allow_download=True, hf_token="hf_x"
    )
    assert paths.base == empty / "Qwen3-TTS-12Hz-0.6B-Base"
    assert downloads == [
        {"repo_id": "Qwen/Qwen3-TTS-12Hz-0.6B-Base", "local_dir": str(paths.base), "token": "hf_x"}
    ]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_models_are_deterministic_and_never_clobber(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    again = make_tiny_models(tmp_path / "again", seed=0)
    for variant in ("base", "voice_design", "custom_voice"):
        for name in ("model.safetensors", "speech_tokenizer/model.safetensors"):
            assert _digest(tiny_models_dir / variant / name) == _digest(
                tmp_path / "again" / variant / name
            )
    make_tiny_models(tmp_path / "again", seed=1)  # replacing its own output is fine
    assert _digest(again.base / "model.safetensors") != _digest(
        tiny_models_dir / "base/model.safetensors"
    )

    precious = tmp_path / "precious"
    (precious / "base").mkdir(parents=True)
    (precious / "base" / "weights.bin").write_bytes(b"real model")
    with pytest.raises(FileExistsError, match="not a tiny model"):
        make_tiny_models(precious)
    assert (precious / "base" / "weights.bin").read_bytes() == b"real model"


def test_compat_leaves_no_placeholders_behind() -> None:
    import_qwen_tts()
    for name in ("torchaudio", "sox", "onnxruntime"):
        module = sys.modules.get(name)
        assert module is None or not type(module).__name__.startswith("_Placeholder")
