"""/docs is the API reference users read: every route documented, with its auth and errors."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import admin_headers

PUBLIC = {
    "/health",
    "/ready",
    "/metrics",
    "/auth/exchange-invite",
    "/docs",
    "/openapi.json",
    "/playground",
}


def test_every_operation_is_documented_with_auth_and_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "Qwen3-TTS Server"
    operations = [
        (path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()
    ]
    assert len(operations) >= 22
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        assert op.get("summary"), where
        assert op.get("description"), f"{where} has no description"
        if path in PUBLIC:
            assert not op.get("security"), where
            continue
        assert op.get("security"), f"{where} does not declare its bearer auth"
        if path.startswith("/v1/"):  # OpenAI's codes and body: every key failure is a 401
            assert "401" in op["responses"] and "403" not in op["responses"], where
            assert "422" not in op["responses"], where  # validation errors are 400s there
            content = op["responses"]["401"]["content"]["application/json"]
            assert content["schema"]["$ref"].endswith("/OpenAIError"), where
            continue
        assert {"401", "403"} <= set(op["responses"]), where
    for error in ("401", "403"):
        content = spec["paths"]["/usage"]["get"]["responses"][error]["content"]
        assert content["application/json"]["schema"]["$ref"].endswith("/Detail")


def test_docs_page_is_served(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()


def test_timestamps_are_documented_with_examples(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    timestamps = paths["/tts/timestamps"]["post"]
    assert "curl" in timestamps["description"]
    assert "application/x-ndjson" in timestamps["responses"]["200"]["content"]
    schema = timestamps["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/TimedSpeechOut")
    captions = paths["/getstored/{generation_id}/captions"]["get"]
    assert "format=srt" in captions["description"] and "urllib" in captions["description"]
    [fmt] = [p for p in captions["parameters"] if p["name"] == "format"]
    assert fmt["schema"]["enum"] == ["vtt", "srt", "json"]


def test_a_405_allows_every_method_of_the_path(client: TestClient) -> None:
    admin = admin_headers()
    for method, path, allowed in [
        ("POST", "/voices/1", "GET, DELETE"),
        ("PUT", "/admin/users", "GET, POST"),
        ("PATCH", "/v1/audio/speech", "POST"),  # OpenAI's error body, the same header
    ]:
        response = client.request(method, path, headers=admin)
        assert response.status_code == 405, (method, path)
        assert response.headers["allow"] == allowed, (method, path)
    spec = client.get("/openapi.json").json()["paths"]
    assert {"get", "delete"} <= set(spec["/voices/{voice_id}"])


@pytest.mark.parametrize("quota", [False, True, "5", 1.5, 2**63])
def test_integer_fields_take_integers_in_their_bounds_only(
    client: TestClient, quota: object
) -> None:
    response = client.post("/admin/users", headers=admin_headers(), json={"token_quota": quota})
    assert response.status_code == 422, response.text
    field = client.get("/openapi.json").json()["components"]["schemas"]["CreateUserRequest"]
    bounds = field["properties"]["token_quota"]["anyOf"][0]
    assert (bounds["type"], bounds["minimum"], bounds["maximum"]) == ("integer", 0, 2**63 - 1)


def test_every_route_documents_what_its_body_and_outages_can_answer(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            where, responses = f"{method.upper()} {path}", op["responses"]
            if "requestBody" in op:  # a body that does not parse, or one too large
                assert {"400", "413"} <= set(responses), where
            for code, required in (("429", True), ("503", False)):  # 503: when it will recover
                if code in responses:
                    header = responses[code]["headers"]["Retry-After"]
                    assert header["required"] is required, (where, code)


def test_the_speech_bodies_document_their_one_of_rules(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    single, batch = schemas["TTSRequest"], schemas["BatchTTSRequest"]
    assert single["required"] == ["text"] and single["properties"]["text"]["type"] == "string"
    assert "texts" not in single["properties"]

    def one_of(rules: list[dict[str, Any]]) -> list[list[str]]:
        return [[branch["required"][0] for branch in rule["oneOf"]] for rule in rules]

    assert one_of(single["allOf"]) == [["voice_id", "speaker"]]
    assert one_of(batch["allOf"]) == [["text", "texts"], ["voice_id", "speaker"]]
    text = schemas["DesignVoiceRequest"]["properties"]["name"]
    assert text["pattern"].startswith("^[^\\x00")  # control characters are refused
