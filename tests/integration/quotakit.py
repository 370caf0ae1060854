"""Plain helpers shared by the quota tests (test_quota*.py, test_storage_limits.py): users with
a quota, every paid call by name, a race of identical calls, and the user's running totals as
the database holds them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from support import admin_headers, reference_audio

from qwen3_tts_server.engine.base import DesignItem, Engine, Item
from qwen3_tts_server.engine.step.stepper import Admission
from qwen3_tts_server.services.voices import coverage_phrase
from qwen3_tts_server.values import Audio, Sampling

Client = TestClient | httpx.Client

#: Every clone in these tests says this (30 characters: 30 tokens, over CLONE_MIN_TOKENS).
TRANSCRIPT = "Hello there, this is my voice."
DESCRIPTION = "A calm, low voice."
TEXT_40 = "Forty characters of text to be spoken ok"
BATCH_TEXTS = ["Twenty characters ok", "Twenty more of them."]
assert len(TRANSCRIPT) == 30 and len(TEXT_40) == 40 == len("".join(BATCH_TEXTS))


class CountingEngine:
    """The session engine, counting what reaches the model: texts synthesised, prompts made,
    voices designed. A call refused before any work never shows up here."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.texts: list[str] = []
        self.prompts = 0
        self.designs = 0

    def prepare(self, item: Item, sampling: Sampling, budget: int) -> Admission:
        with self.lock:
            if isinstance(item, DesignItem):
                self.designs += 1
            else:
                self.texts.append(item.text)
        return self.inner.prepare(item, sampling, budget)

    def create_prompt(self, audio: Audio, transcript: str | None) -> bytes:
        with self.lock:
            self.prompts += 1
        return self.inner.create_prompt(audio, transcript)

    def warm_up(self) -> None:
        self.inner.warm_up()

    def reset(self) -> None:
        with self.lock:
            self.texts, self.prompts, self.designs = [], 0, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def limited_user(client: Client, token_quota: int | None) -> tuple[int, dict[str, str]]:
    """A user with `token_quota`, its key exchanged: (user_id, auth headers)."""
    user_id = client.post(
        "/admin/users", headers=admin_headers(), json={"token_quota": token_quota}
    ).json()["user_id"]
    code = client.post(f"/admin/users/{user_id}/invites", headers=admin_headers()).json()
    key = client.post("/auth/exchange-invite", json={"invite_code": code["invite_code"]}).json()
    return user_id, {"Authorization": f"Bearer {key['api_key']}"}


def clone(
    client: Client,
    headers: dict[str, str],
    *,
    name: str = "voice",
    upload: bytes | None = None,
    transcript: str = TRANSCRIPT,
) -> httpx.Response:
    return client.post(
        "/clonevoice",
        headers=headers,
        data={"name": name, "transcript": transcript, "language": "English"},
        files={"file": ("ref.wav", upload if upload is not None else reference_audio())},
    )


@dataclass(frozen=True)
class PaidCall:
    """One kind of paid call: how to make it and what it costs (at the default discount)."""

    name: str
    tokens: int
    needs_voice: bool
    make: Callable[[Client, dict[str, str], int], httpx.Response]


def _tts(client: Client, headers: dict[str, str], voice_id: int) -> httpx.Response:
    return client.post("/tts", headers=headers, json={"text": TEXT_40, "voice_id": voice_id})


def _stream(client: Client, headers: dict[str, str], voice_id: int) -> httpx.Response:
    body = {"text": TEXT_40, "voice_id": voice_id, "stream": True, "format": "pcm"}
    return client.post("/tts", headers=headers, json=body)


def _batch(client: Client, headers: dict[str, str], voice_id: int) -> httpx.Response:
    body = {"texts": BATCH_TEXTS, "voice_id": voice_id}
    return client.post("/batchtts", headers=headers, json=body)


def _openai(client: Client, headers: dict[str, str], voice_id: int) -> httpx.Response:
    body = {"model": "tts-1", "input": TEXT_40, "voice": f"voice:{voice_id}"}
    return client.post("/v1/audio/speech", headers=headers, json=body)


def _clone(client: Client, headers: dict[str, str], _voice_id: int) -> httpx.Response:
    return clone(client, headers)


def _design(client: Client, headers: dict[str, str], _voice_id: int) -> httpx.Response:
    body = {"name": "designed", "description": DESCRIPTION, "language": "English"}
    return client.post("/designvoice", headers=headers, json=body)


PAID_CALLS = [
    PaidCall("tts", 40, True, _tts),
    PaidCall("stream", 40, True, _stream),
    PaidCall("batch", 36, True, _batch),  # floor(40 x 0.90)
    PaidCall("openai", 40, True, _openai),
    PaidCall("clone", 30, False, _clone),
    PaidCall("design", len(DESCRIPTION) + len(coverage_phrase("english")), False, _design),
]


def race(
    clients: Sequence[Client], headers: dict[str, str], call: PaidCall, voice_id: int, n: int
) -> list[httpx.Response]:
    """`n` identical calls released together, spread over `clients` (replicas)."""
    barrier = threading.Barrier(n)
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        barrier.wait()
        response = call.make(clients[index % len(clients)], headers, voice_id)
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(responses) == n, "a racing call never returned"
    return responses


def totals(database_url: str, user_id: int) -> dict[str, int]:
    """The user's running totals and open reservations, read straight from the database.

    One statement, so one snapshot: read in two, a release committing between them shows no
    reservation beside a total that still holds it.
    """
    engine = create_engine(database_url)
    try:
        with engine.connect() as db:
            row = db.execute(
                text(
                    "SELECT tokens_used, tokens_reserved, storage_bytes, voice_count, "
                    "(SELECT COUNT(*) FROM reservations WHERE user_id = :id) AS reservations "
                    "FROM users WHERE id = :id"
                ),
                {"id": user_id},
            ).one()
    finally:
        engine.dispose()
    return {name: int(value) for name, value in row._asdict().items()}
