"""The playback figures of a stream, from arrival times and piece durations."""

from __future__ import annotations

from qwen3_tts_server.services.playback import PlaybackClock, StreamQuality


def _play(pieces: list[tuple[float, float]]) -> StreamQuality | None:
    clock = PlaybackClock(started=100.0)
    for at, seconds in pieces:
        clock.arrived(seconds, now=100.0 + at)
    return clock.quality()


def test_nothing_sent_has_no_figures() -> None:
    assert _play([]) is None


def test_a_stream_faster_than_real_time_never_runs_dry() -> None:
    # 1 s pieces every 0.5 s: always ahead of playback.
    assert _play([(0.3, 1.0), (0.8, 1.0), (1.3, 1.0)]) == StreamQuality(300, 0, 300)


def test_a_slow_piece_is_an_underrun_and_moves_the_safe_start() -> None:
    # Plays 0.3..1.3; the second piece comes at 2.0: 0.7 s dry, then plays 2.0..3.0; the third
    # at 3.1: 0.1 s dry. The safe start is max(0.3 - 0, 2.0 - 1.0, 3.1 - 2.0) = 1.1 s.
    assert _play([(0.3, 1.0), (2.0, 1.0), (3.1, 1.0)]) == StreamQuality(300, 700, 1100)


def test_the_safe_start_has_no_underrun() -> None:
    """Delaying the start to the safe start removes every gap, whatever the arrivals."""
    pieces = [(0.2, 0.5), (0.9, 0.25), (1.0, 0.5), (2.4, 1.0), (2.5, 0.1)]
    safe = _play(pieces)
    assert safe is not None and safe.largest_underrun_ms > 0
    start = safe.safe_start_ms / 1000
    played = start
    for at, seconds in pieces:
        assert at <= played + 1e-9  # each piece is there by the time it must play
        played += seconds
