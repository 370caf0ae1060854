"""ENGINE_RESERVE_SLOTS are real rows: a user holding none starts at once beside a full batch.

The loop may hold ENGINE_MAX_BATCH + ENGINE_RESERVE_SLOTS chunks (the reserve only for users
holding none), so each model's slot table needs that many rows. Built here as the server builds
it (`engine_loader`: the tiny models from disk, the settings' sizes), with one batch slot and
one reserve slot: user A's batch fills the slot, user B's call takes the reserve while A's batch
is still running.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from support import make_settings, new_user_key

from qwen3_tts_server.app import create_app
from qwen3_tts_server.wiring import engine_loader, tiny_model_settings


def test_a_user_holding_no_slot_runs_in_the_reserve_beside_a_full_batch(tmp_path: Path) -> None:
    settings = tiny_model_settings(
        make_settings(tmp_path / "data", engine_max_batch=1, engine_reserve_slots=1)
    )
    with TestClient(create_app(settings, engine_loader(settings))) as client:
        runtime = client.app.state.context.runtime
        runtime.wait()
        loop = runtime.loaded().scheduler.loop
        _, batch_user = new_user_key(client)
        _, short_user = new_user_key(client)
        texts = [f"Sentence number {i} of a long batch." for i in range(40)]
        answers: dict[str, httpx.Response] = {}

        def batch() -> None:
            body = {"texts": texts, "speaker": "ryan"}
            answers["batch"] = client.post("/batchtts", headers=batch_user, json=body)

        running = threading.Thread(target=batch)
        running.start()
        for _ in range(2000):
            if loop.active >= 1:
                break
            threading.Event().wait(0.005)
        else:
            raise AssertionError("the batch never started")
        short = client.post("/tts", headers=short_user, json={"text": "Hi.", "speaker": "ryan"})
        assert short.status_code == 200, short.text
        assert running.is_alive()  # it ran beside the batch, not after it
        running.join(120)
        assert answers["batch"].status_code == 200, answers["batch"].text
