"""How many codec frames a text may generate: the `max_new_tokens` of every model call.

Why a bound at all: qwen-tts stops when the talker emits EOS, and a known upstream failure is that
short texts sometimes never get one and run on to the default 2048 frames (164 s of babble).
Why proportional to the text: a fixed small bound cuts long texts and slow, emotional speech.

The numbers:

* The 12 Hz codec makes 12.5 frames per second of audio (one frame = 80 ms).
* Ordinary read speech runs at about 15 characters per second for Latin, Cyrillic and similar
  scripts (≈150 words/min, ≈6 characters per word including the space), so one such character is
  ≈0.83 frames.
* CJK scripts carry more sound per character: Mandarin is read at ≈4-5 characters/s, Japanese
  kana/kanji and Korean hangul at ≈5-7 syllables/s. A CJK character therefore weighs 3.5 Latin
  characters (≈2.9 frames).
* Digits are read out as words ("2024" → "twenty twenty-four"), about three characters of
  speech per digit.
* Headroom ×2.0 keeps slow, expressive speech (7-8 Latin characters/s, ≈2 CJK characters/s)
  whole, and a constant 25 frames (2 s) covers leading/trailing silence and very short texts
  ("Hi." must be allowed a breath).
* The hard cap (2048 frames ≈ 164 s, the upstream default) is the most one item may ever take;
  the synthesis service splits long inputs into sentences well below it.

A batch shares one `max_new_tokens`, so a call uses the bound of its longest text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

FRAMES_PER_SECOND = 12.5
LATIN_CHARS_PER_SECOND = 15.0
CJK_WEIGHT = 3.5
DIGIT_WEIGHT = 3.0
HEADROOM = 2.0
CONSTANT_FRAMES = 25
HARD_CAP = 2048

# Han (incl. extension A and compatibility), kana, hangul syllables and jamo, CJK punctuation.
_CJK_RANGES: tuple[tuple[int, int], ...] = (
    (0x1100, 0x11FF),
    (0x3000, 0x30FF),
    (0x3130, 0x318F),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7AF),
    (0xF900, 0xFAFF),
    (0xFF01, 0xFF0F),
    (0xFF66, 0xFF9F),
    (0x20000, 0x2FFFF),
)


def is_cjk(char: str) -> bool:
    """Han, kana or hangul (or CJK punctuation): scripts with more sound per character."""
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def speech_units(text: str) -> float:
    """Length of `text` in "Latin characters of speech" (whitespace runs count once)."""
    units = 0.0
    previous_space = True
    for char in text:
        if char.isspace():
            if not previous_space:
                units += 1.0
            previous_space = True
            continue
        previous_space = False
        if is_cjk(char):
            units += CJK_WEIGHT
        elif char.isdigit():
            units += DIGIT_WEIGHT
        else:
            units += 1.0
    return units


def max_new_tokens_for(text: str, *, cap: int = HARD_CAP) -> int:
    """Frames `text` may generate: expected frames x HEADROOM + CONSTANT_FRAMES, at most `cap`."""
    if cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap}")
    expected = speech_units(text) * FRAMES_PER_SECOND / LATIN_CHARS_PER_SECOND
    return min(cap, math.ceil(expected * HEADROOM) + CONSTANT_FRAMES)


def max_new_tokens_for_batch(texts: Iterable[str], *, cap: int = HARD_CAP) -> int:
    """One bound for one model call: that of its longest text (qwen-tts takes one per call)."""
    bounds = [max_new_tokens_for(text, cap=cap) for text in texts]
    if not bounds:
        raise ValueError("a model call needs at least one text")
    return max(bounds)
