"""GET /metrics, X-Request-Id and the JSON access log, over HTTP on real apps (no model)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from support import AppFactory, admin_headers, clone_voice, make_settings, new_user_key

from conftest import LiveServer, no_model
from qwen3_tts_server.app import create_app
from qwen3_tts_server.engine.base import DesignItem, Engine
from qwen3_tts_server.observability import configure_logging
from qwen3_tts_server.values import Sampling

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class LogCapture:
    """Production logging set up by `configure_logging`, its output kept in memory."""

    def __init__(self, others: list[logging.Handler]) -> None:
        self._others = others  # handlers that were there before (pytest's)
        self._buffer = io.StringIO()
        self._read = 0

    def configure(self, level: str = "INFO", json_logs: bool = True) -> None:
        """Call `configure_logging`, then point the handler it installed at our buffer.

        (It writes to the sys.stderr of the moment, which pytest swaps between test phases.)
        """
        configure_logging(level, json_logs)
        [handler] = [h for h in logging.getLogger().handlers if h not in self._others]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(self._buffer)

    def lines(self) -> list[str]:
        """The lines logged since the last call."""
        text = self._buffer.getvalue()
        new, self._read = text[self._read :], len(text)
        return new.splitlines()


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    # The test's own HTTP client logs the URLs it requests; that is not the server's log.
    # (httpx2 is httpx's successor, which the openai SDK brings and Starlette's TestClient
    # then uses.)
    for client_logger in ("httpx", "httpx2"):
        logging.getLogger(client_logger).setLevel(logging.WARNING)
    capture = LogCapture(saved_handlers)
    capture.configure()
    yield capture
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    logging.getLogger("httpx").setLevel(logging.NOTSET)


def app_of(client: TestClient) -> FastAPI:
    app = client.app
    assert isinstance(app, FastAPI)
    return app


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def access_lines(lines: Sequence[str]) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    return [record for record in records if record["logger"] == "qwen3_tts_server.access"]


# -- /metrics --------------------------------------------------------------------------------------
def test_request_counters_move_with_requests_labelled_by_route_template(
    client: TestClient,
) -> None:
    before = scrape(client)
    for _ in range(3):
        assert client.get("/health").status_code == 200
    assert client.get("/usage").status_code == 401
    assert client.get("/usage", headers={"Authorization": "Bearer not-a-key"}).status_code == 403
    assert client.get("/voices/12345").status_code == 401
    assert client.get("/no/such/path/9f8e").status_code == 404
    assert client.request("PURGE", "/health").status_code == 405
    after = scrape(client)

    def moved(status: str, route: str, method: str = "GET") -> float:
        labels = {"method": method, "route": route, "status": status}
        name = "qwen3_tts_http_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("200", "/health") == 3
    assert moved("401", "/usage") == 1
    assert moved("403", "/usage") == 1
    assert moved("401", "/voices/{voice_id}") == 1
    assert moved("404", "unmatched") == 1
    assert moved("405", "/health", method="OTHER") == 1  # any method name would be a new series
    assert (
        value(after, "qwen3_tts_http_request_duration_seconds_count", method="GET", route="/health")
        >= 3
    )
    routes = {dict(labels).get("route") for _name, labels in after}
    assert not any(route and ("12345" in route or "9f8e" in route) for route in routes)


def test_model_state_and_queue_depth_without_a_model(client: TestClient) -> None:
    samples = scrape(client)
    assert value(samples, "qwen3_tts_model_state") == -1  # the loader failed
    assert value(samples, "qwen3_tts_queue_depth") == 0
    assert value(samples, "qwen3_tts_engine_steps_total") == 0
    assert not any(name == "qwen3_tts_model_info" for name, _labels in samples)


def test_ready_model_and_steps_reach_the_scrape(make_client: AppFactory, engine: Engine) -> None:
    """The app's own wiring feeds the step histograms: nothing is hooked up here."""
    client = make_client(lambda: engine)
    scheduler = app_of(client).state.context.runtime.loaded().scheduler
    result = asyncio.run(scheduler.generate([DesignItem("Hello.", "english", "calm")], Sampling()))
    [chunk] = result.chunks

    samples = scrape(client)
    info = engine.info()
    assert value(samples, "qwen3_tts_model_state") == 1
    labels = {"model": info.base_model_id, "device": "cpu", "dtype": "float32"}
    assert value(samples, "qwen3_tts_model_info", **labels) == 1
    assert value(samples, "qwen3_tts_queue_depth") == 0
    assert value(samples, "qwen3_tts_engine_active_slots") == 0
    assert value(samples, "qwen3_tts_engine_steps_total") == chunk.frames
    assert value(samples, "qwen3_tts_engine_frames_total") == chunk.frames
    assert value(samples, "qwen3_tts_engine_jobs_total", outcome="ok") == 1
    reason = chunk.finish_reason
    assert value(samples, "qwen3_tts_engine_chunks_total", finish_reason=reason) == 1
    assert value(samples, "qwen3_tts_engine_chunk_retries_total") == 0
    assert value(samples, "qwen3_tts_engine_runaways_total") == 0
    assert value(samples, "qwen3_tts_engine_step_size_count") == chunk.frames
    assert value(samples, "qwen3_tts_engine_step_size_sum") == chunk.frames


def test_charges_and_audio_reach_the_scrape(make_client: AppFactory, engine: Engine) -> None:
    """Real calls, counted by the routes: tokens per kind are the X-Tokens-Used (and voice
    cost) the calls charged, audio seconds are what /usage reports."""
    client = make_client(lambda: engine)
    _, headers = new_user_key(client)
    voice_id = clone_voice(client, headers)
    tts = client.post("/tts", headers=headers, json={"text": "Count me.", "voice_id": voice_id})
    batch = client.post(
        "/batchtts", headers=headers, json={"texts": ["One.", "Two, too."], "voice_id": voice_id}
    )
    assert tts.status_code == batch.status_code == 200
    samples = scrape(client)
    usage = client.get("/usage", headers=headers).json()
    charged = "qwen3_tts_tokens_charged_total"
    assert value(samples, charged, kind="clonevoice") == usage["tokens_used_voices"] > 0
    assert value(samples, charged, kind="tts") == int(tts.headers["x-tokens-used"]) == 9
    assert value(samples, charged, kind="batchtts") == int(batch.headers["x-tokens-used"]) > 0
    assert value(samples, "qwen3_tts_audio_seconds_generated_total") == pytest.approx(
        usage["audio_seconds_total"], abs=1e-3
    )


def test_each_app_has_its_own_metrics(make_client: AppFactory, tmp_path: Path) -> None:
    first = make_client(data_dir=tmp_path / "one")
    second = make_client(data_dir=tmp_path / "two")
    app_of(first).state.context.metrics.record_tokens("tts", 7)
    first.get("/health")
    samples = scrape(second)
    assert value(samples, "qwen3_tts_tokens_charged_total", kind="tts") == 0
    labels = {"method": "GET", "route": "/health", "status": "200"}
    assert value(samples, "qwen3_tts_http_requests_total", **labels) == 0


def test_openmetrics_on_request(client: TestClient) -> None:
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


# -- X-Request-Id ----------------------------------------------------------------------------------
def test_every_response_has_a_request_id(make_client: AppFactory) -> None:
    client = make_client(max_upload_bytes=1024)
    responses = {
        200: client.get("/health"),
        401: client.get("/usage"),
        404: client.get("/nothing-here"),
        422: client.post("/auth/exchange-invite", json={}),
        413: client.post("/clonevoice", content=b"x" * 200_000),
    }
    ids = set()
    for status, response in responses.items():
        assert response.status_code == status
        request_id = response.headers["x-request-id"]
        assert len(request_id) == 32 and int(request_id, 16) >= 0  # uuid4 hex
        ids.add(request_id)
    assert len(ids) == len(responses)


@pytest.mark.parametrize("incoming", ["abc.DEF-1_2", "x" * 64, "0"])
def test_a_valid_incoming_request_id_is_echoed(client: TestClient, incoming: str) -> None:
    assert (
        client.get("/health", headers={"X-Request-Id": incoming}).headers["x-request-id"]
        == incoming
    )


@pytest.mark.parametrize(
    "incoming",
    [b"x" * 65, b"has space", b"new\\nline", b"<script>", b"caf\xc3\xa9", b"a;b", b""],
)
def test_an_unsafe_incoming_request_id_is_replaced(client: TestClient, incoming: bytes) -> None:
    response = client.get("/health", headers={"X-Request-Id": incoming})
    replaced = response.headers["x-request-id"]
    assert replaced.encode() != incoming and len(replaced) == 32
    assert response.headers.get_list("x-request-id") == [replaced]


# -- logs ------------------------------------------------------------------------------------------
def test_one_access_line_per_request_and_no_secrets(client: TestClient, logs: LogCapture) -> None:
    secret_text = "my private sentence 7c1d"
    user_id = client.post("/admin/users", headers=admin_headers()).json()["user_id"]
    code = client.post(f"/admin/users/{user_id}/invites", headers=admin_headers()).json()[
        "invite_code"
    ]
    key = client.post("/auth/exchange-invite", json={"invite_code": code}).json()["api_key"]
    auth = {"Authorization": f"Bearer {key}"}
    calls = [
        ("GET", "/usage", auth, None, "/usage", 200),
        ("GET", f"/usage?api_key={key}", {}, None, "/usage", 401),
        ("GET", "/voices/424242", auth, None, "/voices/{voice_id}", 404),
        ("POST", "/tts", auth, {"text": secret_text}, "/tts", 422),
        ("POST", "/tts", auth, {"text": secret_text, "voice_id": 1}, "/tts", None),
        ("POST", "/auth/exchange-invite", {}, {"invite_code": code}, "/auth/exchange-invite", 403),
    ]
    logs.lines()  # only what follows counts
    sent = []
    for method, url, headers, body, _route, _status in calls:
        response = client.request(method, url, headers=headers, json=body)
        sent.append((response.headers["x-request-id"], response.status_code))

    lines = logs.lines()
    logged = access_lines(lines)
    assert [(line["request_id"], line["status"]) for line in logged] == sent
    for line, (_m, _u, _h, _b, route, status) in zip(logged, calls, strict=True):
        assert line["route"] == route
        assert status is None or line["status"] == status
        assert set(line) >= {"ts", "level", "msg", "method", "latency_ms", "client", "user_id"}
        assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
    assert logged[0]["user_id"] == user_id
    assert logged[1]["user_id"] is None

    output = "\n".join(lines)
    for secret in (key, code, secret_text, admin_headers()["Authorization"][7:], "api_key="):
        assert secret not in output


def test_a_server_error_is_logged_as_500_with_its_request_id(
    client: TestClient, logs: LogCapture
) -> None:
    def boom() -> None:
        raise RuntimeError("a bug")

    app_of(client).add_api_route("/boom-for-test", boom)
    response = client.get("/boom-for-test", headers={"X-Request-Id": "trace-500"})
    assert response.status_code == 500
    records = [json.loads(line) for line in logs.lines()]
    [access] = [r for r in records if r["logger"] == "qwen3_tts_server.access"]
    assert access["status"] == 500 and access["route"] == "/boom-for-test"
    [error] = [r for r in records if r["level"] == "ERROR"]
    assert error["request_id"] == "trace-500" and "RuntimeError: a bug" in error["exc"]


def test_configure_logging_is_idempotent_and_checks_the_level(
    logs: LogCapture,
) -> None:
    logs.configure("INFO")
    logs.configure("info")
    logging.getLogger("qwen3_tts_server.test").info("once %s", "only", extra={"answer": 42})
    [line] = logs.lines()
    record = json.loads(line)
    assert record["msg"] == "once only" and record["answer"] == 42
    assert record["level"] == "INFO" and record["logger"] == "qwen3_tts_server.test"
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD", json_logs=True)

    logs.configure("WARNING", json_logs=False)
    logging.getLogger("qwen3_tts_server.test").info("hidden")
    logging.getLogger("qwen3_tts_server.test").warning("shown", extra={"route": "/tts"})
    [plain] = logs.lines()
    assert plain.endswith("WARNING qwen3_tts_server.test: shown route=/tts")


def test_websocket_handshakes_log_no_key_and_no_false_error(
    tmp_path: Path, logs: LogCapture
) -> None:
    """uvicorn logs WebSocket handshakes itself, with the URL's query: a key a client put
    there (refused) must not reach the log, nor a refused handshake show as an ERROR. The
    server logs as `qwen3-tts-server serve` runs it (uvicorn's loggers into ours)."""
    settings = make_settings(tmp_path / "data")
    live = LiveServer(create_app(settings, no_model), settings, log_level="info")
    with live as server, httpx.Client(base_url=server.url) as http:
        _, headers = new_user_key(http)
        key = headers["Authorization"].removeprefix("Bearer ")
        url = server.url.replace("http", "ws", 1) + "/v1/audio/speech/stream"

        async def refused(target: str) -> int:
            with pytest.raises(websockets.InvalidStatus) as denied:
                async with websockets.connect(target):
                    pass
            return int(denied.value.response.status_code)

        logs.lines()
        assert asyncio.run(refused(f"{url}?api_key={key}")) == 401
        assert asyncio.run(refused(url)) == 401
        # uvicorn writes its line once the connection is over: give it a moment.
        deadline = time.monotonic() + 10
        lines: list[str] = []
        while len([line for line in lines if "WebSocket" in line]) < 2:
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
            lines += logs.lines()
    records = [json.loads(line) for line in lines]
    assert key not in "\n".join(lines) and "api_key=" not in "\n".join(lines)
    assert [r for r in records if r["level"] == "ERROR"] == []
    assert any('"WebSocket /v1/audio/speech/stream" 401' in r["msg"] for r in records)
