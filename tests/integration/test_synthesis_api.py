"""/tts, /batchtts and /getstored over HTTP with the tiny real-architecture model."""

from __future__ import annotations

import io
import json
import sqlite3
import zipfile
from pathlib import Path

import av
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from support import AppFactory, clone_voice, new_user_key

from qwen3_tts_server.audio.encode import FORMATS
from qwen3_tts_server.engine.base import Engine


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
    assert int(response.headers["x-latency-ms"]) > 0
    assert int(response.headers["x-generation-id"]) > 0
    info = sf.info(io.BytesIO(response.content))
    assert info.format == container and info.samplerate == 24000 and info.frames > 0
    exposed = response.headers.get("access-control-expose-headers", "")
    assert exposed == "" or "X-Generation-Id" in exposed


def test_cors_exposes_metadata_headers_to_browsers(
    api: TestClient, user: tuple[dict[str, str], int]
) -> None:
    headers, voice_id = user
    response = api.post(
        "/tts",
        headers={**headers, "Origin": "https://app.example"},
        json={"text": "Hi.", "voice_id": voice_id},
    )
    exposed = response.headers["access-control-expose-headers"]
    for name in ("X-Generation-Id", "X-Tokens-Used", "X-Latency-Ms"):
        assert name in exposed


def test_long_text_is_split_and_joined(api: TestClient, user: tuple[dict[str, str], int]) -> None:
    headers, voice_id = user
    text = " ".join(f"This is sentence number {n}, with a pause." for n in range(12))
    response = api.post(
        "/tts", headers=headers, json={"text": text, "voice_id": voice_id, "seed": 3}
    )
    assert response.status_code == 200, response.text
    short = api.post(
        "/tts", headers=headers, json={"text": "One sentence.", "voice_id": voice_id, "seed": 3}
    )
    long_frames = sf.info(io.BytesIO(response.content)).frames
    assert long_frames > sf.info(io.BytesIO(short.content)).frames
    assert response.headers["x-tokens-used"] == str(len(text))


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


def test_batch_discount_calibrates_from_history(
    api: TestClient, user: tuple[dict[str, str], int], tmp_path: Path
) -> None:
    """The first batch pays the default; its timing (vs single requests) moves later prices."""
    headers, voice_id = user
    api.post("/tts", headers=headers, json={"text": "A baseline sentence.", "voice_id": voice_id})
    body = {"texts": ["One.", "Two.", "Three.", "Four."], "voice_id": voice_id}
    first = api.post("/batchtts", headers=headers, json=body)
    assert first.headers["x-batch-discount-used"] == "0.9"
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        stored = dict(db.execute("SELECT key, value FROM runtime_stats").fetchall())
    second = api.post("/batchtts", headers=headers, json=body)
    assert float(second.headers["x-batch-discount-used"]) == round(
        stored["batch_discount_current"], 3
    )
    assert 0.6 <= stored["batch_discount_current"] <= 1.0


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
