"""The stream meter: what the chunks a stream sent cost, for the texts `split_text` cuts."""

from __future__ import annotations

import pytest

from qwen3_tts_server.engine.text.textsplit import split_text
from qwen3_tts_server.services.metering import DeliveryMeter, chunk_ends

TEXTS = [
    "One. Two? Three!",
    "Dr. Smith paid 3.14 dollars.\n\nThen   he left, quietly; nobody saw him go.",
    "今天的天气很好。我们一起去公园散步吧！看看湖边的花和树。",
    "a" * 95,  # no break at all: hard cuts
    "Short, then a much longer clause that goes on and on, until it has to be cut somewhere.",
]


@pytest.mark.parametrize("text", TEXTS)
def test_each_chunk_ends_where_it_is_in_the_text_and_the_last_at_its_end(text: str) -> None:
    chunks = split_text(text, 20)
    ends = chunk_ends(text, chunks)
    assert ends[-1] == len(text)  # a stream read to its end costs len(text)
    for chunk, end in zip(chunks, ends, strict=True):
        assert text[end - len(chunk) : end] == chunk
    assert ends == sorted(ends)


def test_the_meter_charges_up_to_the_last_chunk_sent() -> None:
    text = "The first sentence. The second one. A third sentence."
    meter = DeliveryMeter(text, split_text(text, 20))
    assert meter.tokens == 0  # nothing sent, nothing owed
    meter.sent(0, 1.0)
    assert meter.tokens == len("The first sentence.")
    meter.sent(2, 0.5)  # a piece of two chunks: the second and the third
    assert meter.tokens == len(text) and meter.audio_seconds == 1.5
    meter.sent(1)  # late news of an earlier chunk never lowers the charge
    assert meter.tokens == len(text)
    with pytest.raises(IndexError):
        meter.sent(3)


def test_chunks_that_are_not_the_texts_own_are_refused() -> None:
    with pytest.raises(ValueError, match="substrings in order"):
        chunk_ends("One. Two.", ["Two.", "One."])
