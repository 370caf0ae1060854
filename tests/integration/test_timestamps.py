"""Word timestamps over HTTP: /tts/timestamps (whole and streamed), captions of stored
generations, /batchtts with timestamps. The real qwen-tts code and the real qwen-asr alignment
code run on tiny random models: the times mean nothing, but their number, order, bounds and
everything around them (billing, storage, errors) are real."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf
import srt
import webvtt
from fastapi.testclient import TestClient
from support import AppFactory, make_settings, new_user_key

from conftest import LiveServer
from qwen3_tts_server.aligner.model import ForcedAligner
from qwen3_tts_server.app import create_app
from qwen3_tts_server.engine.base import Engine

TEXT = "Hello, world! It's a fine day — isn't it? \"Yes,\" she said. The end."


def english_words(text: str) -> list[str]:
    """The words a reader counts: space-separated tokens holding a letter or digit."""
    return [token for token in text.split() if re.search(r"\w", token)]


@pytest.fixture
def api(make_client: AppFactory, engine: Engine, aligner: ForcedAligner) -> TestClient:
    return make_client(load_engine=lambda: engine, load_aligner=lambda: aligner)


@pytest.fixture
def headers(api: TestClient) -> dict[str, str]:
    return new_user_key(api)[1]


def _speak(api: TestClient, headers: dict[str, str], **body: Any) -> Any:
    payload = {"text": TEXT, "speaker": "Vivian", "language": "English"} | body
    return api.post("/tts/timestamps", headers=headers, json=payload)


def _usage(api: TestClient, headers: dict[str, str]) -> int:
    tokens: int = api.get("/usage", headers=headers).json()["tokens_used_total"]
    return tokens


def assert_words_of(text: str, words: list[dict[str, Any]]) -> None:
    """One entry per word, in order, spelled as written, with punctuation attached (a dash
    standing alone goes with the word before it)."""
    assert len(words) == len(english_words(text))
    assert " ".join(word["text"] for word in words) == " ".join(text.split())


def assert_well_timed(words: list[dict[str, Any]], duration: float) -> None:
    previous_end = 0.0
    for word in words:
        assert 0 <= word["start"] <= word["end"] <= duration + 1e-6, word
        assert word["start"] >= previous_end - 1e-6, (word, previous_end)
        previous_end = word["end"]


def test_timestamps_answer_one_word_per_word_within_the_audio(
    api: TestClient, headers: dict[str, str]
) -> None:
    response = _speak(api, headers, format="wav")
    assert response.status_code == 200, response.text
    body = response.json()
    audio = base64.b64decode(body["audio_base64"])
    info = sf.info(io.BytesIO(audio))
    assert body["format"] == "wav" and body["sample_rate"] == info.samplerate == 24000
    assert body["duration_s"] == pytest.approx(info.frames / info.samplerate, abs=1e-3)
    assert_words_of(TEXT, body["words"])
    assert_well_timed(body["words"], body["duration_s"])
    assert body["tokens_used"] == len(TEXT) == int(response.headers["x-tokens-used"])
    assert body["generation_id"] == int(response.headers["x-generation-id"])
    assert int(response.headers["x-align-ms"]) >= 0
    assert response.headers["x-finish-reason"] in ("eos", "length", "silence")
    assert _usage(api, headers) == len(TEXT)


def test_stored_captions_parse_with_standard_parsers(
    api: TestClient, headers: dict[str, str], tmp_path: Path
) -> None:
    body = _speak(api, headers, store=True).json()
    generation = body["generation_id"]
    vtt = api.get(f"/getstored/{generation}/captions?format=vtt", headers=headers)
    assert vtt.status_code == 200, vtt.text
    assert vtt.headers["content-type"].startswith("text/vtt")
    (tmp_path / "c.vtt").write_bytes(vtt.content)
    cues = webvtt.read(str(tmp_path / "c.vtt"))
    assert " ".join(cue.text for cue in cues) == " ".join(TEXT.split())
    subtitles = list(
        srt.parse(api.get(f"/getstored/{generation}/captions?format=srt", headers=headers).text)
    )
    assert [cue.content for cue in subtitles] == [cue.text for cue in cues]
    assert all(cue.start <= cue.end for cue in subtitles)
    assert [s.start.total_seconds() for s in subtitles] == sorted(
        s.start.total_seconds() for s in subtitles
    )
    words = api.get(f"/getstored/{generation}/captions?format=json", headers=headers).json()
    assert words == {"generation_id": generation, "words": body["words"]}


def test_captions_are_only_for_the_owners_stored_timed_generations(
    api: TestClient, headers: dict[str, str]
) -> None:
    stored = _speak(api, headers, store=True).json()["generation_id"]
    unstored = _speak(api, headers).json()["generation_id"]
    plain = api.post(
        "/tts", headers=headers, json={"text": "Plain.", "speaker": "Vivian", "store": True}
    )
    _, other = new_user_key(api)
    assert api.get(f"/getstored/{stored}/captions", headers=other).status_code == 404
    assert api.get(f"/getstored/{unstored}/captions", headers=headers).status_code == 404
    made_without = api.get(
        f"/getstored/{plain.headers['x-generation-id']}/captions", headers=headers
    )
    assert made_without.status_code == 404
    assert "/tts/timestamps" in made_without.json()["detail"]
    wrong = api.get(f"/getstored/{stored}/captions?format=ass", headers=headers)
    assert wrong.status_code == 422


def test_streamed_words_match_the_whole_ones_in_count(
    api: TestClient, headers: dict[str, str]
) -> None:
    text = "First sentence here. And a second one follows it! Then the third, last one."
    whole = _speak(api, headers, text=text, format="pcm").json()
    with api.stream(
        "POST",
        "/tts/timestamps",
        headers=headers,
        json={"text": text, "speaker": "Vivian", "format": "wav", "stream": True},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    *pieces, last = lines
    assert last["done"] is True and "audio_base64" not in last
    audio = b"".join(base64.b64decode(line["audio_base64"]) for line in pieces)
    info = sf.info(io.BytesIO(audio))
    words = [word for line in lines for word in line["words"]]
    assert len(words) == len(whole["words"]) == len(english_words(text))
    assert_words_of(text, words)
    assert last["duration_s"] == pytest.approx(info.frames / 24000, abs=1e-3)
    assert_well_timed(words, last["duration_s"])
    assert last["tokens_used"] == len(text)
    assert _usage(api, headers) == 2 * len(text)


def test_batch_with_timestamps_adds_captions_and_words(
    api: TestClient, headers: dict[str, str], tmp_path: Path
) -> None:
    texts = ["One small step.", "Two words, then more words here."]
    response = api.post(
        "/batchtts",
        headers=headers,
        json={"texts": texts, "speaker": "Vivian", "timestamps": True, "store": True},
    )
    assert response.status_code == 200, response.text
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    manifest = json.loads(archive.read("manifest.json"))
    for index, (text, item) in enumerate(zip(texts, manifest["items"], strict=True)):
        assert item["captions"] == f"{index}.vtt"
        assert_words_of(text, item["words"])
        assert_well_timed(item["words"], item["duration_s"])
        (tmp_path / item["captions"]).write_bytes(archive.read(item["captions"]))
        cues = webvtt.read(str(tmp_path / item["captions"]))
        assert " ".join(cue.text for cue in cues) == text
        stored = api.get(
            f"/getstored/{item['generation_id']}/captions?format=json", headers=headers
        )
        assert stored.json()["words"] == item["words"]
    plain = api.post("/batchtts", headers=headers, json={"texts": texts, "speaker": "Vivian"})
    assert not any(
        name.endswith(".vtt") for name in zipfile.ZipFile(io.BytesIO(plain.content)).namelist()
    )


def test_without_an_aligner_timestamps_answer_503_and_charge_nothing(
    make_client: AppFactory, engine: Engine, tmp_path: Path
) -> None:
    api = make_client(load_engine=lambda: engine)
    _, headers = new_user_key(api)
    assert api.get("/ready").json()["aligner"] == "disabled"
    for path, body in [
        ("/tts/timestamps", {"text": TEXT, "speaker": "Vivian"}),
        ("/tts/timestamps", {"text": TEXT, "speaker": "Vivian", "stream": True}),
        ("/batchtts", {"texts": ["a b.", "c d."], "speaker": "Vivian", "timestamps": True}),
    ]:
        response = api.post(path, headers=headers, json=body)
        assert response.status_code == 503, response.text
        assert "MODEL_ALIGNER_REPO" in response.json()["detail"]
    with api.websocket_connect("/v1/audio/speech/stream", headers=headers) as ws:
        ws.send_json({"type": "session.config", "speaker": "Vivian", "timestamps": True})
        error = ws.receive_json()
    assert error["type"] == "error" and error["error"]["status"] == 503
    assert "MODEL_ALIGNER_REPO" in error["error"]["message"]
    assert _usage(api, headers) == 0
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM generations").fetchone() == (0,)
    assert (
        api.post("/tts", headers=headers, json={"text": "Hi.", "speaker": "Vivian"}).status_code
        == 200
    )


class BrokenAligner:
    """The tiny aligner, failing on request: what an out-of-memory or a bug in it looks like."""

    def __init__(self, inner: ForcedAligner) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.device = inner.device
        self.broken = False

    def align(self, passages: Any) -> Any:
        if self.broken:
            raise RuntimeError("the aligner ran out of memory")
        return self.inner.align(passages)


def test_an_aligner_failure_fails_the_call_uncharged(
    make_client: AppFactory, engine: Engine, aligner: ForcedAligner, tmp_path: Path
) -> None:
    broken = BrokenAligner(aligner)
    api = make_client(load_engine=lambda: engine, load_aligner=lambda: broken)
    _, headers = new_user_key(api)
    broken.broken = True
    whole = _speak(api, headers, store=True)
    assert whole.status_code == 503 and "Retry-After" in whole.headers  # an outage, not a bug
    with api.stream(
        "POST",
        "/tts/timestamps",
        headers=headers,
        json={"text": TEXT, "speaker": "Vivian", "format": "pcm", "stream": True},
    ) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert not any(line.get("done") for line in lines)
    assert _usage(api, headers) == 0
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        rows = db.execute("SELECT status, tokens_used, words FROM generations").fetchall()
    assert rows == [("error", 0, None), ("error", 0, None)]


def _sse_events(response: Any) -> list[dict[str, Any]]:
    return [
        json.loads(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]


@pytest.mark.parametrize("fmt", ["pcm", "mp3"])
def test_openai_sse_carries_words_when_asked(
    api: TestClient, headers: dict[str, str], fmt: str
) -> None:
    text = "Words on the wire. And more of them!"
    body = {"input": text, "voice": "alloy", "response_format": fmt, "stream_format": "sse"}
    plain = _sse_events(api.post("/v1/audio/speech", headers=headers, json=body))
    timed = _sse_events(
        api.post("/v1/audio/speech", headers=headers, json=body | {"timestamps": True})
    )
    assert [event["type"] for event in timed] == [event["type"] for event in plain]
    assert not any("words" in event for event in plain)
    for event in timed:  # OpenAI's own fields, unchanged
        assert set(event) - {"words"} == (
            {"type", "audio"} if "audio" in event else {"type", "usage"}
        )
    words = [word for event in timed for word in event["words"]]
    assert_words_of(text, words)
    assert timed[-1]["usage"]["input_tokens"] == len(text)
    refused = api.post(
        "/v1/audio/speech",
        headers=headers,
        json={**body, "stream_format": None, "timestamps": True},
    )
    assert refused.status_code == 400 and "sse" in refused.json()["error"]["message"]


def test_realtime_segments_carry_their_words_when_asked(
    api: TestClient, headers: dict[str, str]
) -> None:
    starts = []
    with api.websocket_connect("/v1/audio/speech/stream", headers=headers) as ws:
        ws.send_json({"type": "session.config", "speaker": "Vivian", "timestamps": True})
        assert ws.receive_json()["type"] == "session.created"
        ws.send_json({"type": "input.text", "text": "First words here. Then, some more"})
        ws.send_json({"type": "session.close"})
        audio: dict[int, int] = {}
        while True:
            message = ws.receive()
            if message.get("bytes") is not None:
                audio[starts[-1]["segment"]] += len(message["bytes"])
                continue
            event = json.loads(message["text"])
            if event["type"] == "audio.start":
                starts.append(event)
                audio[event["segment"]] = 0
            if event["type"] == "session.done":
                break
    assert [start["text"] for start in starts] == ["First words here.", "Then, some more"]
    for start in starts:
        assert_words_of(start["text"], start["words"])
        assert_well_timed(start["words"], audio[start["segment"]] / 2 / start["sample_rate"])


def test_ready_waits_for_the_aligner_but_not_for_a_broken_one(
    make_client: AppFactory, engine: Engine, aligner: ForcedAligner, tmp_path: Path
) -> None:
    release = threading.Event()

    def slow() -> ForcedAligner:
        release.wait(60)
        return aligner

    settings = make_settings(tmp_path / "slow")
    with TestClient(create_app(settings, lambda: engine, slow)) as client:
        client.app.state.context.runtime.wait()  # type: ignore[attr-defined]
        loading = client.get("/ready")
        _, headers = new_user_key(client)
        early = _speak(client, headers)
        release.set()
        client.app.state.context.synthesis.aligner.wait()  # type: ignore[attr-defined]
        ready = client.get("/ready")
    assert loading.status_code == 503 and loading.json()["aligner"] == "loading"
    assert early.status_code == 503 and "still loading" in early.json()["detail"]
    assert ready.status_code == 200 and ready.json()["aligner"] == "ready"

    def broken() -> ForcedAligner:
        raise FileNotFoundError("no model.safetensors in /models/aligner")

    api = make_client(load_engine=lambda: engine, load_aligner=broken)
    status = api.get("/ready")
    assert status.status_code == 200
    assert status.json()["aligner"] == "failed"
    assert "model.safetensors" in status.json()["aligner_error"]
    _, headers = new_user_key(api)
    refused = _speak(api, headers)
    assert refused.status_code == 503 and "failed to load" in refused.json()["detail"]


def _readme_captions_client() -> str:
    """The README's captions client, verbatim: the python block after `captions.py`."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    after = readme[readme.index("`captions.py`") :]
    start = after.index("```python\n") + len("```python\n")
    return after[start : after.index("```", start)]


def test_the_readme_captions_client_writes_an_srt(
    live_server: Callable[..., LiveServer], engine: Engine, aligner: ForcedAligner, tmp_path: Path
) -> None:
    script = tmp_path / "captions.py"
    script.write_text(_readme_captions_client(), encoding="utf-8")
    with live_server(load_engine=lambda: engine, load_aligner=lambda: aligner) as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as http:
            _, headers = new_user_key(http)
            key = headers["Authorization"].removeprefix("Bearer ")
            result = subprocess.run(
                [sys.executable, str(script)],
                cwd=tmp_path,
                env={**os.environ, "BASE": server.url, "API_KEY": key, "SPEAKER": "Vivian"},
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
    assert result.returncode == 0, result.stdout + result.stderr
    subtitles = list(srt.parse((tmp_path / "speech.srt").read_text(encoding="utf-8")))
    text = "Captions in three lines of Python. Every word has its time!"
    assert " ".join(cue.content for cue in subtitles) == text
    assert len(result.stdout.splitlines()) == len(english_words(text))
    assert sf.info(str(tmp_path / "speech.wav")).frames > 0


def test_the_aligner_loads_only_once_the_speech_model_has(
    make_client: AppFactory, engine: Engine, aligner: ForcedAligner
) -> None:
    """transformers' loading patches torch globally: two models loading at once break both."""
    events: list[str] = []

    def load_engine() -> Engine:
        events.append("engine loading")
        time.sleep(1.0)
        events.append("engine loaded")
        return engine

    def load_aligner() -> ForcedAligner:
        events.append("aligner loading")
        return aligner

    make_client(load_engine=load_engine, load_aligner=load_aligner)
    assert events == ["engine loading", "engine loaded", "aligner loading"]
