"""The web playground: served, and calling only routes and languages the server has."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from qwen3_tts_server.engine.base import LANGUAGES


def test_playground_page_matches_the_api(client: TestClient) -> None:
    page = client.get("/playground")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text

    called = set(re.findall(r'(?:api|postJson|fetch)\("([a-z./-]+)"', html))
    assert called == {
        "voices",
        "usage",
        "clonevoice",
        "designvoice",
        "tts",
        "speakers",
        "openapi.json",
        "auth/exchange-invite",
        "generations/",
    }
    paths = client.get("/openapi.json").json()["paths"]
    # /speakers is looked up in the schema first and used only where the server has it.
    for path in called - {"openapi.json", "speakers", "generations/"}:
        assert f"/{path}" in paths, path
    assert "/generations/{generation_id}" in paths
    assert 'schema.paths["/speakers"]' in html

    languages = re.search(r"const LANGUAGES = \[(.*?)\];", html, re.S)
    assert languages is not None
    assert set(re.findall(r'"([a-z]+)"', languages.group(1))) == set(LANGUAGES)
    assert "localStorage" not in html and "sessionStorage" not in html  # the key is not kept
    assert "http://" not in html and "https://" not in html  # no CDN: the page works offline


def test_favicon_is_served(client: TestClient) -> None:
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO directory
