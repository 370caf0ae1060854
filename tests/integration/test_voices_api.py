"""Voices over HTTP with the tiny real-architecture model: clone, design, read, delete, dedupe."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from support import AppFactory, clone_voice, new_user_key, reference_audio

from qwen3_tts_server.engine.base import Engine


@pytest.fixture
def api(make_client: AppFactory, engine: Engine) -> TestClient:
    return make_client(load_engine=lambda: engine)


def _blob_files(tmp_path: Path) -> list[Path]:
    return [path for path in (tmp_path / "data" / "media").rglob("*") if path.is_file()]


def test_clone_list_detail_sample_delete(api: TestClient) -> None:
    _, headers = new_user_key(api)
    upload = reference_audio("ogg")
    created = api.post(
        "/clonevoice",
        headers=headers,
        data={"name": " Geoff ", "transcript": "  Héllo wörld, 你好.  ", "language": "ENGLISH"},
        files={"file": ("whatever.txt", upload, "text/plain")},
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert len("Héllo wörld, 你好.") == 16
    assert body["tokens_used"] == 20  # CLONE_MIN_TOKENS: a transcript this short costs that
    voice_id = body["voice_id"]

    listing = api.get("/voices", headers=headers).json()
    assert [(v["voice_id"], v["name"], v["language"], v["use_count"]) for v in listing] == [
        (voice_id, "Geoff", "english", 0)
    ]
    assert set(listing[0]) == {"voice_id", "name", "created_at", "use_count", "language"}
    assert "+00:00" in listing[0]["created_at"] or listing[0]["created_at"].endswith("Z")

    detail = api.get(f"/voices/{voice_id}", headers=headers).json()
    assert detail["ref_text"] == "Héllo wörld, 你好." and detail["voice_description"] is None
    assert detail["kind"] == "clone"

    sample = api.get(f"/voices/{voice_id}/sample", headers=headers)
    assert sample.status_code == 200
    assert sample.content == upload
    assert sample.headers["content-type"] == "audio/ogg"  # the truth, not "audio/wav"
    assert unquote(sample.headers["x-transcript"]) == "Héllo wörld, 你好."
    assert sample.headers["content-disposition"].endswith('.ogg"')

    usage = api.get("/usage", headers=headers).json()
    assert usage["tokens_used_voices"] == body["tokens_used"]
    assert usage["tokens_used_total"] == body["tokens_used"] and usage["voices_created"] == 1

    assert api.post(f"/voices/{voice_id}/delete", headers=headers).json() == {"status": "deleted"}
    again = api.post(f"/voices/{voice_id}/delete", headers=headers)
    assert again.status_code == 404 and again.json() == {"detail": "Voice not found"}
    assert api.get("/voices", headers=headers).json() == []
    after = api.get("/usage", headers=headers).json()
    assert after["voices_created"] == 0 and after["tokens_used_voices"] == body["tokens_used"]


def test_design_voice_uses_a_phrase_in_its_language(api: TestClient) -> None:
    _, headers = new_user_key(api)
    description = "Warm, calm narrator voice."
    created = api.post(
        "/designvoice",
        headers=headers,
        json={"name": "narrator", "description": description, "language": "German"},
    )
    assert created.status_code == 200, created.text
    voice_id = created.json()["voice_id"]
    detail = api.get(f"/voices/{voice_id}", headers=headers).json()
    assert detail["voice_description"] == description and detail["kind"] == "design"
    assert detail["language"] == "german" and "Boxkämpfer" in detail["ref_text"]
    assert created.json()["tokens_used"] == len(description) + len(detail["ref_text"])
    sample = api.get(f"/voices/{voice_id}/sample", headers=headers)
    assert sample.headers["content-type"] == "audio/flac" and sample.content[:4] == b"fLaC"


def test_voices_are_invisible_to_other_users(api: TestClient) -> None:
    _, alice = new_user_key(api)
    _, bob = new_user_key(api)
    voice_id = clone_voice(api, alice)
    for method, path in (
        ("GET", f"/voices/{voice_id}"),
        ("GET", f"/voices/{voice_id}/sample"),
        ("POST", f"/voices/{voice_id}/delete"),
        ("DELETE", f"/voices/{voice_id}"),
    ):
        response = api.request(method, path, headers=bob)
        assert response.status_code == 404, (method, path)
        assert response.json() == {"detail": "Voice not found"}
    tts = api.post("/tts", headers=bob, json={"text": "Hi there.", "voice_id": voice_id})
    assert tts.status_code == 404 and tts.json() == {"detail": "Voice not found"}
    assert api.get("/voices", headers=bob).json() == []
    assert api.get(f"/voices/{voice_id}", headers=alice).status_code == 200


def test_identical_uploads_share_one_blob_until_both_voices_go(
    api: TestClient, tmp_path: Path
) -> None:
    _, alice = new_user_key(api)
    _, bob = new_user_key(api)
    upload = reference_audio("wav", seed=7)
    first = clone_voice(api, alice, upload=upload, filename="a.wav")
    second = clone_voice(api, bob, upload=upload, filename="b.mp3")
    assert len(_blob_files(tmp_path)) == 1
    assert api.delete(f"/voices/{first}", headers=alice).status_code == 200
    assert len(_blob_files(tmp_path)) == 1
    assert api.get(f"/voices/{second}/sample", headers=bob).content == upload
    assert api.delete(f"/voices/{second}", headers=bob).status_code == 200
    assert _blob_files(tmp_path) == []


BAD_UPLOADS = {
    "empty file": (b"", "Empty file upload"),
    "text named .wav": (b"hello, I am not audio at all\n" * 20, "could not decode"),
    "truncated flac": (reference_audio("flac")[:200], "could not decode"),
    "silence": (reference_audio("wav", amplitude=0.0), "silent"),
    "too short": (reference_audio("wav", seconds=0.3), "at least"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_uploads_are_4xx_and_leave_nothing(api: TestClient, tmp_path: Path, case: str) -> None:
    _, headers = new_user_key(api)
    data, fragment = BAD_UPLOADS[case]
    response = api.post(
        "/clonevoice",
        headers=headers,
        data={"name": "x", "transcript": "Some words."},
        files={"file": ("ref.wav", data, "audio/wav")},
    )
    assert response.status_code == 400, response.text
    assert fragment in response.json()["detail"]
    assert _blob_files(tmp_path) == []
    assert api.get("/voices", headers=headers).json() == []
    assert api.get("/usage", headers=headers).json()["tokens_used_total"] == 0


@pytest.mark.parametrize(
    ("limit", "printed"), [(50_000, "50000 bytes"), (1024 * 1024, "1 MiB")], ids=["bytes", "MiB"]
)
def test_upload_limits_say_the_configured_size(
    make_client: AppFactory, engine: Engine, tmp_path: Path, limit: int, printed: str
) -> None:
    """Two 413s: the body cap (middleware, before the form is parsed) and the file's own limit
    (a body within the cap whose file is over MAX_UPLOAD_BYTES). Both name the limit as it was
    configured, and neither leaves a blob or charges anything."""
    api = make_client(load_engine=lambda: engine, max_upload_bytes=limit)
    _, headers = new_user_key(api)
    rate = 24000  # 16-bit mono WAV: 48 000 bytes a second, plus a 44-byte header
    just_over = reference_audio("wav", seconds=(limit + 2000) / (2 * rate), rate=rate)
    far_over = reference_audio("wav", seconds=(2 * limit + 100_000) / (2 * rate), rate=rate)
    assert limit < len(just_over) < limit + 64 * 1024 < len(far_over)
    form = {"name": "x", "transcript": "Words."}
    for upload, detail in (
        (just_over, f"the upload is larger than {printed}"),
        (far_over, f"uploads are limited to {printed}"),
    ):
        response = api.post(
            "/clonevoice", headers=headers, data=form, files={"file": ("ref.wav", upload)}
        )
        assert response.status_code == 413, response.text
        assert detail in response.json()["detail"]
    assert _blob_files(tmp_path) == []
    assert api.get("/usage", headers=headers).json()["tokens_used_total"] == 0


def test_field_errors(make_client: AppFactory, engine: Engine) -> None:
    api = make_client(load_engine=lambda: engine)
    _, headers = new_user_key(api)
    small = reference_audio("mp3", seconds=1.5)
    cases = [
        ({"name": "x", "transcript": "   "}, 400, "Transcript must not be empty"),
        ({"name": "  ", "transcript": "Words."}, 400, "Name must not be empty"),
        ({"name": "x", "transcript": "Words.", "language": "klingon"}, 400, "english"),
    ]
    for fields, status, fragment in cases:
        response = api.post(
            "/clonevoice", headers=headers, data=fields, files={"file": ("r.mp3", small)}
        )
        assert response.status_code == status, fields
        assert fragment in response.json()["detail"]
    missing = api.post("/clonevoice", headers=headers, data={"name": "x"})
    assert missing.status_code == 422
    bad_json = api.post("/designvoice", headers=headers, json={"name": "x", "description": 5})
    assert bad_json.status_code == 422
    blank = api.post(
        "/designvoice", headers=headers, json={"name": "  ", "description": "A voice."}
    )
    assert blank.status_code == 400 and blank.json()["detail"] == "Name must not be empty"
    assert api.get("/usage", headers=headers).json()["tokens_used_total"] == 0
