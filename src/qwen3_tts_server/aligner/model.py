"""The loaded Qwen3-ForcedAligner: passages (text + its audio) in, the text's words with times out.

qwen-asr does the work: its `Qwen3ForcedAligner` splits the text into units (space-separated
words without punctuation; one unit per Chinese character; nagisa words for Japanese, soynlp
words for Korean), runs one forward pass over the audio features and the text, reads a time
class (80 ms) at every `<timestamp>` token and repairs times that go backwards. words.py then
gives those units back the text's own spelling and punctuation.

Audio is resampled here (soxr, like every other resampling in the server) to the aligner's
16 kHz and handed over as an array, never a string: qwen-asr would take a string for a path,
a URL to fetch, or base64.

Not thread-safe (the thinker keeps `rope_deltas` on itself during a call): worker.py runs
every call on one thread.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qwen3_tts_server.aligner.compat import import_qwen_asr
from qwen3_tts_server.aligner.files import is_complete_aligner_dir
from qwen3_tts_server.aligner.words import Unit, words_of
from qwen3_tts_server.audio.resample import resample
from qwen3_tts_server.engine.base import ModelsMissing
from qwen3_tts_server.values import Audio, Word

log = logging.getLogger(__name__)

#: The aligner's input rate (its feature extractor's).
ALIGNER_RATE = 16000
#: Passages per forward pass: bounds the padded batch's memory on long batches.
MAX_PASSAGES_PER_CALL = 8

_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")


@dataclass(frozen=True)
class Passage:
    """One text and the audio spoken for it; `language` is an API language name or "auto"."""

    audio: Audio
    text: str
    language: str


def aligner_language(language: str, text: str) -> str:
    """The language name qwen-asr splits `text` by. Only Japanese and Korean have splitters of
    their own; every other language (Chinese too: one unit per character) shares the
    space-and-CJK splitter, so "auto" only needs to tell those two apart by their scripts."""
    name = language.strip().lower()
    if name == "auto":
        if _KANA.search(text):
            return "Japanese"
        return "Korean" if _HANGUL.search(text) else "English"
    return name.capitalize()


def _pick_device(device: str) -> str:
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return "cuda:0" if device == "cuda" else device


def _pick_dtype(dtype: str, device: str) -> torch.dtype:
    """bfloat16 on CUDA, float32 on CPUs (where bf16 matmuls are not everywhere fast)."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    resolved: torch.dtype = getattr(torch, dtype)
    return resolved


class ForcedAligner:
    """A loaded aligner. `model_id` names it in logs and /ready."""

    def __init__(self, wrapped: Any, model_id: str, device: str) -> None:
        self._wrapped = wrapped
        self.model_id = model_id
        self.device = device

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", dtype: str = "auto") -> ForcedAligner:
        """Load from a local directory (no network): on CUDA when asked or available."""
        if not is_complete_aligner_dir(Path(path)):
            raise ModelsMissing(f"{path} is not a complete aligner directory")
        qwen_asr = import_qwen_asr()
        resolved = _pick_device(device)
        started = time.perf_counter()
        wrapped = qwen_asr.Qwen3ForcedAligner.from_pretrained(
            str(path), dtype=_pick_dtype(dtype, resolved), device_map=resolved
        )
        wrapped.model.eval()
        log.info("loaded aligner %s in %.1f s", path, time.perf_counter() - started)
        return cls(wrapped, Path(path).name, resolved)

    @property
    def parameter_count(self) -> int:
        return sum(parameter.numel() for parameter in self._wrapped.model.parameters())

    def align(self, passages: Sequence[Passage]) -> list[list[Word]]:
        """Each passage's words, in order, times in seconds from the start of its own audio."""
        results: list[list[Word]] = [[] for _ in passages]
        splitter = self._wrapped.aligner_processor
        languages = [aligner_language(p.language, p.text) for p in passages]
        # A text without a single letter or digit has no unit to align (and qwen-asr cannot
        # take an empty one): it simply has no words.
        todo = [
            index
            for index, passage in enumerate(passages)
            if splitter.encode_timestamp(passage.text, languages[index])[0]
        ]
        for start in range(0, len(todo), MAX_PASSAGES_PER_CALL):
            batch = todo[start : start + MAX_PASSAGES_PER_CALL]
            aligned = self._wrapped.align(
                audio=[_at_aligner_rate(passages[i].audio) for i in batch],
                text=[passages[i].text for i in batch],
                language=[languages[i] for i in batch],
            )
            for index, result in zip(batch, aligned, strict=True):
                units = [Unit(item.text, item.start_time, item.end_time) for item in result]
                passage = passages[index]
                results[index] = words_of(passage.text, units, passage.audio.duration_s)
        return results


def _at_aligner_rate(audio: Audio) -> tuple[Any, int]:
    return resample(audio.samples, audio.sample_rate, ALIGNER_RATE), ALIGNER_RATE
