"""Inputs a client can send but no tokenizer or database can hold: always a 4xx, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from support import ADMIN_TOKEN, clone_voice, make_settings, new_user_key

from qwen3_tts_server.app import create_app
from qwen3_tts_server.engine.base import Engine

HUGE = 10**22

JSON_CASES = [
    ("/tts", '{"text": "\\ud800 lone surrogate", "voice_id": VOICE}'),
    ("/tts", '{"text": "nul \\u0000 byte", "voice_id": VOICE, "store": true}'),
    ("/tts", '{"text": "bell \\u0007", "voice_id": VOICE}'),
    ("/tts", f'{{"text": "hi", "voice_id": {HUGE}}}'),
    ("/tts", '{"text": "hi", "voice_id": 0}'),
    ("/tts", "[1, 2]"),
    ("/tts", "null"),
    ("/tts", '{"text": "unterminated'),
    ("/batchtts", '{"texts": ["\\ud800", "ok"], "voice_id": VOICE}'),
    ("/designvoice", '{"name": "\\udfff", "description": "A voice."}'),
    ("/designvoice", '{"name": "ok", "description": "x\\u0000"}'),
    ("/admin/users", '{"name": "\\ud800"}'),
    ("/admin/users", f'{{"token_quota": {HUGE}}}'),
]


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, engine: Engine
) -> Iterator[tuple[TestClient, dict[str, str], int]]:
    """One app for the module: these requests must all fail, so none changes its state."""
    settings = make_settings(tmp_path_factory.mktemp("hostile"))
    app = create_app(settings, lambda: engine)
    with TestClient(app, raise_server_exceptions=False) as client:
        app.state.context.runtime.wait()
        _, headers = new_user_key(client)
        yield client, headers, clone_voice(client, headers)


@pytest.mark.parametrize(("path", "body"), JSON_CASES)
def test_unusable_json_is_422(
    api: tuple[TestClient, dict[str, str], int], path: str, body: str
) -> None:
    client, headers, voice_id = api
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if path.startswith("/admin") else headers
    response = client.post(
        path,
        headers={**auth, "Content-Type": "application/json"},
        content=body.replace("VOICE", str(voice_id)).encode("utf-8", "surrogatepass"),
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    "path",
    [
        f"/voices/{HUGE}",
        "/voices/-3",
        "/voices/1e3",
        f"/getstored/{HUGE}",
        f"/voices/{HUGE}/sample",
    ],
)
def test_out_of_range_ids_are_422(api: tuple[TestClient, dict[str, str], int], path: str) -> None:
    client, headers, _ = api
    assert client.get(path, headers=headers).status_code == 422


def test_control_characters_in_form_fields_are_422(
    api: tuple[TestClient, dict[str, str], int],
) -> None:
    client, headers, _ = api
    response = client.post(
        "/clonevoice",
        headers=headers,
        data={"name": "a\x00b", "transcript": "x\x01"},
        files={"file": ("r.wav", b"RIFF")},
    )
    assert response.status_code == 422
    assert "U+0000" in response.text


def test_odd_but_valid_text_is_spoken(api: tuple[TestClient, dict[str, str], int]) -> None:
    client, headers, voice_id = api
    for text in ("...", "😀😀", "\u200b zero width", "مرحبا", "tab\tand\nnewline"):
        response = client.post("/tts", headers=headers, json={"text": text, "voice_id": voice_id})
        assert response.status_code == 200, (text, response.text)
