"""Split long input into chunks the model speaks well: whole sentences, at most `max_chars` each.

Why: generation cost and the risk of drift grow with the length of one item, while a batch of
sentence-sized items runs in one padded call. Chunks are runs of whole sentences packed up to
`max_chars` (fewer, longer items keep prosody natural); a sentence longer than that is cut at
clause marks, then at whitespace, and only as a last resort at exactly `max_chars`.

Guarantee: the chunks, in order, are substrings of the input; nothing is dropped or reordered
except whitespace at chunk edges. A false sentence break costs prosody, a missed one costs
nothing (the fallbacks still bound the length), so the rules lean towards not breaking:
"3.14", "v1.2", "Dr. Smith", "J. Smith" and "e.g. this" stay whole.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

from qwen3_tts_server.engine.text.bounds import is_cjk

_CLOSERS = "\"'”’»)]}」』）】》〉"
_TERMINATOR_RUN = re.compile(rf"[。！？｡.!?…]+[{re.escape(_CLOSERS)}]*")
_FULLWIDTH_TERMINATORS = frozenset("。！？｡")
_NEWLINES = re.compile(r"\n+")
# Clause marks: ASCII ones only before whitespace (keeps "3,000" and "12:30"), CJK ones always.
_CLAUSE = re.compile(rf"(?:[,;:—–](?=\s)|[，；：、])[{re.escape(_CLOSERS)}]*")
_WHITESPACE = re.compile(r"\s+")
_WORD_BEFORE = re.compile(r"([A-Za-z]+(?:\.[A-Za-z]+)*)$")

#: Words that end with a period without ending the sentence (lowercase, without the final dot).
ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e",
        "cf", "no", "nos", "fig", "figs", "vol", "inc", "ltd", "co", "corp", "dept", "approx",
        "est", "gen", "gov", "sen", "rep", "rev", "capt", "col", "lt", "sgt", "jan", "feb",
        "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "a.m", "p.m",
        "u.s", "u.k", "ph.d", "ca", "op", "pp",
    }
)  # fmt: skip

_CutFinder = Callable[[str, int, int], list[int]]


def _ends_sentence(text: str, start: int, end: int) -> bool:
    """Does the terminator run text[start:end] end a sentence?"""
    run = text[start:end]
    if any(char in _FULLWIDTH_TERMINATORS for char in run):
        return True
    following = text[end] if end < len(text) else ""
    if following and not following.isspace() and not is_cjk(following):
        return False  # "3.14", "v1.2", "a.m." inside a word
    if run.rstrip(_CLOSERS) != ".":
        return True  # "!", "?", "...", "?!"
    word = _WORD_BEFORE.search(text, max(0, start - 16), start)
    if word is not None:
        token = word.group(1)
        if len(token) == 1 or token.lower() in ABBREVIATIONS:
            return False  # "J. Smith", "Dr. Smith"
    next_text = text[end:].lstrip()
    return not (next_text[:1].islower())  # "approx. five" continues the sentence


def _sentence_cuts(text: str, start: int, end: int) -> list[int]:
    cuts = [
        match.end()
        for match in _TERMINATOR_RUN.finditer(text, start, end)
        if _ends_sentence(text, match.start(), match.end())
    ]
    cuts += [match.start() for match in _NEWLINES.finditer(text, start, end)]
    return sorted(set(cuts))


def _clause_cuts(text: str, start: int, end: int) -> list[int]:
    return [match.end() for match in _CLAUSE.finditer(text, start, end)]


def _whitespace_cuts(text: str, start: int, end: int) -> list[int]:
    return [match.start() for match in _WHITESPACE.finditer(text, start, end)]


_LEVELS: tuple[_CutFinder, ...] = (_sentence_cuts, _clause_cuts, _whitespace_cuts)


def _stripped_len(text: str, start: int, end: int) -> int:
    return len(text[start:end].strip())


def _hard_cut(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    piece = text[start:end]
    first = start + (len(piece) - len(piece.lstrip()))
    last = start + len(piece.rstrip())
    return [(pos, min(pos + max_chars, last)) for pos in range(first, last, max_chars)]


def _pack(
    text: str, start: int, end: int, max_chars: int, levels: tuple[_CutFinder, ...]
) -> list[tuple[int, int]]:
    """Spans covering text[start:end] in order, each at most max_chars once stripped."""
    if _stripped_len(text, start, end) <= max_chars:
        return [(start, end)]
    if not levels:
        return _hard_cut(text, start, end, max_chars)
    cuts = [cut for cut in levels[0](text, start, end) if start < cut < end]
    bounds = [start, *cuts, end]
    spans: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for piece_start, piece_end in itertools.pairwise(bounds):
        if current is not None and _stripped_len(text, current[0], piece_end) <= max_chars:
            current = (current[0], piece_end)
            continue
        if current is not None:
            spans.append(current)
            current = None
        if _stripped_len(text, piece_start, piece_end) <= max_chars:
            current = (piece_start, piece_end)
        else:
            spans.extend(_pack(text, piece_start, piece_end, max_chars, levels[1:]))
    if current is not None:
        spans.append(current)
    return spans


def split_text(text: str, max_chars: int) -> list[str]:
    """Chunks of `text` in order, each at most `max_chars` characters; [] for blank text."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    chunks = (text[a:b].strip() for a, b in _pack(text, 0, len(text), max_chars, _LEVELS))
    return [chunk for chunk in chunks if chunk]


def complete_end(text: str) -> int:
    """Where the sentences of `text` that are surely complete end (0: none is yet).

    For text that is still arriving (a realtime session): a terminator ends a sentence for sure
    only once the text after it is known, since "3." may become "3.14" and "Dr." may be followed
    by a name. So a cut counts when more than whitespace follows it, or when it is a full-width
    terminator or a line break, which end a sentence whatever comes next.
    """
    last = 0
    for match in _TERMINATOR_RUN.finditer(text):
        if not _ends_sentence(text, match.start(), match.end()):
            continue
        fullwidth = any(char in _FULLWIDTH_TERMINATORS for char in match.group())
        if fullwidth or text[match.end() :].strip():
            last = match.end()
    for match in _NEWLINES.finditer(text):
        last = max(last, match.start())
    return last
