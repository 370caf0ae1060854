"""A realtime session cut in the middle of sending a segment, seen from the service.

Over a socket the frames leave faster than a test can cancel between two of them, so this
drives `RealtimeSession` directly, with the real services, model and database, through a
sink that stalls after the first frame: exactly the moment a barge-in arrives mid-segment.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import make_settings

from qwen3_tts_server.composition import build_context
from qwen3_tts_server.context import AppContext
from qwen3_tts_server.engine.base import Engine
from qwen3_tts_server.services.realtime import SessionConfig

TEXT = "A sentence long enough to make several frames of audio."


class StallingSink:
    """Takes the first frame, then stalls on the second until the test cancels."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.frames: list[bytes] = []
        self.stalled = asyncio.Event()

    async def event(self, payload: dict[str, Any]) -> None:
        self.events.append(payload)

    async def audio(self, data: bytes) -> None:
        self.frames.append(data)
        if len(self.frames) == 2:
            self.stalled.set()
            await asyncio.Event().wait()  # until cancelled


@pytest.fixture
def context(tmp_path: Path, engine: Engine) -> Iterator[AppContext]:
    context = build_context(make_settings(tmp_path / "data"), lambda: engine)
    context.system.start()
    assert context.runtime.wait(120)
    yield context
    context.system.stop()


def test_a_segment_cut_mid_send_pays_for_the_share_sent(
    context: AppContext, tmp_path: Path
) -> None:
    user_id = context.accounts.create_user(token_quota=1000)
    config = SessionConfig(speaker="ryan", format="pcm", sample_rate=48000)

    async def barge_in() -> tuple[list[int], StallingSink, int]:
        sink = StallingSink()
        session = await context.realtime.open(user_id, config, sink)
        session.append(TEXT)
        session.flush()
        await asyncio.wait_for(sink.stalled.wait(), 120)
        dropped = await session.cancel()
        await session.close()
        return dropped, sink, session.tokens_used

    dropped, sink, charged_done = asyncio.run(barge_in())

    assert dropped == [0] and charged_done == 0
    assert [event["type"] for event in sink.events] == ["audio.start"]  # no audio.done
    sent = len(sink.frames[0])  # the second frame never went out
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        [(status, tokens, seconds)] = db.execute(
            "SELECT status, tokens_used, audio_seconds FROM generations"
        ).fetchall()
        held = db.execute("SELECT count(*) FROM reservations").fetchone()[0]
    assert status == "cancelled"
    assert seconds == pytest.approx(sent / (2 * 48000))  # what was sent: one 0.2 s frame
    assert 0 < tokens < len(TEXT)  # its share of the text
    assert context.usage.for_user(user_id).tokens_used_total == tokens
    assert held == 0  # the reservation was settled, not left for recovery
