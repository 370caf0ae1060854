"""Realtime socket and /v1 figures on the tiny models, in-process; prints one JSON object.

    .venv/bin/python bench/realtime.py [--frames 24] [--rounds 7]

The app is the real one (`create_app`, SQLite in a temp dir, the scheduler, the ledger), driven
by `fastapi.testclient.TestClient` (its WebSocket client is incremental). Medians over rounds:

* `tts_one_sentence_ms`: POST /tts of one sentence (whole file): the reference.
* `ws_sentence_to_audio_ms`: on WS /v1/audio/speech/stream, from sending the text that
  completes a sentence to its `audio.start`; `ws_segment_done_ms` to its `audio.done`. The
  difference from the reference is what the socket path adds (segmenting, reservation, events).
* `ws_cancel_ms`: from `cancel`, sent right after text that completes two segments (just
  submitted to the model), to the `cancelled` event: what a barge-in waits for.
* `v1_speed_ms`: /v1/audio/speech of the same sentence at speed 1.0 and 2.0 (the atempo cost).
Figures on the tiny model show the server's overheads, not real-model speed.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from qwen3_tts_server.app import create_app
from qwen3_tts_server.config import Settings
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.model.tiny import make_tiny_models
from qwen3_tts_server.engine.step.stepper import StepEngine

ADMIN_TOKEN = secrets.token_urlsafe(24)
SENTENCE = "This sentence is spoken as soon as it is complete."


def _median_ms(run: Callable[[], float], rounds: int) -> float:
    return round(statistics.median(run() for _ in range(rounds)) * 1000, 1)


def _until(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        message = ws.receive()
        if message.get("text"):
            event: dict[str, Any] = json.loads(message["text"])
            if event["type"] == kind:
                return event


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_tiny_models(root / "models")
        engine = StepEngine(
            QwenEngine.load(
                paths.base, paths.voice_design, paths.custom_voice, max_new_tokens_cap=args.frames
            )
        )
        settings = Settings(
            data_dir=root / "data",
            admin_token=ADMIN_TOKEN,
            hmac_secret=secrets.token_urlsafe(32),
            log_json=False,
            log_level="WARNING",
        )
        app = create_app(settings, lambda: engine)
        with TestClient(app) as client:
            app.state.context.runtime.wait()
            print(json.dumps(_measure(client, args.rounds), indent=2))


def _measure(client: TestClient, rounds: int) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    user_id = client.post("/admin/users", headers=admin).json()["user_id"]
    code = client.post(f"/admin/users/{user_id}/invites", headers=admin).json()["invite_code"]
    key = client.post("/auth/exchange-invite", json={"invite_code": code}).json()["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    body = {"text": SENTENCE, "speaker": "ryan", "format": "pcm", "seed": 1}

    def tts() -> float:
        started = time.perf_counter()
        assert client.post("/tts", headers=headers, json=body).status_code == 200
        return time.perf_counter() - started

    segment: dict[str, list[float]] = {"start": [], "done": [], "cancel": []}
    with client.websocket_connect("/v1/audio/speech/stream", headers=headers) as ws:
        ws.send_json({"type": "session.config", "speaker": "ryan", "seed": 1})
        _until(ws, "session.created")
        ws.send_json({"type": "input.text", "text": SENTENCE})
        for _ in range(rounds):
            started = time.perf_counter()
            ws.send_json({"type": "input.text", "text": " " + SENTENCE})  # completes the last
            _until(ws, "audio.start")
            segment["start"].append(time.perf_counter() - started)
            _until(ws, "audio.done")
            segment["done"].append(time.perf_counter() - started)
        for _ in range(rounds):
            ws.send_json({"type": "input.text", "text": f" {SENTENCE} {SENTENCE} More"})
            started = time.perf_counter()
            ws.send_json({"type": "cancel"})
            _until(ws, "cancelled")
            segment["cancel"].append(time.perf_counter() - started)

    def v1(speed: float) -> Callable[[], float]:
        def run() -> float:
            started = time.perf_counter()
            sent = {"input": SENTENCE, "voice": "ash", "response_format": "pcm", "speed": speed}
            assert client.post("/v1/audio/speech", headers=headers, json=sent).status_code == 200
            return time.perf_counter() - started

        return run

    return {
        "tts_one_sentence_ms": _median_ms(tts, rounds),
        "ws_sentence_to_audio_ms": round(statistics.median(segment["start"]) * 1000, 1),
        "ws_segment_done_ms": round(statistics.median(segment["done"]) * 1000, 1),
        "ws_cancel_ms": round(statistics.median(segment["cancel"]) * 1000, 1),
        "v1_speed_ms": {str(speed): _median_ms(v1(speed), rounds) for speed in (1.0, 2.0)},
        "rounds": rounds,
    }


if __name__ == "__main__":
    main()
