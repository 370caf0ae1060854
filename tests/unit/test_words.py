"""From the aligner's units to the text's words (aligner/words.py) and on to captions
(aligner/captions.py): pure functions, checked on hand-made units."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_tts_server.aligner.captions import cues, to_srt, to_vtt
from qwen3_tts_server.aligner.words import Unit, words_from_json, words_of, words_to_json
from qwen3_tts_server.services.timestamps import place_text
from qwen3_tts_server.values import Audio, Word


def _units(*texts: str, step: float = 0.5) -> list[Unit]:
    return [Unit(text, i * step, i * step + 0.3) for i, text in enumerate(texts)]


def _texts(text: str, *units: str) -> list[str]:
    return [word.text for word in words_of(text, _units(*units), 100.0)]


def test_punctuation_goes_with_its_word() -> None:
    text = '  "Hello," she said — U.S.A.! It\'s (fine).  '
    units = ("Hello", "she", "said", "USA", "It's", "fine")
    assert _texts(text, *units) == ['"Hello,"', "she", "said —", "U.S.A.!", "It's", "(fine)."]


def test_chinese_is_one_word_per_character_with_its_punctuation() -> None:
    assert _texts("你好，世界。OK", "你", "好", "世", "界", "OK") == [
        "你",
        "好，",
        "世",
        "界。",
        "OK",
    ]


def test_korean_units_of_one_word_are_joined_again() -> None:
    text = "안녕하세요, 반갑습니다."
    words = words_of(text, _units("안녕", "하세요", "반갑", "습니다"), 100.0)
    assert [(w.text, w.start, w.end) for w in words] == [
        ("안녕하세요,", 0.0, 0.8),
        ("반갑습니다.", 1.0, 1.8),
    ]


def test_times_are_clamped_ordered_and_inside_the_audio() -> None:
    units = [Unit("a", 2.0, 1.0), Unit("b", 0.5, 0.7), Unit("c", 280.0, 281.0)]
    words = words_of("a b c", units, 3.0)
    assert [(w.start, w.end) for w in words] == [(2.0, 2.0), (2.0, 2.0), (3.0, 3.0)]


def test_words_round_trip_through_their_column() -> None:
    words = (Word("Grüße,", 0.0, 0.25), Word("世界", 0.25, 1.5))
    assert words_from_json(words_to_json(words)) == words


def test_cues_end_at_sentences_and_stay_short() -> None:
    words = [
        Word(f"w{i}.", i, i + 0.5) if i == 2 else Word(f"word{i}", i, i + 0.5) for i in range(20)
    ]
    found = cues(words)
    assert found[0].text == "word0 word1 w2."
    assert all(len(cue.text) <= 42 and cue.end - cue.start <= 6.0 for cue in found)
    assert " ".join(cue.text for cue in found) == " ".join(w.text for w in words)


def test_cjk_cues_join_without_spaces() -> None:
    words = [Word("你", 0, 0.2), Word("好，", 0.2, 0.4), Word("OK", 0.4, 0.6)]
    assert [cue.text for cue in cues(words)] == ["你好， OK"]


@pytest.mark.parametrize(
    ("render", "clock"),
    [(to_vtt, "00:01:02.345 --> 01:00:00.000"), (to_srt, "00:01:02,345 --> 01:00:00,000")],
)
def test_clock_formats(render: object, clock: str) -> None:
    assert callable(render)
    assert clock in render([Word("Hi.", 62.345, 3600.0)])


def test_chunk_words_are_placed_after_the_chunks_and_pauses_before_them() -> None:
    rate = 24000
    parts = [Audio(np.zeros(rate, np.float32), rate), Audio(np.zeros(2 * rate, np.float32), rate)]
    per_chunk = [[Word("One.", 0.1, 0.5)], [Word("Two", 0.0, 0.4), Word("three.", 0.5, 1.9)]]
    placed = place_text(per_chunk, parts, speed=1.0, duration_s=3.12)
    assert [(w.start, w.end) for w in placed] == [(0.1, 0.5), (1.12, 1.52), (1.62, 3.02)]
    faster = place_text(per_chunk, parts, speed=2.0, duration_s=1.56, lead_s=0.12)
    assert [(w.start, w.end) for w in faster] == [(0.11, 0.31), (0.62, 0.82), (0.87, 1.56)]
