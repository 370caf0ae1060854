"""Text that arrives in pieces, cut into segments only where a sentence surely ended."""

from __future__ import annotations

import pytest

from qwen3_tts_server.engine.text.textsplit import complete_end
from qwen3_tts_server.services.realtime import Segmenter


@pytest.mark.parametrize(
    ("text", "complete"),
    [
        ("Hello world.", ""),  # what follows may still change it ("Hello world.com")
        ("Hello world. ", ""),
        ("Hello world. How", "Hello world."),
        ("Pi is 3.", ""),  # may become 3.14
        ("Pi is 3.14 ok. And", "Pi is 3.14 ok."),
        ("Dr. Smith", ""),  # an abbreviation, not an end
        ("Dr. Smith is in. Yes", "Dr. Smith is in."),
        ("Wow! Really? Yes", "Wow! Really?"),
        ("你好。", "你好。"),  # a full-width stop ends a sentence whatever follows
        ("line one\nline", "line one"),
    ],
)
def test_complete_end(text: str, complete: str) -> None:
    assert text[: complete_end(text)] == complete


def test_pieces_become_segments_once_each_sentence_is_complete() -> None:
    segmenter = Segmenter(max_chars=100)
    assert segmenter.add("Hello") == []
    assert segmenter.add(" there. How") == ["Hello there."]
    assert segmenter.add(" are you? Fine. Tha") == ["How are you? Fine."]  # packed together
    assert segmenter.add("nks") == []
    assert segmenter.flush() == ["Thanks"]
    assert segmenter.flush() == []


def test_a_run_on_is_cut_before_it_passes_the_limit() -> None:
    segmenter = Segmenter(max_chars=20)
    words = "one two three four five six seven eight nine ten"
    segments = segmenter.add(words)
    assert segments and all(len(segment) <= 20 for segment in segments)
    rest = segmenter.flush()
    assert " ".join(segments + rest) == words
