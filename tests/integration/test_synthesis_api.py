"""/tts, /batchtts and /getstored over HTTP with the tiny real-architecture model."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from support import AppFactory, clone_voice, new_user_key

from qwen3_tts_server.audio.encode import FORMATS
from qwen3_tts_server.engine.base import Engine, Item
from qwen3_tts_server.engine.step.stepper import Admission, Slot
from qwen3_tts_server.values import Sampling


@pytest.fixture
def api(make_client: AppFactory, engine: Engine) -> TestClient:
    return make_client(load_engine=lambda: engine)


@pytest.fixture
def user(api: TestClient) -> tuple[dict[str, str], int]:
    _, headers = new_user_key(api)
    return headers, clone_voice(api, headers)


def _media_files(tmp_path: Path) -> set[Path]:
    return {path for path in (tmp_path / "data" / "media").rglob("*") if path.is_file()}


@pytest.mark.parametrize(
    ("fmt", "media_type", "container"),
    [
        ("wav", "audio/wav", "WAV"),
        ("mp3", "audio/mpeg", "MP3"),
        ("ogg", "audio/ogg", "OGG"),
        ("FLAC", "audio/flac", "FLAC"),
    ],
)
def test_tts_returns_audio_with_headers(
    api: TestClient, user: tuple[dict[str, str], int], fmt: str, media_type: str, container: str
) -> None:
    headers, voice_id = user
    text = "  Hello from the TTS server.  "
    response = api.post(
        "/tts", headers=headers, json={"text": text, "voice_id": voice_id, "format": fmt}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    assert response.headers["x-tokens-used"] == str(len(text.strip()))
    assert int(response.headers["x-generation-id"]) > 0
    info = sf.info(io.BytesIO(response.content))
    assert info.format == container and info.samplerate == 24000 and info.frames > 0


def test_a_generation_tells_its_owner_only_what_it_was_charged(
    api: TestClient, user: tuple[dict[str, str], int]
) -> None:
    headers, voice_id = user
    response = api.post("/tts", headers=headers, json={"text": "Charged.", "voice_id": voice_id})
    generation_id = response.headers["x-generation-id"]
    row = api.get(f"/generations/{generation_id}", headers=headers)
    assert row.status_code == 200, row.text
    assert row.json() == {
        "generation_id": int(generation_id),
        "status": "ok",
        "tokens_used": len("Charged."),
        "audio_seconds": pytest.approx(row.json()["audio_seconds"]),
        "finish_reason": response.headers["x-finish-reason"],
    }
    assert row.json()["audio_seconds"] > 0
    _, stranger = new_user_key(api)
    for who, path in [(stranger, generation_id), (headers, str(int(generation_id) + 1))]:
        missing = api.get(f"/generations/{path}", headers=who)
        assert missing.status_code == 404 and "no generation" in missing.json()["detail"]


class HeldEngine:
    """The session engine, whose first admission (after warm-up) waits until the test releases
    it: the whole step loop waits with it."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.holding = threading.Event()
        self.proceed = threading.Event()

    def prepare(self, item: Item, sampling: Sampling, budget: int) -> Admission:
        if not self.holding.is_set():
            self.holding.set()
            self.proceed.wait(60)
        return self.inner.prepare(item, sampling, budget)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_latency_is_model_time_and_queue_time_is_separate(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    """A request queued behind a held admission waits at least as long as the test holds it:
    that wait is X-Queue-Ms, not X-Latency-Ms. Both are what the generation row keeps, and
    together they fit inside the request as the client saw it."""
    held = HeldEngine(engine)
    api = make_client(load_engine=lambda: held)
    _, headers = new_user_key(api)
    voice_id = clone_voice(api, headers)
    scheduler = api.app.state.context.runtime.loaded().scheduler
    body = {"text": "Time me.", "voice_id": voice_id}
    ahead = threading.Thread(target=lambda: api.post("/tts", headers=headers, json=body))
    ahead.start()
    assert held.holding.wait(60)
    seen: dict[str, Any] = {}

    def queued_request() -> None:
        started = time.perf_counter()
        seen["response"] = api.post("/tts", headers=headers, json=body)
        seen["elapsed_ms"] = (time.perf_counter() - started) * 1000

    behind = threading.Thread(target=queued_request)
    behind.start()
    deadline = time.monotonic() + 60
    while scheduler.queue_depth < 1:
        assert time.monotonic() < deadline, "the second request never reached the queue"
        time.sleep(0.01)
    time.sleep(0.3)  # the queued request now waits at least this long
    held.proceed.set()
    ahead.join(60)
    behind.join(60)
    response = seen["response"]
    assert response.status_code == 200, response.text
    latency_ms = int(response.headers["x-latency-ms"])
    queue_ms = int(response.headers["x-queue-ms"])
    assert queue_ms >= 300 and latency_ms > 0
    assert latency_ms + queue_ms <= seen["elapsed_ms"]
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        row = db.execute(
            "SELECT latency_ms, queue_ms FROM generations WHERE id = ?",
            (int(response.headers["x-generation-id"]),),
        ).fetchone()
    assert row == (latency_ms, queue_ms)


def test_cors_exposes_metadata_headers_to_browsers(
    api: TestClient, user: tuple[dict[str, str], int]
) -> None:
    headers, voice_id = user
    response = api.post(
        "/tts",
        headers={**headers, "Origin": "https://app.example"},
        json={"text": "Hi.", "voice_id": voice_id},
    )
    exposed = [
        name.strip() for name in response.headers["access-control-expose-headers"].split(",")
    ]
    for name in ("X-Generation-Id", "X-Tokens-Used", "X-Latency-Ms", "X-Queue-Ms"):
        assert name in exposed


def _zero_runs(samples: np.ndarray, at_least: int) -> int:
    """How many runs of at least `at_least` consecutive exact zeros `samples` holds."""
    padded = np.concatenate(([1], samples, [1]))
    edges = np.flatnonzero(np.diff((padded == 0).astype(np.int8)))
    starts, ends = edges[::2], edges[1::2]
    return int(np.sum(ends - starts >= at_least))


def test_long_text_is_split_and_joined(make_client: AppFactory, engine: Engine) -> None:
    """With CHUNK_MAX_CHARS=20 each short sentence is its own chunk of one job (12 chunks, run
    8 at a time in ENGINE_MAX_BATCH=8 slots), and the file is the sentences joined with a
    0.12 s silence (2880 samples at 24 kHz) between each two: 11 pauses."""
    api = make_client(load_engine=lambda: engine, chunk_max_chars=20)
    _, headers = new_user_key(api)
    voice_id = clone_voice(api, headers)
    scheduler = api.app.state.context.runtime.loaded().scheduler
    chunks_before = sum(scheduler.stats.finish_reasons.values())
    text = " ".join(f"Sentence {n} ends." for n in range(12))
    response = api.post("/tts", headers=headers, json={"text": text, "voice_id": voice_id})
    assert response.status_code == 200, response.text
    assert response.headers["x-tokens-used"] == str(len(text))
    assert sum(scheduler.stats.finish_reasons.values()) - chunks_before == 12
    assert max(scheduler.stats.last_step_sizes) == 8
    samples, rate = sf.read(io.BytesIO(response.content), dtype="int16")
    assert rate == 24000
    assert _zero_runs(samples, 2880) == 11


def test_same_seed_same_audio(api: TestClient, user: tuple[dict[str, str], int]) -> None:
    headers, voice_id = user
    body = {"text": "Reproducible speech.", "voice_id": voice_id, "seed": 42}
    first = api.post("/tts", headers=headers, json=body)
    second = api.post("/tts", headers=headers, json=body)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content


def test_store_false_keeps_nothing_store_true_round_trips(
    api: TestClient, user: tuple[dict[str, str], int], tmp_path: Path
) -> None:
    headers, voice_id = user
    before = _media_files(tmp_path)
    secret_text = "Nobody should ever see this sentence again."
    fleeting = api.post("/tts", headers=headers, json={"text": secret_text, "voice_id": voice_id})
    assert fleeting.status_code == 200
    assert _media_files(tmp_path) == before
    fleeting_id = fleeting.headers["x-generation-id"]
    assert api.get(f"/getstored/{fleeting_id}", headers=headers).status_code == 404
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("db.sqlite3*"))
    assert secret_text.encode() not in raw

    kept = api.post(
        "/tts",
        headers=headers,
        json={"text": "Keep me.", "voice_id": voice_id, "store": True, "format": "mp3"},
    )
    generation_id = kept.headers["x-generation-id"]
    stored = api.get(f"/getstored/{generation_id}", headers=headers)
    assert stored.status_code == 200
    assert stored.content == kept.content
    assert stored.headers["content-type"] == "audio/mpeg"
    assert stored.headers["x-generation-id"] == generation_id

    _, other = new_user_key(api)
    assert api.get(f"/getstored/{generation_id}", headers=other).status_code == 404
    assert api.get("/getstored/999999", headers=headers).status_code == 404


def test_batch_zip_manifest_headers_and_pricing(
    api: TestClient, user: tuple[dict[str, str], int]
) -> None:
    headers, voice_id = user
    texts = ["First line.", "Second line.", "Third, a little longer line."]
    response = api.post(
        "/batchtts",
        headers=headers,
        json={"text": texts, "voice_id": voice_id, "format": "ogg", "store": True},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    chars = sum(len(t) for t in texts)
    assert response.headers["x-batch-discount-used"] == "0.9"
    assert response.headers["x-tokens-used"] == str(int(chars * 0.9))
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.namelist() == ["0.ogg", "1.ogg", "2.ogg", "manifest.json"]
        manifest = json.loads(archive.read("manifest.json"))
        first_item = archive.read("0.ogg")
    for key in (
        "batch_id",
        "generation_ids",
        "format",
        "language",
        "tokens_used",
        "batch_discount_used",
        "latency_ms_total",
        "store",
    ):
        assert key in manifest
    assert manifest["batch_id"] == int(response.headers["x-batch-id"])
    assert manifest["latency_ms_total"] == int(response.headers["x-latency-ms-total"])
    assert [item["chars"] for item in manifest["items"]] == [len(t) for t in texts]
    # floor(51 x 0.9) = 45; the items' floors (9, 10, 25) lose one token, which goes to the
    # item with the largest remainder (11 x 0.9 = 9.9), so the items add up to the batch.
    assert [item["tokens"] for item in manifest["items"]] == [10, 10, 25]
    stored = api.get(f"/getstored/{manifest['generation_ids'][0]}", headers=headers)
    assert stored.content == first_item

    usage = api.get("/usage", headers=headers).json()
    assert usage["batch_calls"] == 1 and usage["tokens_used_batch"] == int(chars * 0.9)
    assert usage["tts_calls"] == 0
    voice = api.get(f"/voices/{voice_id}", headers=headers).json()
    assert voice["use_count"] == 1


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_batch_states_its_sample_rate_for_every_format(
    api: TestClient, user: tuple[dict[str, str], int], fmt: str
) -> None:
    """A `pcm` file has no header: the ZIP must say its rate, and says it the same for all."""
    headers, voice_id = user
    body = {"texts": ["One.", "Two."], "voice_id": voice_id, "format": fmt}

    response = api.post("/batchtts", headers=headers, json=body)

    assert response.status_code == 200, response.text
    assert response.headers["x-sample-rate"] == "24000"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        first = archive.read(f"0.{FORMATS[fmt].extension}")
    assert manifest["sample_rate"] == 24000
    if fmt == "pcm":  # 16-bit mono at the stated rate lasts what the manifest says
        seconds = len(first) / 2 / manifest["sample_rate"]
        assert seconds == pytest.approx(manifest["items"][0]["duration_s"], abs=0.001)
    elif fmt == "aac":
        with av.open(io.BytesIO(first)) as container:
            assert container.streams.audio[0].sample_rate == manifest["sample_rate"]
    else:  # Opus: the header's input rate (decoders always play Opus at 48 kHz)
        assert sf.info(io.BytesIO(first)).samplerate == manifest["sample_rate"]


class SteadyEngine:
    """The session engine, capped at 2 frames per text (the model cannot stop sooner: every
    text makes exactly two) and taking 0.5 s more per step whatever the number of slots, so a
    batch's efficiency against single requests lands inside the discount's clamp, where a wrong
    formula shows (the sleep dwarfs the rest, so a pause on a busy machine moves it little)."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    @property
    def frame_cap(self) -> int:
        return 2

    def step(self, slots: Sequence[Slot]) -> None:
        time.sleep(0.5)
        self.inner.step(slots)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_batch_discount_calibrates_from_history(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    """The README's rule, recomputed from what the rows recorded: S = a single request's model
    ms per character; after a batch, D = clamp(0.9 x (1 - 0.1) + 0.1 x clamp(L / (S x C))),
    clamped to [0.6, 1.0], and the next batch pays D rounded to 3 decimals. (20 characters
    alone, then 25 in one call of the same length: an efficiency near 0.8, mid-clamp.)"""
    api = make_client(load_engine=lambda: SteadyEngine(engine))
    _, headers = new_user_key(api)
    voice_id = clone_voice(api, headers)
    single = api.post(
        "/tts", headers=headers, json={"text": "A baseline sentence.", "voice_id": voice_id}
    )
    body = {"texts": ["One two three.", "Four, five."], "voice_id": voice_id}
    first = api.post("/batchtts", headers=headers, json=body)
    assert first.headers["x-batch-discount-used"] == "0.9"
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        stored = dict(db.execute("SELECT key, value FROM runtime_stats").fetchall())
        [(single_ms, single_chars)] = db.execute(
            "SELECT latency_ms, chars FROM generations WHERE id = ?",
            (int(single.headers["x-generation-id"]),),
        )
        [(batch_ms, batch_chars)] = db.execute(
            "SELECT latency_ms_total, chars FROM batches WHERE id = ?",
            (int(first.headers["x-batch-id"]),),
        )
    assert batch_ms == int(first.headers["x-latency-ms-total"])  # model time, no queue

    def clamp(value: float) -> float:
        return min(1.0, max(0.6, value))

    per_char = single_ms / single_chars
    assert stored["single_latency_per_char_ms"] == pytest.approx(per_char)
    efficiency = batch_ms / (per_char * batch_chars)
    assert 0.6 < efficiency < 1.0  # inside the clamp: the formula decides the result
    expected = clamp(0.9 * 0.9 + 0.1 * clamp(efficiency))
    assert stored["batch_discount_current"] == pytest.approx(round(expected, 5))
    second = api.post("/batchtts", headers=headers, json=body)
    assert second.headers["x-batch-discount-used"] == str(round(round(expected, 5), 3))


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"text": ["a", "b"]}, 400, "expects a single text string"),
        ({"text": "   "}, 400, "Text must not be empty"),
        ({"text": ""}, 422, ""),
        ({"text": "x" * 3001}, 400, "Text too long (max 3000)"),
        ({"text": "Hi.", "format": "m4a"}, 400, "wav, mp3, ogg"),
        ({"text": "Hi.", "language": "Klingon"}, 400, "english"),
        ({"text": "Hi.", "temperature": 0}, 422, ""),
        ({"text": "Hi.", "temperature": 9}, 422, ""),
        ({"text": "Hi.", "temperature": "hot"}, 422, ""),
        ({"text": 5}, 422, ""),
        ({"text": "Hi.", "voice_id": "abc"}, 422, ""),
        ({"text": "Hi.", "voice_id": 987654}, 404, "Voice not found"),
        ({"text": "Hi.", "seed": -1}, 422, ""),
    ],
)
def test_tts_bad_input_is_4xx_and_free(
    api: TestClient,
    user: tuple[dict[str, str], int],
    body: dict[str, object],
    status: int,
    fragment: str,
) -> None:
    headers, voice_id = user
    response = api.post("/tts", headers=headers, json={"voice_id": voice_id, **body})
    assert response.status_code == status, response.text
    assert fragment in json.dumps(response.json()["detail"])
    usage = api.get("/usage", headers=headers).json()
    assert usage["tokens_used_tts"] == 0 and usage["tts_calls"] == 0


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"text": "just one string"}, 400, "expects a list of text strings"),
        ({"text": ["only one"]}, 400, "Batch too small (min 2)"),
        ({"text": ["x"] * 51}, 400, "Batch too large (max 50)"),
        ({"text": []}, 422, ""),
        ({"text": ["ok", "  "]}, 400, "All texts must be non-empty"),
        ({"text": ["ok", "x" * 3001]}, 400, "Each text must be <= 3000 chars"),
        ({"text": ["ok", 3]}, 422, ""),
        ({"text": ["a", "b"], "texts": ["a", "b"]}, 422, "not both"),
        ({"texts": ["a", "b"], "format": "wma"}, 400, "Unsupported format"),
    ],
)
def test_batch_bad_input_is_4xx_and_free(
    api: TestClient,
    user: tuple[dict[str, str], int],
    body: dict[str, object],
    status: int,
    fragment: str,
) -> None:
    headers, voice_id = user
    response = api.post("/batchtts", headers=headers, json={"voice_id": voice_id, **body})
    assert response.status_code == status, response.text
    assert fragment in json.dumps(response.json()["detail"])
    assert api.get("/usage", headers=headers).json()["batch_calls"] == 0


def test_quota_is_enforced_before_work(api: TestClient) -> None:
    from support import admin_headers

    user_id = api.post("/admin/users", headers=admin_headers(), json={"token_quota": 40}).json()[
        "user_id"
    ]
    code = api.post(f"/admin/users/{user_id}/invites", headers=admin_headers()).json()
    key = api.post("/auth/exchange-invite", json={"invite_code": code["invite_code"]}).json()
    headers = {"Authorization": f"Bearer {key['api_key']}"}
    voice_id = clone_voice(api, headers)  # 30 tokens of transcript
    refused = api.post("/tts", headers=headers, json={"text": "x" * 11, "voice_id": voice_id})
    assert refused.status_code == 402 and "quota" in refused.json()["detail"]
    allowed = api.post("/tts", headers=headers, json={"text": "x" * 10, "voice_id": voice_id})
    assert allowed.status_code == 200
