"""Streams are paid for what was delivered, over real HTTP on a loopback port.

The rule (README, Accounting; services/metering.py): the whole text is reserved before any
work; a complete stream costs len(text); a client that hangs up is charged the text up to the
end of the last chunk any of whose audio was sent, and the rest of the reservation goes back.
Before this rule, a client could read all but the last chunk, hang up, and pay nothing.

TEXT has five one-sentence chunks, run one after another in the loop's one slot
(ENGINE_MAX_BATCH=1). Holding the third chunk's admission stops the loop once the first two
chunks' audio exists; the second chunk's audio starts with the sentence pause (zeros), which is
how the client knows it holds audio of the second chunk.
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
#: Characters of TEXT up to the end of its second sentence (chunk).
TWO_SENTENCES = len("The first sentence. The second one.")


@pytest.fixture
def held_third_call(engine: Engine) -> Iterator[ScriptedEngine]:
    held = ScriptedEngine(engine, hold=3)
    yield held
    held.proceed.set()


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
            assert held.holding.wait(30)  # chunks 1 and 2 are done; chunk 3 waits
            pause = bytes(2 * PAUSE)  # s16le zeros: the start of the second chunk's audio
            received = b""
            chunks = response.iter_raw()
            while pause not in received[1:] or received.rindex(pause) + len(pause) == len(received):
                received += next(chunks)
        # The client has audio of the first two sentences and is gone.
        row = wait_until_settled(tmp_path, generation_id)
        assert row["status"] == "cancelled"
        assert row["tokens_used"] == TWO_SENTENCES
        assert row["audio_seconds"] > 0
        usage = http.get("/usage", headers=headers).json()
        assert usage["tts_calls"] == 1 and usage["tokens_used_tts"] == TWO_SENTENCES
        assert usage["audio_seconds_total"] == pytest.approx(row["audio_seconds"], abs=1e-3)
        # The metrics count the charge too (right after the row is settled).
        charged = f'qwen3_tts_tokens_charged_total{{kind="tts"}} {float(TWO_SENTENCES)}'
        deadline = time.monotonic() + 30
        while charged not in http.get("/metrics").text:
            assert time.monotonic() < deadline, "the partial charge never reached the metrics"
            time.sleep(0.05)
    assert held.calls == 3  # the held chunk never ran for it: nothing more was sent


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
            held.proceed.set()
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
