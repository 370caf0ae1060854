"""Plain helpers shared by the streaming tests (test_streaming*.py): the text, the settings,
a scripted engine, and readers of the generation rows."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from support import clone_voice, new_user_key

from conftest import LiveServer
from qwen3_tts_server.engine.base import (
    Engine,
    EngineError,
    InvalidInput,
    Item,
    Sampling,
)
from qwen3_tts_server.engine.serving.scheduler import Scheduler
from qwen3_tts_server.engine.step.stepper import Admission

#: Five sentences of under 20 characters: with CHUNK_MAX_CHARS=20 each is its own chunk, and
#: with ENGINE_MAX_BATCH=1 they take the one slot in turn: chunk n is admitted (call n) only
#: once chunk n - 1 has ended, after all its audio was handed over.
TEXT = "The first sentence. The second one. A third sentence. Then a fourth. And the fifth."
SETTINGS: dict[str, Any] = {"chunk_max_chars": 20, "engine_max_batch": 1}
#: How long a held admission waits for the test before failing (only reached on a bug).
HOLD_LIMIT_S = 60.0


class ScriptedEngine:
    """The session engine, with a script for its admissions (one per sentence chunk, numbered
    from 1, warm-up not counted): admission `hold` waits until the test sets `proceed`
    (the whole step loop waits with it); admission `fail` raises."""

    def __init__(self, inner: Engine, *, hold: int | None = None, fail: int | None = None):
        self.inner = inner
        self.hold = hold
        self.fail = fail
        self.calls = 0
        self.outputs: list[list[int]] = []
        self.holding = threading.Event()
        self.proceed = threading.Event()

    def prepare(self, item: Item, sampling: Sampling, budget: int) -> Admission:
        self.calls += 1
        if self.calls == self.fail:
            raise InvalidInput(f"scripted failure of call {self.calls}")
        if self.calls == self.hold:
            self.holding.set()
            if not self.proceed.wait(HOLD_LIMIT_S):
                raise EngineError("the test never released the held call")
        return self.inner.prepare(item, sampling, budget)

    def __getattr__(self, name: str) -> Any:
        """Everything else is the real engine's."""
        return getattr(self.inner, name)


@contextmanager
def live_user(
    live_server: Callable[..., LiveServer], engine: Engine
) -> Iterator[tuple[LiveServer, httpx.Client, dict[str, str], int]]:
    """A real server on `engine` with SETTINGS, and a user with a voice: (server, client,
    auth headers, voice id)."""
    with live_server(load_engine=lambda: engine, **SETTINGS) as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as http:
            _, headers = new_user_key(http)
            yield server, http, headers, clone_voice(http, headers)


def stream_body(**fields: Any) -> dict[str, Any]:
    return {"text": TEXT, "stream": True, "format": "wav", **fields}


def open_db(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "data" / "db.sqlite3")


def generation_row(tmp_path: Path, generation_id: int | str) -> dict[str, Any]:
    with open_db(tmp_path) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM generations WHERE id = ?", (int(generation_id),)).fetchone()
    return dict(row)


def scheduler_of(app: Any) -> Scheduler:
    scheduler: Scheduler = app.state.context.runtime.loaded().scheduler
    return scheduler


def assert_free(http: httpx.Client, headers: dict[str, str], voice_id: int) -> None:
    """Nothing charged, no call counted, no use of the voice."""
    usage = http.get("/usage", headers=headers).json()
    assert usage["tts_calls"] == 0 and usage["tokens_used_tts"] == 0
    assert http.get(f"/voices/{voice_id}", headers=headers).json()["use_count"] == 0


def wait_until_settled(tmp_path: Path, generation_id: int | str) -> dict[str, Any]:
    """The server notices a client that went away asynchronously: wait for its verdict."""
    deadline = time.monotonic() + 30
    while (row := generation_row(tmp_path, generation_id))["status"] == "streaming":
        assert time.monotonic() < deadline, "the abandoned stream was never settled"
        time.sleep(0.05)
    return row
