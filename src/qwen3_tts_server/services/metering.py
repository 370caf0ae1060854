"""Stream billing: what a stream has delivered, and what that costs.

The rule (README, Accounting): a stream reserves its whole text before any work. Once all its
audio has been sent it is charged len(text), like /tts. A stream the client leaves early is
charged the characters of its text up to the end of the last chunk (sentence group, as the
text is split for the model) any of whose audio the server handed to the connection, and the
rest of the reservation is released. A chunk counts from its first audio on, so hanging up
before a chunk's end never makes that chunk free; a chunk never sent costs nothing. A stream
the server fails (the model, a crash) costs nothing.

The meter is the hook between a stream's sender and the ledger: whatever sends audio (today a
model call's joined sentences, later single frames) calls `sent` with the index of the chunk
its audio belongs to before handing the audio over.
"""

from __future__ import annotations

from collections.abc import Sequence


class DeliveryMeter:
    def __init__(self, text: str, chunks: Sequence[str]) -> None:
        self._ends = chunk_ends(text, chunks)
        self._sent = 0
        #: Seconds of audio handed to the connection so far.
        self.audio_seconds = 0.0

    def sent(self, chunk_index: int, audio_seconds: float = 0.0) -> None:
        """Audio of chunk `chunk_index` (so of every chunk before it, too) is being sent."""
        if not 0 <= chunk_index < len(self._ends):
            raise IndexError(f"chunk {chunk_index} of {len(self._ends)}")
        self._sent = max(self._sent, chunk_index + 1)
        self.audio_seconds += audio_seconds

    @property
    def tokens(self) -> int:
        """What the delivered part costs: characters up to the end of the last chunk sent."""
        return self._ends[self._sent - 1] if self._sent else 0


def chunk_ends(text: str, chunks: Sequence[str]) -> list[int]:
    """Where each chunk ends in `text`. Chunks are substrings of the text, in order, with only
    whitespace between them (`split_text`'s guarantee), so each is found after the last."""
    ends: list[int] = []
    position = 0
    for chunk in chunks:
        start = text.find(chunk, position)
        if start < 0:
            raise ValueError("the chunks are not the text's substrings in order")
        position = start + len(chunk)
        ends.append(position)
    return ends
