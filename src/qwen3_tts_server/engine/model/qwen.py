"""`QwenEngine`: the Engine protocol on top of the unmodified qwen-tts package.

Everything qwen-tts would do with a request-supplied string is closed off here: reference audio
always goes in as an `(ndarray, sample_rate)` tuple (a string would be fetched as a URL or decoded
as base64), languages are checked against `LANGUAGES`, stored prompts are decoded and checked
against the loaded model before use, and every call carries a `max_new_tokens` bound derived from
its texts (see bounds.py). Not thread-safe, like the model under it: the scheduler owns it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qwen3_tts_server.engine.base import (
    Audio,
    CustomItem,
    DesignItem,
    EngineInfo,
    InvalidInput,
    Item,
    ModelsMissing,
    ModelUnavailable,
    Sampling,
    SynthItem,
)
from qwen3_tts_server.engine.model.compat import import_qwen_tts
from qwen3_tts_server.engine.model.model_files import FIX_HINT, is_complete_model_dir
from qwen3_tts_server.engine.model.prompts import PromptData, decode_prompt, encode_prompt
from qwen3_tts_server.engine.model.stock_args import (
    as_invalid_input,
    checked_text,
    generate_kwargs,
    qwen_language,
)
from qwen3_tts_server.engine.step.linear import pick_dtype
from qwen3_tts_server.engine.text.bounds import HARD_CAP, max_new_tokens_for_batch

log = logging.getLogger(__name__)

#: Key in a tiny model's config.json (written by tiny.py): its seed, used in the model id.
TINY_MARKER = "qwen3_tts_server_tiny_seed"
#: Shorter references make the codec's and speaker encoder's convolutions fail.
MIN_PROMPT_SECONDS = 0.5
_MISSING = {
    "custom_voice": "preset speakers need the CustomVoice model; set MODEL_CUSTOM_REPO "
    "(e.g. Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice)",
    "voice_design": "voice design needs the VoiceDesign model; set MODEL_VOICEDESIGN_REPO "
    "(e.g. Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign)",
}


@dataclass(frozen=True)
class StockCall:
    """Checked items bound to the stock qwen-tts call that speaks them in one padded batch.

    `model` is the `qwen_tts.Qwen3TTSModel` that speaks them, `role` its kind, `ref_codes` each
    item's ICL reference codes (None without), `run(kwargs)` the call with generation kwargs.
    """

    model: Any
    role: str
    texts: list[str]
    run: Callable[[dict[str, Any]], tuple[list[np.ndarray], int]]
    ref_codes: list[torch.Tensor | None]


def _pick_device(device: str) -> str:
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return "cuda:0" if device == "cuda" else device


class QwenEngine:
    """Base (clone prompts + synthesis), optional VoiceDesign and CustomVoice models."""

    def __init__(
        self,
        base: Any,
        *,
        voice_design: Any = None,
        custom_voice: Any = None,
        model_id: str,
        device: str,
        dtype: torch.dtype,
        max_new_tokens_cap: int = HARD_CAP,
    ) -> None:
        """Wrap loaded `qwen_tts.Qwen3TTSModel`s; most callers want `QwenEngine.load`."""
        for model, role in (
            (base, "base"),
            (voice_design, "voice_design"),
            (custom_voice, "custom_voice"),
        ):
            if model is not None and model.model.tts_model_type != role:
                raise ModelUnavailable(
                    f"expected a {role} model but got a {model.model.tts_model_type} model; "
                    "check which repository each MODEL_*_REPO setting names"
                )
        for model in (base, voice_design, custom_voice):
            if model is not None:
                _pad_with_eos(model)
        self._base = base
        self._voice_design = voice_design
        self._custom_voice = custom_voice
        self._model_id = model_id
        self._device = device
        self._dtype = dtype
        self._cap = max_new_tokens_cap
        self._prompt_item = import_qwen_tts().VoiceClonePromptItem
        config = base.model.config
        self._embedding_size = int(config.speaker_encoder_config.enc_dim)
        self._code_groups = int(config.talker_config.num_code_groups)
        self._codebook_size = int(config.talker_config.code_predictor_config.vocab_size)
        self._sample_rate = int(base.model.speech_tokenizer.get_output_sample_rate())

    @classmethod
    def load(
        cls,
        base: str | Path,
        voice_design: str | Path | None = None,
        custom_voice: str | Path | None = None,
        *,
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        attn_implementation: str | None = None,
        model_id: str | None = None,
        max_new_tokens_cap: int = HARD_CAP,
    ) -> QwenEngine:
        """Load models from local directories (no network).

        device "auto" picks CUDA when available; dtype "auto" is bfloat16 on CUDA and on CPUs
        with oneDNN bf16 kernels, else float32 (see engine.linear);
        attention is sdpa unless given. `model_id` names the
        base model in stored prompts (default: directory name, or the tiny seed, plus the hidden
        size, so a prompt made by another model size is refused).
        """
        qwen_tts = import_qwen_tts()
        resolved_device = _pick_device(device)
        resolved_dtype = pick_dtype(dtype, resolved_device)
        # SDPA always: the stock reference path must run the attention the step engine is checked
        # against (flash-attn, when installed, would silently change stock's codes).
        attention = attn_implementation or "sdpa"

        def load_one(path: str | Path | None) -> Any:
            if path is None:
                return None
            if not is_complete_model_dir(Path(path)):
                raise ModelsMissing(f"{path} is not a complete model directory. To fix: {FIX_HINT}")
            started = time.perf_counter()
            model = qwen_tts.Qwen3TTSModel.from_pretrained(
                str(path),
                device_map=resolved_device,
                dtype=resolved_dtype,
                attn_implementation=attention,
            )
            log.info("loaded %s in %.1f s", path, time.perf_counter() - started)
            return model

        base_model = load_one(base)
        return cls(
            base_model,
            voice_design=load_one(voice_design),
            custom_voice=load_one(custom_voice),
            model_id=model_id or _default_model_id(Path(base), base_model),
            device=resolved_device,
            dtype=resolved_dtype,
            max_new_tokens_cap=max_new_tokens_cap,
        )

    @property
    def max_new_tokens_cap(self) -> int:
        """The most frames any one call may generate."""
        return self._cap

    def info(self) -> EngineInfo:
        speakers: tuple[str, ...] = ()
        instructions = False
        if self._custom_voice is not None:
            speakers = tuple(self._custom_voice.get_supported_speakers() or ())
            # qwen-tts's own test in generate_custom_voice (a substring test, kept as it is).
            instructions = self._custom_voice.model.tts_model_size not in "0b6"
        return EngineInfo(
            base_model_id=self._model_id,
            device=self._device,
            dtype=str(self._dtype).removeprefix("torch."),
            sample_rate=self._sample_rate,
            has_voice_design=self._voice_design is not None,
            has_custom_voice=self._custom_voice is not None,
            speakers=speakers,
            speaker_instructions=instructions,
        )

    def create_prompt(self, audio: Audio, transcript: str | None) -> bytes:
        samples = np.asarray(audio.samples, dtype=np.float32)
        if samples.ndim != 1 or audio.sample_rate <= 0:
            raise InvalidInput("reference audio must be mono samples with a positive sample rate")
        if samples.shape[0] < MIN_PROMPT_SECONDS * audio.sample_rate:
            raise InvalidInput(f"reference audio must be at least {MIN_PROMPT_SECONDS} s long")
        if not np.isfinite(samples).all():
            raise InvalidInput("reference audio contains non-finite samples")
        ref_text = transcript.strip() if transcript and transcript.strip() else None
        with as_invalid_input():
            item = self._base.create_voice_clone_prompt(
                ref_audio=(np.clip(samples, -1.0, 1.0), int(audio.sample_rate)),
                ref_text=ref_text,
                x_vector_only_mode=ref_text is None,
            )[0]
        data = PromptData(
            ref_code=item.ref_code,
            spk_embedding=item.ref_spk_embedding,
            x_vector_only=bool(item.x_vector_only_mode),
            icl=bool(item.icl_mode),
            ref_text=item.ref_text,
        )
        return encode_prompt(data, self._model_id)

    def synthesize(self, items: Sequence[SynthItem], sampling: Sampling) -> list[Audio]:
        return self._synthesize(items, sampling, None)

    def synthesize_custom(self, items: Sequence[CustomItem], sampling: Sampling) -> list[Audio]:
        return self._synthesize_custom(items, sampling, None)

    def design(self, text: str, description: str, language: str, sampling: Sampling) -> Audio:
        return self._design(text, description, language, sampling, None)

    def warm_up(self) -> None:
        """Run every code path once: the first librosa resample alone costs seconds (numba JIT).

        The reference is at 16 kHz so resampling to 24 kHz really runs; generations are 2 frames.
        """
        started = time.perf_counter()
        seconds = np.arange(16000, dtype=np.float32) / 16000
        tone = (0.3 * np.sin(2 * np.pi * 220 * seconds)).astype(np.float32)
        prompt = self.create_prompt(Audio(tone, 16000), "Warm up.")
        self._synthesize([SynthItem("Warm up.", "english", prompt)], Sampling(), 2)
        if self._voice_design is not None:
            self._design("Warm up.", "A calm voice.", "english", Sampling(), 2)
        if self._custom_voice is not None:
            speaker = self.info().speakers[0]
            self._synthesize_custom([CustomItem("Warm up.", "english", speaker)], Sampling(), 2)
        log.info("engine warm in %.1f s", time.perf_counter() - started)

    def model(self, role: str) -> Any:
        """The loaded `qwen_tts.Qwen3TTSModel` of a role, or ModelUnavailable saying what to set."""
        model = {
            "base": self._base,
            "custom_voice": self._custom_voice,
            "voice_design": self._voice_design,
        }[role]
        if model is None:
            raise ModelUnavailable(_MISSING[role])
        return model

    def decode_prompt(self, data: bytes) -> PromptData:
        """Stored prompt bytes checked against the loaded base model (PromptMismatch/Corrupt)."""
        return decode_prompt(
            data,
            model_id=self._model_id,
            embedding_size=self._embedding_size,
            code_groups=self._code_groups,
            codebook_size=self._codebook_size,
        )

    def prepare(self, items: Sequence[Item]) -> StockCall:
        """Check items of one kind and bind the stock qwen-tts call that speaks them together.

        Raises InvalidInput for a blank text, unknown language or speaker, PromptMismatch /
        PromptCorrupt for a bad stored prompt, ModelUnavailable when the model is not loaded.
        """
        if not items:
            raise ValueError("a model call needs at least one item")
        kinds = {type(item) for item in items}
        if len(kinds) != 1:
            raise ValueError("items of one model call must be of one kind")
        texts = [checked_text(item.text) for item in items]
        languages = [qwen_language(item.language) for item in items]
        first = items[0]
        if isinstance(first, SynthItem):
            prompts = [self._decode_prompt(item.prompt) for item in items]  # type: ignore[union-attr]
            base = self._base

            def clone(kwargs: dict[str, Any]) -> tuple[list[np.ndarray], int]:
                return base.generate_voice_clone(
                    text=texts, language=languages, voice_clone_prompt=prompts, **kwargs
                )

            refs = [prompt.ref_code for prompt in prompts]
            return StockCall(base, "base", texts, clone, refs)
        if isinstance(first, CustomItem):
            model = self.model("custom_voice")
            speakers = [item.speaker.strip().lower() for item in items]  # type: ignore[union-attr]
            if not all(speakers):
                raise InvalidInput("speaker must not be blank")
            instructs = [item.instruct for item in items]  # type: ignore[union-attr]

            def custom(kwargs: dict[str, Any]) -> tuple[list[np.ndarray], int]:
                return model.generate_custom_voice(
                    text=texts, speaker=speakers, language=languages, instruct=instructs, **kwargs
                )

            return StockCall(model, "custom_voice", texts, custom, [None] * len(texts))
        design_model = self.model("voice_design")
        descriptions = [item.description for item in items]  # type: ignore[union-attr]
        if not all(description.strip() for description in descriptions):
            raise InvalidInput("voice description must not be blank")

        def design(kwargs: dict[str, Any]) -> tuple[list[np.ndarray], int]:
            return design_model.generate_voice_design(
                text=texts, instruct=descriptions, language=languages, **kwargs
            )

        return StockCall(design_model, "voice_design", texts, design, [None] * len(texts))

    def stock_codes(
        self, items: Sequence[Item], sampling: Sampling, max_new_tokens: int
    ) -> list[torch.Tensor]:
        """The codec frames stock qwen-tts generates for these items in one call, each
        (frames, code groups): the reference that tests and benchmarks hold the engine to."""
        call = self.prepare(items)
        model = call.model.model
        recorded: list[list[torch.Tensor]] = []
        generate = model.generate

        def record(*args: Any, **kwargs: Any) -> Any:
            result = generate(*args, **kwargs)
            recorded.append([codes.clone() for codes in result[0]])
            return result

        model.generate = record  # instance attribute, for this one call
        try:
            self._run(call, sampling, max_new_tokens)
        finally:
            del model.generate
        return recorded[0]

    def _synthesize(
        self, items: Sequence[Item], sampling: Sampling, max_new_tokens: int | None
    ) -> list[Audio]:
        if not items:
            return []
        return self._run(self.prepare(items), sampling, max_new_tokens)

    def _synthesize_custom(
        self, items: Sequence[CustomItem], sampling: Sampling, max_new_tokens: int | None
    ) -> list[Audio]:
        self.model("custom_voice")
        return self._synthesize(items, sampling, max_new_tokens)

    def _design(
        self,
        text: str,
        description: str,
        language: str,
        sampling: Sampling,
        max_new_tokens: int | None,
    ) -> Audio:
        item = DesignItem(text, language, description)
        return self._synthesize([item], sampling, max_new_tokens)[0]

    def _decode_prompt(self, data: bytes) -> Any:
        prompt = self.decode_prompt(data)
        return self._prompt_item(
            ref_code=prompt.ref_code,
            ref_spk_embedding=prompt.spk_embedding,
            x_vector_only_mode=prompt.x_vector_only,
            icl_mode=prompt.icl,
            ref_text=prompt.ref_text,
        )

    def _run(self, call: StockCall, sampling: Sampling, max_new_tokens: int | None) -> list[Audio]:
        bound = max_new_tokens
        if bound is None:
            bound = max_new_tokens_for_batch(call.texts, cap=self._cap)
        kwargs = generate_kwargs(sampling, bound)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        with as_invalid_input():
            wavs, sample_rate = call.run(kwargs)
        if len(wavs) != len(call.texts):
            raise RuntimeError(f"qwen-tts returned {len(wavs)} clips for {len(call.texts)} texts")
        return [
            Audio(np.asarray(wav, dtype=np.float32).reshape(-1), int(sample_rate)) for wav in wavs
        ]


def _pad_with_eos(model: Any) -> None:
    """Pad finished batch rows with EOS, as HF would anyway, minus its warning on every call."""
    generation_config = model.model.talker.generation_config
    if generation_config.pad_token_id is None:
        generation_config.pad_token_id = model.model.config.talker_config.codec_eos_token_id


def _default_model_id(path: Path, model: Any) -> str:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    seed = config.get(TINY_MARKER) if isinstance(config, dict) else None
    name = f"tiny-seed{seed}" if seed is not None else path.resolve().name
    return f"{name}:{model.model.config.speaker_encoder_config.enc_dim}"
