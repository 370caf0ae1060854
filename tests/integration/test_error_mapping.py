"""How the engine's and the runtime's failures reach a client: status, body, headers, and no
charge. The engine is the real one on the tiny model; a wrapper makes its admissions fail."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import AppFactory, clone_voice, make_settings, new_user_key

from qwen3_tts_server.engine.base import (
    Engine,
    EngineInfo,
    InvalidInput,
    Item,
    JobTimeout,
    ModelUnavailable,
    PromptCorrupt,
    PromptMismatch,
    QueueFull,
    Runaway,
    ShuttingDown,
)
from qwen3_tts_server.engine.step.stepper import Admission
from qwen3_tts_server.values import Sampling


class FailingEngine:
    """The session engine, except that admitting a text raises `error`."""

    def __init__(self, inner: Engine, error: Exception) -> None:
        self.inner = inner
        self.error = error

    def prepare(self, item: Item, sampling: Sampling, budget: int) -> Admission:
        raise self.error

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


_MISMATCH_HINT = "recreate it with this server's model"


@pytest.mark.parametrize(
    ("error", "status", "detail", "headers"),
    [
        (PromptMismatch("made by tiny-seed9"), 409, _MISMATCH_HINT, {}),
        (PromptCorrupt("truncated"), 409, _MISMATCH_HINT, {}),
        (InvalidInput("the model refused it"), 400, "the model refused it", {}),
        (QueueFull(7), 429, "retry in 7 s", {"retry-after": "7"}),
        (JobTimeout("no answer in time"), 503, "no answer in time", {}),
        (ShuttingDown("going down"), 503, "going down", {}),
        (Runaway("never stopped"), 503, "never stopped", {}),
        (ModelUnavailable("no such model"), 503, "no such model", {}),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_engine_errors_map_to_statuses_and_cost_nothing(
    make_client: AppFactory,
    engine: Engine,
    tmp_path: Path,
    error: Exception,
    status: int,
    detail: str,
    headers: dict[str, str],
) -> None:
    api = make_client(load_engine=lambda: FailingEngine(engine, error))
    _, auth = new_user_key(api)
    voice_id = clone_voice(api, auth)
    response = api.post("/tts", headers=auth, json={"text": "Fail me.", "voice_id": voice_id})
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    for name, value in headers.items():
        assert response.headers[name] == value
    usage = api.get("/usage", headers=auth).json()
    assert usage["tts_calls"] == 0 and usage["tokens_used_tts"] == 0
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        rows = db.execute("SELECT status, tokens_used, error FROM generations").fetchall()
    assert rows == [("error", 0, str(error))]


def test_ready_is_503_with_the_reason_until_the_model_is_up(make_client: AppFactory) -> None:
    failed = make_client()  # the default test loader raises ModelUnavailable
    response = failed.get("/ready")
    assert response.status_code == 503
    assert response.json() == {
        "status": "not_ready",
        "database": "ok",
        "model": "failed",
        "error": "ModelUnavailable: this test runs without a model",
        "aligner": "disabled",
        "aligner_error": None,
    }


def test_ready_says_loading_while_the_model_loads(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    release = threading.Event()

    def slow_loader() -> Engine:
        release.wait(60)
        return engine

    from fastapi.testclient import TestClient

    from qwen3_tts_server.app import create_app

    with TestClient(create_app(make_settings(tmp_path / "data"), slow_loader)) as client:
        loading = client.get("/ready")
        release.set()
        client.app.state.context.runtime.wait()  # type: ignore[attr-defined]
        ready = client.get("/ready")
    assert loading.status_code == 503
    assert loading.json() == {
        "status": "not_ready",
        "database": "ok",
        "model": "loading",
        "error": None,
        "aligner": "disabled",
        "aligner_error": None,
    }
    assert ready.status_code == 200 and ready.json()["model"] == "ready"


class NoDesignEngine:
    """The session engine as a server without a VoiceDesign model describes itself."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    def info(self) -> EngineInfo:
        info = self.inner.info()
        return EngineInfo(
            info.base_model_id,
            info.device,
            info.dtype,
            info.sample_rate,
            has_voice_design=False,
            has_custom_voice=info.has_custom_voice,
            speakers=info.speakers,
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_design_without_a_design_model_is_503_before_any_queueing(
    make_client: AppFactory, engine: Engine
) -> None:
    api = make_client(load_engine=lambda: NoDesignEngine(engine))
    _, auth = new_user_key(api)
    scheduler = api.app.state.context.runtime.loaded().scheduler
    jobs_before = scheduler.stats.jobs_run + scheduler.stats.jobs_failed
    response = api.post(
        "/designvoice", headers=auth, json={"name": "n", "description": "A calm voice."}
    )
    assert response.status_code == 503
    assert "VoiceDesign" in response.json()["detail"]
    assert scheduler.stats.jobs_run + scheduler.stats.jobs_failed == jobs_before
    assert api.get("/usage", headers=auth).json()["tokens_used_total"] == 0


def test_start_up_settles_streams_a_dead_process_left_open(
    make_client: AppFactory, tmp_path: Path
) -> None:
    """Rows left STREAMING long ago become INTERRUPTED (free); a recent one may belong to a
    live replica and is left alone."""
    make_client()  # creates and migrates the database
    old = (datetime.now(UTC) - timedelta(hours=3)).isoformat(" ")
    recent = datetime.now(UTC).isoformat(" ")
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        db.execute(
            "INSERT INTO users (id, name, is_active, created_at) VALUES (9, 'u', 1, ?)", (old,)
        )
        for generation_id, created in ((1, old), (2, recent)):
            db.execute(
                "INSERT INTO generations (id, user_id, format, language, temperature, chars, "
                "tokens_used, latency_ms, audio_seconds, store, status, created_at) "
                "VALUES (?, 9, 'wav', 'auto', 1.0, 5, 0, 0, 0, 0, 'streaming', ?)",
                (generation_id, created),
            )
    make_client()  # a second start on the same data
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        rows = db.execute("SELECT id, status, tokens_used FROM generations ORDER BY id").fetchall()
    assert rows == [(1, "interrupted", 0), (2, "streaming", 0)]
