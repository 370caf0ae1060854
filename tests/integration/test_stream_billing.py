"""Streams are paid for what was delivered, over real HTTP on a loopback port.

The rule (README, Accounting; services/metering.py): the whole text is reserved before any
work; a complete stream costs len(text); a client that hangs up is charged the text up to the
end of the last chunk any of whose audio was sent, and the rest of the reservation goes back.
Before this rule, a client could read all but the last chunk, hang up, and pay nothing.

TEXT has five one-sentence chunks; with ENGINE_MAX_BATCH=2 the model calls are [1], [2, 3],
[4, 5]. Holding the third call lets the client read exactly the first two calls' audio.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from quotakit import TRANSCRIPT, totals
from streamkit import TEXT, ScriptedEngine, live_user, stream_body, wait_until_settled

from conftest import LiveServer
from qwen3_tts_server.engine.base import Engine
from qwen3_tts_server.services.speech import SENTENCE_PAUSE_S

RATE = 24000
PAUSE = int(RATE * SENTENCE_PAUSE_S)
#: Characters of TEXT up to the end of its third sentence (the end of the second model call).
THREE_SENTENCES = len("The first sentence. The second one. A third sentence.")


@pytest.fixture
def held_third_call(engine: Engine) -> Iterator[ScriptedEngine]:
    held = ScriptedEngine(engine, hold=3)
    yield held
    held.release.set()


def _db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'db.sqlite3'}"


def test_hanging_up_before_the_last_chunk_pays_for_the_chunks_received(
    live_server: Callable[..., LiveServer], held_third_call: ScriptedEngine, tmp_path: Path
) -> None:
    held = held_third_call
    with live_user(live_server, held) as (_, http, headers, voice_id):
        body = stream_body(voice_id=voice_id, format="pcm")
        with http.stream("POST", "/tts", headers=headers, json=body) as response:
            assert response.status_code == 200
            assert response.headers["x-tokens-used"] == str(len(TEXT))  # if read to the end
            generation_id = response.headers["x-generation-id"]
            assert held.holding.wait(30)  # calls 1 and 2 are done; call 3 waits
            [first], [second, third] = held.outputs
            expected = 2 * (first + PAUSE + second + PAUSE + third)  # s16le: 2 bytes a sample
            received = b""
            chunks = response.iter_raw()
            while len(received) < expected:
                received += next(chunks)
            assert len(received) == expected
        # The client has the first three sentences' audio and is gone.
        row = wait_until_settled(tmp_path, generation_id)
        assert row["status"] == "cancelled"
        assert row["tokens_used"] == THREE_SENTENCES
        assert row["audio_seconds"] == pytest.approx(expected / 2 / RATE)
        usage = http.get("/usage", headers=headers).json()
        assert usage["tts_calls"] == 1 and usage["tokens_used_tts"] == THREE_SENTENCES
        assert usage["audio_seconds_total"] == pytest.approx(expected / 2 / RATE, abs=1e-3)
        # The metrics count the charge too (right after the row is settled).
        charged = f'qwen3_tts_tokens_charged_total{{kind="tts"}} {float(THREE_SENTENCES)}'
        deadline = time.monotonic() + 30
        while charged not in http.get("/metrics").text:
            assert time.monotonic() < deadline, "the partial charge never reached the metrics"
            time.sleep(0.05)
    assert held.calls == 3  # the held call never finished for it: nothing more was sent


def test_a_stream_holds_its_whole_text_until_it_ends_then_keeps_only_the_charge(
    live_server: Callable[..., LiveServer], held_third_call: ScriptedEngine, tmp_path: Path
) -> None:
    held = held_third_call
    with live_user(live_server, held) as (_, http, headers, voice_id):
        user_id = _user_id(tmp_path)
        body = stream_body(voice_id=voice_id, format="pcm")
        with http.stream("POST", "/tts", headers=headers, json=body) as response:
            generation_id = response.headers["x-generation-id"]
            assert held.holding.wait(30)
            during = totals(_db(tmp_path), user_id)
            held.release.set()
            audio = response.read()
        assert during["tokens_reserved"] == len(TEXT) and during["reservations"] == 1
        assert during["tokens_used"] == len(TRANSCRIPT)  # the clone; nothing for the stream yet
        row = wait_until_settled(tmp_path, generation_id)
        assert row["status"] == "ok" and row["tokens_used"] == len(TEXT)
        assert row["audio_seconds"] == pytest.approx(len(audio) / 2 / RATE)
        after = totals(_db(tmp_path), user_id)
        assert after["tokens_used"] == len(TRANSCRIPT) + len(TEXT)
        assert after["tokens_reserved"] == 0 and after["reservations"] == 0


def _user_id(tmp_path: Path) -> int:
    """The one user of these tests."""
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        [(user_id,)] = db.execute("SELECT id FROM users").fetchall()
    return int(user_id)
