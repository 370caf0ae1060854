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

    called = set(re.findall(r'api\("([a-z/-]+)"', html))
    assert called == {"voices", "usage", "clonevoice", "tts"}
    paths = client.get("/openapi.json").json()["paths"]
    for path in called:
        assert f"/{path}" in paths, path

    languages = re.search(r"const LANGUAGES = \[(.*?)\];", html, re.S)
    assert languages is not None
    assert set(re.findall(r'"([a-z]+)"', languages.group(1))) == set(LANGUAGES)
    assert "localStorage" not in html  # the key is never persisted by the page
