"""Property-based: whatever a client puts in a request body, the answer is never a 5xx.

Bodies are drawn around the wire schemas (valid values mixed with hostile ones: odd numbers,
odd Unicode, wrong types), sent through the real app on the tiny real model, so a value that
passes validation really reaches the services and the engine. A 5xx is a bug: bad input must
be a 4xx that says what to fix. Explicit examples pin inputs that once gave a 500. Example
counts are small: every valid draw runs the model on a 2-core machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import clone_voice, make_settings, new_user_key

from qwen3_tts_server.app import create_app
from qwen3_tts_server.engine.base import Engine

#: Stands for the module's real voice id in drawn bodies (replaced before sending).
VOICE = "<voice>"
PROPERTY_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same draws on every run: a failure here is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, -1, 1e-40, 5e-324, 1e308, 2**63, 2**63 - 1, 0.0099, 0.01]),
)
_odd_text = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Z", "M"]),
    max_size=24,
)
_hostile = st.one_of(st.none(), st.booleans(), _numbers, _odd_text, st.lists(_odd_text, max_size=2))
_short_text = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "Zs"]),
    min_size=1,
    max_size=30,
)


def _bodies(
    required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    """Valid bodies (half: so the model runs), valid bodies with one field made hostile, and
    bodies of hostile values only."""
    keys = sorted({*required, *optional})
    valid = st.fixed_dictionaries(required, optional=optional)
    one_bad = st.tuples(valid, st.sampled_from(keys), _hostile).map(
        lambda drawn: {**drawn[0], drawn[1]: drawn[2]}
    )
    return st.one_of(valid, valid, one_bad, st.dictionaries(st.sampled_from(keys), _hostile))


_common = {
    "language": st.sampled_from(["auto", "English", "CHINESE", " german "]),
    "format": st.sampled_from(["wav", "pcm", "flac", "mp3", "ogg", "opus", "WAV"]),
    "temperature": st.floats(min_value=0.01, max_value=2.0),
    "seed": st.integers(min_value=0, max_value=2**31 - 1),
    "store": st.booleans(),
}
TTS_BODIES = _bodies(
    {"text": _short_text, "voice_id": st.just(VOICE)}, {**_common, "stream": st.booleans()}
)
BATCH_BODIES = _bodies(
    {"texts": st.lists(_short_text, min_size=2, max_size=4), "voice_id": st.just(VOICE)},
    _common,
)
_digits = st.text(alphabet=st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=20)
VOICE_NAMES = st.one_of(
    st.just(VOICE),
    _digits,
    st.builds(lambda digits: f"voice:{digits}", _digits),
    _odd_text,
    st.sampled_from(["voice:", "voice:voice:1", " 1 ", "-1", "0", "9" * 19, "mine", "MINE"]),
)


def _fill(body: dict[str, Any], voice_id: int) -> dict[str, Any]:
    """The body with every VOICE placeholder (a value or a list item) made the real id."""

    def real(value: Any) -> Any:
        if value == VOICE:
            return voice_id
        if isinstance(value, list):
            return [real(item) for item in value]
        return value

    return {key: real(value) for key, value in body.items()}


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, engine: Engine
) -> Iterator[tuple[TestClient, dict[str, str], int]]:
    """One app for the module with a user and a voice named "mine"."""
    app = create_app(make_settings(tmp_path_factory.mktemp("properties")), lambda: engine)
    with TestClient(app, raise_server_exceptions=False) as client:
        app.state.context.runtime.wait()
        _, headers = new_user_key(client)
        yield client, headers, clone_voice(client, headers, name="mine")


def _assert_client_error_or_success(response: Any, body: Any) -> None:
    assert response.status_code < 500, (body, response.status_code, response.text)
    if response.status_code >= 400:
        assert response.json()["detail"], response.text


@PROPERTY_SETTINGS
@given(body=TTS_BODIES)
@example(body={"text": "Hello.", "voice_id": VOICE, "temperature": 1e-40})
@example(body={"text": "Hello.", "voice_id": VOICE, "temperature": 5e-324})
def test_tts_never_answers_5xx(api: tuple[TestClient, dict[str, str], int], body: Any) -> None:
    client, headers, voice_id = api
    response = client.post("/tts", headers=headers, json=_fill(body, voice_id))
    _assert_client_error_or_success(response, body)


@PROPERTY_SETTINGS
@given(body=BATCH_BODIES)
@example(body={"texts": ["One.", "Two."], "voice_id": VOICE, "temperature": 1e-40})
def test_batchtts_never_answers_5xx(api: tuple[TestClient, dict[str, str], int], body: Any) -> None:
    client, headers, voice_id = api
    response = client.post("/batchtts", headers=headers, json=_fill(body, voice_id))
    _assert_client_error_or_success(response, body)


@PROPERTY_SETTINGS
@given(
    voice=VOICE_NAMES,
    body=_bodies(
        {"input": _short_text},
        {
            "response_format": st.sampled_from(["wav", "pcm", "mp3", "flac"]),
            "speed": st.sampled_from([1.0, 1]),
            "stream_format": st.just("audio"),
            "model": _odd_text,
            "instructions": _odd_text,
        },
    ),
)
@example(voice="²", body={"input": "Hello."})
@example(voice="①", body={"input": "Hello."})
@example(voice="voice:³", body={"input": "Hello."})
def test_openai_speech_and_voice_resolution_never_answer_5xx(
    api: tuple[TestClient, dict[str, str], int], voice: Any, body: Any
) -> None:
    client, headers, voice_id = api
    sent = {**body, "voice": voice_id if voice == VOICE else voice}
    response = client.post("/v1/audio/speech", headers=headers, json=sent)
    _assert_client_error_or_success(response, sent)


@pytest.mark.parametrize("name", ["²", "①", "voice:³", "٣", "voice:१"])
def test_non_ascii_digits_name_a_voice_that_is_not_found(
    api: tuple[TestClient, dict[str, str], int], name: str
) -> None:
    """Unicode digits are not an id (`int()` would read some and choke on others): they are a
    name, and no voice has it."""
    client, headers, _ = api
    response = client.post(
        "/v1/audio/speech", headers=headers, json={"input": "Hello.", "voice": name}
    )
    assert response.status_code == 404, response.text
    assert name in response.json()["detail"]
