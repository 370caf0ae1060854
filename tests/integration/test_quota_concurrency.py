"""Quotas hold under concurrency: calls reserve their tokens before any work.

Before reservations, the quota was checked before the work and charged after it, so calls
racing each other all passed the check: with room for one call, six parallel calls all ran
and all were charged. Each test races six identical calls whose user has room for exactly one;
exactly one may run, the others must be refused (402) without reaching the model, and the
user's running totals must end equal to what /usage derives from the rows.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from quotakit import (
    BATCH_TEXTS,
    PAID_CALLS,
    TEXT_40,
    TRANSCRIPT,
    CountingEngine,
    PaidCall,
    clone,
    limited_user,
    race,
    totals,
)
from support import AppFactory, admin_headers, error_text

from qwen3_tts_server.engine.base import Engine
from qwen3_tts_server.engine.qwen import QwenEngine
from qwen3_tts_server.engine.stepper import StepEngine

RACERS = 6


def _voice_for(api: TestClient, headers: dict[str, str], call: PaidCall) -> tuple[int, int]:
    """(voice id, tokens it cost) when the call speaks with a voice, else (0, 0)."""
    if not call.needs_voice:
        return 0, 0
    response = clone(api, headers)
    assert response.status_code == 200, response.text
    return response.json()["voice_id"], len(TRANSCRIPT)


def _assert_one_winner(responses: list[httpx.Response], call: PaidCall) -> None:
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [402] * (RACERS - 1), [r.text[:200] for r in responses]
    for response in responses:
        if response.status_code == 402:
            detail = error_text(response)
            assert f"this call needs {call.tokens} tokens" in detail, detail


def _assert_only_the_winner_reached_the_model(counting: CountingEngine, call: PaidCall) -> None:
    expected_texts = {"batch": BATCH_TEXTS, "clone": [], "design": []}.get(call.name, [TEXT_40])
    assert counting.texts == expected_texts
    assert counting.prompts == (1 if call.name in ("clone", "design") else 0)
    assert counting.designs == (1 if call.name == "design" else 0)


@pytest.mark.parametrize("call", PAID_CALLS, ids=[call.name for call in PAID_CALLS])
def test_racing_calls_never_pass_the_quota(
    make_client: AppFactory, engine: Engine, tmp_path: Path, call: PaidCall
) -> None:
    counting = CountingEngine(engine)
    api = make_client(load_engine=lambda: counting)
    setup_tokens = len(TRANSCRIPT) if call.needs_voice else 0
    quota = setup_tokens + 2 * call.tokens - 1  # room for exactly one call
    user_id, headers = limited_user(api, quota)
    voice_id, _ = _voice_for(api, headers, call)
    counting.reset()

    responses = race([api], headers, call, voice_id, RACERS)

    _assert_one_winner(responses, call)
    _assert_only_the_winner_reached_the_model(counting, call)
    usage = api.get("/usage", headers=headers).json()
    assert usage["tokens_used_total"] == setup_tokens + call.tokens <= quota
    state = totals(f"sqlite:///{tmp_path / 'data' / 'db.sqlite3'}", user_id)
    assert state["tokens_used"] == usage["tokens_used_total"]
    assert state["tokens_reserved"] == 0 and state["reservations"] == 0


REPLICATED = [call for call in PAID_CALLS if call.name in ("tts", "stream", "batch", "clone")]


@pytest.mark.parametrize("call", REPLICATED, ids=[call.name for call in REPLICATED])
def test_racing_calls_on_two_postgresql_replicas_never_pass_the_quota(
    make_client: AppFactory,
    postgres_url: str,
    tmp_path: Path,
    tiny_models_dir: Path,
    call: PaidCall,
) -> None:
    """The same race, spread over two replicas (each its own app, scheduler and model) on one
    PostgreSQL database: the conditional UPDATE is what serialises them."""

    def replica(name: str) -> TestClient:
        stock = QwenEngine.load(tiny_models_dir / "base", device="cpu", max_new_tokens_cap=12)
        engine = StepEngine(stock)
        return make_client(
            load_engine=lambda: engine,
            data_dir=tmp_path / name,
            database_url=postgres_url,
            media_dir=tmp_path / "shared-media",
        )

    first, second = replica("a"), replica("b")
    setup_tokens = len(TRANSCRIPT) if call.needs_voice else 0
    quota = setup_tokens + 2 * call.tokens - 1
    user_id, headers = limited_user(first, quota)
    voice_id, _ = _voice_for(first, headers, call)

    responses = race([first, second], headers, call, voice_id, RACERS)

    _assert_one_winner(responses, call)
    usage = second.get("/usage", headers=headers).json()
    assert usage["tokens_used_total"] == setup_tokens + call.tokens <= quota
    state = totals(postgres_url, user_id)
    assert state["tokens_used"] == usage["tokens_used_total"]
    assert state["tokens_reserved"] == 0 and state["reservations"] == 0


def test_running_totals_equal_usage_for_every_user_after_concurrent_mixed_calls(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    """Three users call at once (speech, batches, streams, voices, refusals, a missing voice):
    each user's running total, /usage and the admin's per-user list agree, to the token."""
    api = make_client(load_engine=lambda: engine)
    users = [limited_user(api, quota) for quota in (None, 30 + 40 + 39, 10_000)]
    voices = [clone(api, headers).json()["voice_id"] for _, headers in users]
    calls = {call.name: call for call in PAID_CALLS}
    plan = [  # (user index, call, voice id)
        *[(0, calls["tts"], voices[0])] * 3,
        *[(0, calls["batch"], voices[0])] * 2,
        *[(1, calls["stream"], voices[1])] * 3,  # room for one: two are refused
        (2, calls["openai"], voices[2]),
        (2, calls["design"], 0),
        (2, calls["clone"], 0),
        (2, calls["tts"], voices[0]),  # another user's voice: 404, nothing held
    ]
    barrier = threading.Barrier(len(plan))
    statuses: list[tuple[int, int]] = []
    lock = threading.Lock()

    def one(user_index: int, call: PaidCall, voice_id: int) -> None:
        barrier.wait()
        status = call.make(api, users[user_index][1], voice_id).status_code
        with lock:
            statuses.append((user_index, status))

    threads = [threading.Thread(target=one, args=step) for step in plan]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert sorted(statuses) == sorted(
        [(0, 200)] * 5 + [(1, 200), (1, 402), (1, 402)] + [(2, 200)] * 3 + [(2, 404)]
    )
    expected = [
        30 + 3 * 40 + 2 * 36,
        30 + 40,
        30 + 40 + calls["design"].tokens + 30,
    ]
    listed = {
        row["user_id"]: row["usage"]
        for row in api.get("/admin/users", headers=admin_headers()).json()
    }
    for (user_id, headers), tokens in zip(users, expected, strict=True):
        usage = api.get("/usage", headers=headers).json()
        assert usage["tokens_used_total"] == tokens
        assert listed[user_id] == usage
        state = totals(f"sqlite:///{tmp_path / 'data' / 'db.sqlite3'}", user_id)
        assert state["tokens_used"] == tokens
        assert state["tokens_reserved"] == 0 and state["reservations"] == 0
