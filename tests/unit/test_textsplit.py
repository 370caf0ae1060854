"""split_text: sentence-sized chunks, nothing lost or reordered."""

from __future__ import annotations

import re

import numpy as np
import pytest

from qwen3_tts_server.engine.text.textsplit import split_text


def assert_faithful(text: str, chunks: list[str], max_chars: int) -> None:
    """Chunks are in-order substrings of text, separated only by whitespace, each short enough."""
    position = 0
    for chunk in chunks:
        assert chunk and chunk == chunk.strip() and len(chunk) <= max_chars
        found = text.find(chunk, position)
        assert found >= 0 and not text[position:found].strip(), (chunk, text[position:found])
        position = found + len(chunk)
    assert not text[position:].strip()
    assert re.sub(r"\s", "", "".join(chunks)) == re.sub(r"\s", "", text)


def test_short_text_is_one_chunk() -> None:
    assert split_text("  Hello there. How are you?  ", 100) == ["Hello there. How are you?"]


def test_blank_text_and_bad_limit() -> None:
    assert split_text(" \n\t ", 10) == []
    with pytest.raises(ValueError, match="max_chars"):
        split_text("Hi.", 0)


def test_latin_sentences() -> None:
    text = "The first one. The second one! A third? And the last..."
    assert split_text(text, 16) == [
        "The first one.",
        "The second one!",
        "A third?",
        "And the last...",
    ]


def test_sentences_are_packed_up_to_the_limit() -> None:
    text = "One. Two. Three. Four."
    assert split_text(text, 10) == ["One. Two.", "Three.", "Four."]


def test_cjk_sentences_need_no_spaces() -> None:
    text = "你好，世界。今天天气很好！我们去公园吧？「好的。」こんにちは。"
    assert split_text(text, 8) == [
        "你好，世界。",
        "今天天气很好！",
        "我们去公园吧？",
        "「好的。」",
        "こんにちは。",
    ]


def test_numbers_versions_and_abbreviations_stay_whole() -> None:
    text = (
        "Dr. Smith paid 3.14 dollars. Version v1.2 shipped at 5 p.m. on Monday. See e.g. the docs."
    )
    assert split_text(text, 45) == [
        "Dr. Smith paid 3.14 dollars.",
        "Version v1.2 shipped at 5 p.m. on Monday.",
        "See e.g. the docs.",
    ]
    assert split_text("J. R. R. Tolkien wrote it. It sold 1,000,000 copies.", 30) == [
        "J. R. R. Tolkien wrote it.",
        "It sold 1,000,000 copies.",
    ]


def test_long_sentences_fall_back_to_clauses_then_words_then_hard_cuts() -> None:
    assert split_text("apples, pears, plums; cherries: figs", 16) == [
        "apples, pears,",
        "plums; cherries:",
        "figs",
    ]
    assert split_text("一二三四五，六七八九十、甲乙丙丁", 6) == [
        "一二三四五，",
        "六七八九十、",
        "甲乙丙丁",
    ]
    assert split_text("many small words without any punctuation", 12) == [
        "many small",
        "words",
        "without any",
        "punctuation",
    ]
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


def test_line_breaks_end_sentences() -> None:
    assert split_text("Title\nFirst line\n\nSecond line", 12) == [
        "Title",
        "First line",
        "Second line",
    ]


@pytest.mark.parametrize("max_chars", [1, 3, 8, 20, 75])
def test_random_texts_are_split_faithfully(max_chars: int) -> None:
    alphabet = [
        *"abcdefghij ABC 0123456789 .,;:!?…\"'()。！？，、「」你好世界한국어\n\t",
        "  ",
        " 3.14 ",
    ]
    rng = np.random.default_rng(max_chars)
    for _ in range(200):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 160))))
        assert_faithful(text, split_text(text, max_chars), max_chars)
