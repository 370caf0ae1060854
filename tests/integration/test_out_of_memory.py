"""Out of memory is an outage: 503 with Retry-After, recorded, free; and a step of many slots
that runs out of memory sheds load instead of failing every call in flight.

The error is injected at the engine boundary (the step the loop calls, the prompt it makes),
as torch raises it: a RuntimeError from the CPU allocator, `torch.cuda.OutOfMemoryError` on a
GPU. Everything else is the real engine on the tiny model.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from quotakit import TRANSCRIPT, clone, limited_user, totals
from support import AppFactory

from qwen3_tts_server.engine.base import Engine
from qwen3_tts_server.engine.serving.memory import LoadShedder
from qwen3_tts_server.engine.step.stepper import Slot

CPU_OOM = "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: you tried"
CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total capacity)"
OUT_OF_MEMORY = {"detail": "The server ran out of memory for this call; try again later"}


class MemoryBoundEngine:
    """The session engine on a device with room for `fits` slots per step: a larger step
    raises `error`, as the device's allocator would. Records every step's size."""

    #: A GPU's prefill budget (engine/step/sizing.py): texts arriving together start together.
    prefill_tokens = 4096

    def __init__(self, inner: Engine, fits: int, error: BaseException) -> None:
        self.inner, self.fits, self.error = inner, fits, error
        self.steps: list[int] = []

    def step(self, slots: Sequence[Slot]) -> None:
        self.steps.append(len(slots))
        if len(slots) > self.fits:
            raise self.error
        self.inner.step(slots)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class PromptOutOfMemory:
    """The session engine, except that making a voice prompt runs out of GPU memory."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    def create_prompt(self, *args: Any) -> bytes:
        raise torch.cuda.OutOfMemoryError(CUDA_OOM)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _generations(tmp_path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        return db.execute("SELECT status, tokens_used, error FROM generations").fetchall()


def _nothing_held(tmp_path: Path, user_id: int, charged: int) -> None:
    state = totals(f"sqlite:///{tmp_path / 'data' / 'db.sqlite3'}", user_id)
    assert state["tokens_used"] == charged
    assert state["tokens_reserved"] == 0 and state["reservations"] == 0


def test_cpu_out_of_memory_is_a_503_recorded_and_free(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    oom = MemoryBoundEngine(engine, fits=0, error=RuntimeError(CPU_OOM))
    api = make_client(load_engine=lambda: oom)
    user_id, headers = limited_user(api, 1000)
    voice_id = clone(api, headers).json()["voice_id"]
    for body in ({"text": "Hello."}, {"text": "Hello.", "stream": True}):
        answer = api.post("/tts", headers=headers, json={**body, "voice_id": voice_id})
        assert answer.status_code == 503, answer.text
        assert answer.json() == OUT_OF_MEMORY and answer.headers["retry-after"] == "5"
    rows = _generations(tmp_path)
    assert [row[:2] for row in rows] == [("error", 0), ("error", 0)]
    assert all(row[2].startswith("out of memory (") and "DefaultCPU" in row[2] for row in rows)
    _nothing_held(tmp_path, user_id, len(TRANSCRIPT))


def test_a_gpu_step_out_of_memory_sheds_slots_and_every_call_completes(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    """Four texts side by side do not fit, two do: the loop halves its active slots and runs
    the four again, two at a time; nobody's call fails."""
    oom = MemoryBoundEngine(engine, fits=2, error=torch.cuda.OutOfMemoryError(CUDA_OOM))
    api = make_client(load_engine=lambda: oom)
    user_id, headers = limited_user(api, 1000)
    voice_id = clone(api, headers).json()["voice_id"]
    loop = api.app.state.context.runtime.loaded().scheduler.loop
    # No slot grows back during the call, however slowly a busy machine runs it.
    loop.shedder = LoadShedder(loop.shedder.slots, recover_s=3600)
    texts = ["One here.", "Two here.", "Three here.", "Four here."]
    batch = api.post("/batchtts", headers=headers, json={"texts": texts, "voice_id": voice_id})
    assert batch.status_code == 200, batch.text
    assert oom.steps[0] == 4 and max(oom.steps[1:]) <= 2
    assert loop.stats.out_of_memory == 1 and loop.shedder.limit() == 2
    metrics = api.get("/metrics").text
    assert "qwen3_tts_engine_out_of_memory_total 1.0" in metrics
    assert [row[:1] for row in _generations(tmp_path)] == [("ok",)] * 4
    _nothing_held(tmp_path, user_id, len(TRANSCRIPT) + int(batch.headers["x-tokens-used"]))


def test_a_single_slot_out_of_gpu_memory_fails_alone_with_a_503(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    oom = MemoryBoundEngine(engine, fits=0, error=torch.cuda.OutOfMemoryError(CUDA_OOM))
    api = make_client(load_engine=lambda: oom)
    user_id, headers = limited_user(api, 1000)
    voice_id = clone(api, headers).json()["voice_id"]
    answer = api.post("/tts", headers=headers, json={"text": "Hello.", "voice_id": voice_id})
    assert answer.status_code == 503 and answer.json() == OUT_OF_MEMORY
    assert answer.headers["retry-after"] == "5"
    [(status, tokens, error)] = _generations(tmp_path)
    assert (status, tokens) == ("error", 0) and "CUDA out of memory" in error
    _nothing_held(tmp_path, user_id, len(TRANSCRIPT))


def test_a_voice_prompt_out_of_gpu_memory_is_a_503_and_keeps_no_voice(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    api = make_client(load_engine=lambda: PromptOutOfMemory(engine))
    user_id, headers = limited_user(api, 1000)
    answer = clone(api, headers)
    assert answer.status_code == 503 and answer.json() == OUT_OF_MEMORY
    assert answer.headers["retry-after"] == "5"
    assert api.get("/voices", headers=headers).json() == []
    _nothing_held(tmp_path, user_id, 0)


def test_the_shed_limit_halves_and_grows_back_one_slot_at_a_time() -> None:
    now = [0.0]
    shedder = LoadShedder(10, recover_s=10.0, clock=lambda: now[0])
    assert shedder.limit() == 10
    assert shedder.shed(8) == 4
    assert shedder.shed(4) == 2 and shedder.shed(1) == 1
    now[0] = 9.9
    assert shedder.limit() == 1
    now[0] = 10.0
    assert shedder.limit() == 2
    now[0] = 45.0
    assert shedder.limit() == 5
    now[0] = 1000.0
    assert shedder.limit() == 10
