"""max_new_tokens_for: short texts cannot run on, long or slow speech is not cut."""

from __future__ import annotations

import pytest

from qwen3_tts_server.engine.text.bounds import (
    CONSTANT_FRAMES,
    FRAMES_PER_SECOND,
    HARD_CAP,
    max_new_tokens_for,
    max_new_tokens_for_batch,
    speech_units,
)


def frames_for(seconds: float) -> float:
    return seconds * FRAMES_PER_SECOND


def test_short_texts_get_a_short_bound() -> None:
    assert CONSTANT_FRAMES <= max_new_tokens_for("Hi.") <= frames_for(3.5)
    assert max_new_tokens_for("") == CONSTANT_FRAMES


def test_slow_latin_speech_fits() -> None:
    text = "This is an ordinary sentence that someone might read slowly and with feeling. " * 4
    # 7.5 characters per second is slow, expressive reading
    assert max_new_tokens_for(text) >= frames_for(len(text) / 7.5)


def test_slow_cjk_speech_fits_and_weighs_more() -> None:
    chinese = "今天天气很好我们一起去公园散步吧" * 5
    assert max_new_tokens_for(chinese) >= frames_for(len(chinese) / 2.2)
    assert max_new_tokens_for(chinese) > 3 * max_new_tokens_for("a" * len(chinese)) - 3 * 25
    assert speech_units("한국어") == speech_units("日本語") == speech_units("ひらが") > 3 * 3


def test_digits_are_read_out_as_words() -> None:
    assert speech_units("2024") > speech_units("abcd")


def test_whitespace_runs_count_once() -> None:
    assert speech_units("a  \n\t b") == speech_units("a b") == 3


def test_grows_with_text_and_stops_at_the_cap() -> None:
    bounds = [max_new_tokens_for("word " * n) for n in range(0, 2000, 50)]
    assert bounds == sorted(bounds)
    assert bounds[-1] == HARD_CAP
    assert max_new_tokens_for("word " * 100, cap=40) == 40
    with pytest.raises(ValueError, match="cap"):
        max_new_tokens_for("Hi.", cap=0)


def test_a_batch_takes_its_longest_text() -> None:
    texts = ["Hi.", "A much longer sentence than the first one, by far.", "Ok."]
    assert max_new_tokens_for_batch(texts) == max_new_tokens_for(texts[1])
    assert max_new_tokens_for_batch(texts, cap=10) == 10
    with pytest.raises(ValueError, match="at least one"):
        max_new_tokens_for_batch([])
