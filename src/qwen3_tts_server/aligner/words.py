"""From the aligner's units back to the words of the text, with times a player can trust.

qwen-asr aligns units stripped of everything but letters, digits and apostrophes ("world!"
becomes "world", "U.S.A." becomes "USA"). A caption needs the text as written, so each unit
is found again in the text (by counting the characters qwen-asr keeps, which are exactly its
units' characters, in order) and grows to the punctuation around it: what follows a word up
to the next space is its own ("world!"), an opening mark before a word belongs to that word
("“Yes"), and a dash standing alone between spaces stays with the word before it. Texts
without spaces (Chinese) attach punctuation to the character before it.

Times are made safe here, whatever the model said: inside the audio, each end at or after its
start, and never going backwards from one word to the next. (Random-weight test models say
anything; the published model rarely needs this.)
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from qwen3_tts_server.values import Word


@dataclass(frozen=True)
class Unit:
    """One aligned unit as qwen-asr gives it (seconds from the start of the audio)."""

    text: str
    start: float
    end: float


def is_kept(char: str) -> bool:
    """The characters qwen-asr keeps in a unit (its `is_kept_char`)."""
    return char == "'" or unicodedata.category(char)[0] in "LN"


def is_cjk(char: str) -> bool:
    """Han, kana, and CJK or full-width punctuation: scripts written without spaces."""
    code = ord(char)
    return (
        0x2E80 <= code <= 0x30FF  # radicals, CJK punctuation, hiragana, katakana
        or 0x3400 <= code <= 0x9FFF  # Han (extension A and unified)
        or 0xF900 <= code <= 0xFAFF  # compatibility ideographs
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
        or 0x20000 <= code <= 0x2FA1F  # Han extensions B and beyond
    )


def words_of(text: str, units: Sequence[Unit], duration_s: float) -> list[Word]:
    """The words of `text`, spelled as written, with safe times within `duration_s`: one per
    space-separated word, or per unit where a script has no spaces (see `_joined`)."""
    slices = _word_slices(text, _unit_spans(text, units))
    words: list[Word] = []
    floor = 0.0
    for (begin, end), start, stop in _joined(text, slices, units):
        start = min(max(start, floor), duration_s)
        stop = min(max(stop, start), duration_s)
        floor = stop
        words.append(Word(text[begin:end], round(start, 3), round(stop, 3)))
    return words


def _joined(
    text: str, slices: Sequence[tuple[int, int]], units: Sequence[Unit]
) -> list[tuple[tuple[int, int], float, float]]:
    """Units of one space-separated word made one word again (Korean: qwen-asr splits a word
    into stem and ending), except in scripts without spaces (Chinese, Japanese), where each
    unit stays a word of its own."""
    joined: list[tuple[tuple[int, int], float, float]] = []
    for (begin, end), unit in zip(slices, units, strict=True):
        if joined:
            (first, last), start, _ = joined[-1]
            if last == begin and not is_cjk(text[last - 1]) and not is_cjk(text[begin]):
                joined[-1] = ((first, end), start, unit.end)
                continue
        joined.append(((begin, end), unit.start, unit.end))
    return joined


def _unit_spans(text: str, units: Sequence[Unit]) -> list[tuple[int, int]]:
    """Where each unit lies in `text`: its first and one past its last kept character."""
    kept = [index for index, char in enumerate(text) if is_kept(char)]
    spans = []
    position = 0
    for unit in units:
        if position >= len(kept):  # never expected: a unit the text does not have
            spans.append((len(text), len(text)))
            continue
        last = min(position + max(len(unit.text), 1), len(kept)) - 1
        spans.append((kept[position], kept[last] + 1))
        position = last + 1
    return spans


def _word_slices(text: str, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Each unit's span grown to the punctuation around it (see the module docstring)."""
    if not spans:
        return []
    begins = [len(text) - len(text.lstrip())] + [0] * (len(spans) - 1)
    ends = [0] * (len(spans) - 1) + [len(text.rstrip())]
    for index in range(1, len(spans)):
        previous_end, start = spans[index - 1][1], spans[index][0]
        gap = text[previous_end:start]
        cut = max((i for i, char in enumerate(gap) if char.isspace()), default=-1)
        if cut < 0:  # no space in between: everything goes with the unit before
            ends[index - 1] = begins[index] = start
        else:
            ends[index - 1] = previous_end + len(gap[:cut].rstrip())
            begins[index] = previous_end + cut + 1
    return [
        (min(begin, span[0]), max(end, span[1]))
        for begin, end, span in zip(begins, ends, spans, strict=True)
    ]


def words_to_json(words: Sequence[Word]) -> str:
    """How a stored generation keeps its words (its `words` column)."""
    return json.dumps([[word.text, word.start, word.end] for word in words], ensure_ascii=False)


def words_from_json(data: str) -> tuple[Word, ...]:
    return tuple(Word(str(text), float(start), float(end)) for text, start, end in json.loads(data))
