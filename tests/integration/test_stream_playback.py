"""A stream's playback figures: first audio, the longest underrun, the safe play start; on its
row and in /metrics.

The model is held for a while before the third of five sentences, as an overloaded server
would stall: a player that started at the first audio runs dry for most of that pause, and the
safe play start moves out by at least as much.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from streamkit import ScriptedEngine, generation_row, live_user, stream_body

from conftest import LiveServer
from qwen3_tts_server.engine.base import Engine

#: How long the model stalls before the third sentence; far above the ~2 s of audio before it.
STALL_S = 4.0


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


def test_a_stalled_stream_records_its_underrun_and_safe_start(
    live_server: Callable[..., LiveServer], engine: Engine, tmp_path: Path
) -> None:
    scripted = ScriptedEngine(engine, hold=3)
    with live_user(live_server, scripted) as (_, http, headers, voice_id):

        def stall_then_release() -> None:
            assert scripted.holding.wait(60)
            time.sleep(STALL_S)
            scripted.proceed.set()

        release = threading.Thread(target=stall_then_release)
        release.start()
        with http.stream("POST", "/tts", headers=headers, json=stream_body(voice_id=voice_id)) as r:
            assert r.status_code == 200
            generation_id = r.headers["x-generation-id"]
            body = b"".join(r.iter_bytes())
        release.join()
        assert body
        # observed as the response ends, which may be a moment after its last byte arrives
        deadline = time.monotonic() + 30
        while "qwen3_tts_stream_underrun_seconds_count 1.0" not in (
            metrics := http.get("/metrics").text
        ):
            assert time.monotonic() < deadline, "the stream's figures never reached /metrics"
            time.sleep(0.05)
    row = generation_row(tmp_path, generation_id)
    assert row["status"] == "ok"
    first, underrun, safe = row["first_audio_ms"], row["underrun_ms"], row["safe_start_ms"]
    assert 0 < first < safe
    assert underrun >= 1000  # most of the stall: at most ~2 s of audio was there to play
    # Starting late by every dry spell together plays without a gap, so at least the longest.
    assert safe >= first + underrun - 1
    assert _metric(metrics, "qwen3_tts_stream_underrun_seconds_count") == 1
    assert _metric(metrics, "qwen3_tts_stream_underrun_seconds_sum") == underrun / 1000
    assert _metric(metrics, 'qwen3_tts_stream_underrun_seconds_bucket{le="0.75"}') == 0
    assert _metric(metrics, "qwen3_tts_stream_safe_start_seconds_sum") == safe / 1000
    assert _metric(metrics, "qwen3_tts_stream_first_audio_seconds_sum") == first / 1000
