"""How a stream plays on the other end: when its first audio came, whether it ran dry.

Users of streaming speech judge it by gaps, not by averages. A stream's pieces reach the
connection at times t_i (seconds from the call's submission), each holding d_i seconds of
audio. From those alone:

- first audio: t_0, the wait before anything can play;
- largest underrun: a player that starts at t_0 and plays every piece as soon as it has it
  runs dry whenever a piece arrives after the audio before it has finished playing; the
  longest such silence (0 when it never runs dry);
- safe play start: the earliest start with no underrun at all, max_i (t_i - A_i), where A_i is
  the audio received before piece i (so at least t_0). A client that buffers until then plays
  the stream without a gap.

Measured where the server hands a piece to the connection, so network time is not included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class StreamQuality:
    """The three figures above, in milliseconds."""

    first_audio_ms: int
    largest_underrun_ms: int
    safe_start_ms: int


class PlaybackClock:
    """Follows one stream's pieces as they are sent (`arrived`), and plays them in thought."""

    def __init__(self, started: float) -> None:
        """`started`: time.perf_counter() when the call was submitted."""
        self._started = started
        self._first: float | None = None
        self._received_s = 0.0
        self._plays_until = 0.0
        self._largest_gap = 0.0
        self._safe_start = 0.0

    def arrived(self, seconds: float, now: float | None = None) -> None:
        """A piece of `seconds` of audio is being handed to the connection (at `now`)."""
        at = (time.perf_counter() if now is None else now) - self._started
        if self._first is None:
            self._first = self._plays_until = at
        self._safe_start = max(self._safe_start, at - self._received_s)
        if at > self._plays_until:  # the player ran dry, and resumes now
            self._largest_gap = max(self._largest_gap, at - self._plays_until)
            self._plays_until = at
        self._plays_until += seconds
        self._received_s += seconds

    def quality(self) -> StreamQuality | None:
        """The stream's figures so far; None before any audio was sent."""
        if self._first is None:
            return None
        return StreamQuality(
            first_audio_ms=round(self._first * 1000),
            largest_underrun_ms=round(self._largest_gap * 1000),
            safe_start_ms=round(self._safe_start * 1000),
        )
