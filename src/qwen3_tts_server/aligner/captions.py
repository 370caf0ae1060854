"""Captions from timed words: WebVTT, SubRip (SRT) and JSON.

Words are grouped into cues the way subtitles are usually cut: a cue ends after a sentence's
last word, before it would pass MAX_CUE_CHARS characters (one readable line), or before it
would last longer than MAX_CUE_SECONDS. Words of scripts written without spaces (Chinese,
Japanese) are joined without one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from qwen3_tts_server.aligner.words import is_cjk
from qwen3_tts_server.values import Word

MAX_CUE_CHARS = 42
MAX_CUE_SECONDS = 6.0
_SENTENCE_ENDS = tuple(".!?;…。！？；")

#: Caption formats: media type and file extension.
CAPTION_FORMATS = {
    "vtt": ("text/vtt; charset=utf-8", "vtt"),
    "srt": ("application/x-subrip; charset=utf-8", "srt"),
    "json": ("application/json", "json"),
}


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def _join(left: str, right: str) -> str:
    if not left:
        return right
    glue = "" if is_cjk(left[-1]) and is_cjk(right[0]) else " "
    return left + glue + right


def cues(words: Sequence[Word]) -> list[Cue]:
    """The words grouped into cues, in order (see the module docstring)."""
    found: list[Cue] = []
    text, start, end = "", 0.0, 0.0
    for word in words:
        longer = _join(text, word.text)
        if text and (len(longer) > MAX_CUE_CHARS or word.end - start > MAX_CUE_SECONDS):
            found.append(Cue(start, end, text))
            text, longer = "", word.text
        if not text:
            start = word.start
        text, end = longer, word.end
        if text.endswith(_SENTENCE_ENDS):
            found.append(Cue(start, end, text))
            text = ""
    if text:
        found.append(Cue(start, end, text))
    return found


def _clock(seconds: float, decimal: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def to_vtt(words: Sequence[Word]) -> str:
    """A WebVTT file."""
    blocks = ["WEBVTT"]
    for number, cue in enumerate(cues(words), start=1):
        span = f"{_clock(cue.start, '.')} --> {_clock(cue.end, '.')}"
        blocks.append(f"{number}\n{span}\n{cue.text}")
    return "\n\n".join(blocks) + "\n"


def to_srt(words: Sequence[Word]) -> str:
    """A SubRip file."""
    blocks = [
        f"{number}\n{_clock(cue.start, ',')} --> {_clock(cue.end, ',')}\n{cue.text}"
        for number, cue in enumerate(cues(words), start=1)
    ]
    return "\n\n".join(blocks) + "\n" if blocks else ""


def to_json(words: Sequence[Word], generation_id: int) -> str:
    """The words themselves, as /tts/timestamps answers them."""
    return json.dumps({"generation_id": generation_id, "words": [w.as_dict() for w in words]})


def render(fmt: str, words: Sequence[Word], generation_id: int) -> str:
    """The captions in `fmt` (a key of CAPTION_FORMATS)."""
    if fmt == "vtt":
        return to_vtt(words)
    if fmt == "srt":
        return to_srt(words)
    return to_json(words, generation_id)
