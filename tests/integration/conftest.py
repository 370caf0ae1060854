"""Apps on real SQLite files in a temporary data folder, driven over HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from postgres import local_cluster, new_database
from support import AppFactory, make_settings, unavailable

from qwen3_tts_server.app import AlignerLoader, EngineLoader, create_app
from qwen3_tts_server.config import Settings
from qwen3_tts_server.engine.base import Engine, ModelUnavailable
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.step.stepper import StepEngine
from qwen3_tts_server.http_server import server_config


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs(available, reason): skip when `available` is false, or fail under "
        "REQUIRE_ALL_TESTS=1 (CI)",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Apply `needs` marks: a missing tool skips the test, or fails it in CI."""
    for mark in item.iter_markers("needs"):
        available, reason = mark.args
        if not available:
            unavailable(reason)


def no_model() -> Engine:
    """Loader for tests of routes that never touch the model: loading fails, /ready says so."""
    raise ModelUnavailable("this test runs without a model")


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[AppFactory]:
    """Build apps (each a TestClient with its lifespan running) on files under tmp_path."""
    clients: list[TestClient] = []

    def factory(
        load_engine: EngineLoader = no_model,
        load_aligner: AlignerLoader | None = None,
        **overrides: Any,
    ) -> TestClient:
        settings = make_settings(overrides.pop("data_dir", tmp_path / "data"), **overrides)
        app = create_app(settings, load_engine, load_aligner)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        client.app.state.context.runtime.wait()
        client.app.state.context.synthesis.aligner.wait()
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: AppFactory) -> TestClient:
    return make_client()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """The server as `serve` runs it (uvicorn with http_server's protocol) on a real loopback
    port in a thread, for tests that use real clients (curl, raw sockets)."""

    def __init__(self, app: FastAPI, settings: Settings, **uvicorn_options: Any) -> None:
        """`uvicorn_options` go to uvicorn.Config (default: log_level "warning")."""
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        local = settings.model_copy(update={"host": "127.0.0.1", "port": self.port})
        options = {"log_level": "warning", **uvicorn_options}
        self.server = uvicorn.Server(server_config(app, local, **options))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until /ready says ready (the model loads in the background)."""
        deadline = time.monotonic() + timeout
        while httpx.get(f"{self.url}/ready").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("server never became ready")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def live_server(tmp_path: Path) -> Callable[..., LiveServer]:
    def start(
        load_engine: EngineLoader = no_model,
        load_aligner: AlignerLoader | None = None,
        **overrides: Any,
    ) -> LiveServer:
        settings = make_settings(overrides.pop("data_dir", tmp_path / "data"), **overrides)
        return LiveServer(create_app(settings, load_engine, load_aligner), settings)

    return start


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL for this session (skips where PostgreSQL cannot run)."""
    with local_cluster() as url:
        if url is None:
            unavailable("PostgreSQL is not installed here (Debian package `postgresql`)")
        yield url


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database for one test."""
    return new_database(postgres_server)


@pytest.fixture
def make_replica(
    make_client: AppFactory, postgres_url: str, tmp_path: Path, tiny_models_dir: Path
) -> Callable[[str], TestClient]:
    """Replicas of one deployment: each its own app, scheduler and model on the Base model, all
    on one PostgreSQL database and one shared MEDIA_DIR; `make_replica(name)` starts one."""

    def replica(name: str) -> TestClient:
        stock = QwenEngine.load(tiny_models_dir / "base", device="cpu", max_new_tokens_cap=12)
        engine = StepEngine(stock)
        return make_client(
            load_engine=lambda: engine,
            data_dir=tmp_path / name,
            database_url=postgres_url,
            media_dir=tmp_path / "shared-media",
        )

    return replica
