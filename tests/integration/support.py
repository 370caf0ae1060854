"""Plain helpers shared by the integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from qwen3_tts_server.config import Settings
from qwen3_tts_server.engine.base import CustomItem, DesignItem

ADMIN_TOKEN = "test-admin-token-0123456789"

#: CI sets REQUIRE_ALL_TESTS=1 (.ci/run): there, a test that needs a missing tool fails instead
#: of skipping, so a machine without PostgreSQL, curl, make or root cannot pass CI silently.
REQUIRE_ALL_TESTS = os.environ.get("REQUIRE_ALL_TESTS") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip the running test because `reason` (a tool is missing); fail it under
    REQUIRE_ALL_TESTS=1."""
    if REQUIRE_ALL_TESTS:
        pytest.fail(f"REQUIRE_ALL_TESTS=1, and {reason}", pytrace=False)
    pytest.skip(reason)


AppFactory = Callable[..., TestClient]


def wait_for_http(
    url: str,
    what: str,
    *,
    timeout: float = 300,
    process: subprocess.Popen[str] | None = None,
) -> None:
    """Wait until GET `url` answers 200 (a server started in another process); fail when
    `process` exits first (with its output) or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None:
            assert process.poll() is None, process.communicate()[0]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{what} never answered {url}"
        time.sleep(0.2)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "admin_token": ADMIN_TOKEN,
        "hmac_secret": "test-hmac-secret-abcdefghijklmnop",
        "models_dir": data_dir / "models",
        "allow_download": False,
        "log_json": False,
    }
    values.update(overrides)
    return Settings(**values)


def admin_headers(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_user_key(client: TestClient | httpx.Client) -> tuple[int, dict[str, str]]:
    """Create a user through the admin API and exchange an invite: (user_id, auth headers)."""
    user_id = client.post("/admin/users", headers=admin_headers()).json()["user_id"]
    code = client.post(f"/admin/users/{user_id}/invites", headers=admin_headers()).json()[
        "invite_code"
    ]
    key = client.post("/auth/exchange-invite", json={"invite_code": code}).json()["api_key"]
    return user_id, {"Authorization": f"Bearer {key}"}


_SUBTYPES = {
    "wav": ("WAV", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "ogg": ("OGG", "VORBIS"),
    "flac": ("FLAC", "PCM_16"),
}


def reference_audio(
    fmt: str = "wav", seconds: float = 2.0, rate: int = 24000, seed: int = 0, amplitude: float = 1.0
) -> bytes:
    """A speech-like reference (noise shaped by a syllable-rate envelope) as a real audio file."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    voiced = 0.3 * np.sin(2 * np.pi * 150 * t) + 0.05 * rng.standard_normal(t.size)
    samples = (amplitude * envelope * voiced).astype(np.float32)
    container, subtype = _SUBTYPES[fmt]
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=container, subtype=subtype)
    return buffer.getvalue()


def clone_voice(
    client: TestClient | httpx.Client,
    headers: dict[str, str],
    *,
    upload: bytes | None = None,
    filename: str = "ref.wav",
    name: str = "voice",
) -> int:
    """Clone a voice through the API and return its id (fails the test on any error)."""
    response = client.post(
        "/clonevoice",
        headers=headers,
        data={"name": name, "transcript": "Hello there, this is my voice.", "language": "English"},
        files={"file": (filename, upload if upload is not None else reference_audio())},
    )
    assert response.status_code == 200, response.text
    voice_id: int = response.json()["voice_id"]
    return voice_id


#: The original README's commands, in order, verbatim (plus a /getstored round trip and
#: redirections that keep each answer for the checks in `run_seed_flow`).
SEED_FLOW = Path(__file__).with_name("seed_readme_flow.sh")


def run_seed_flow(base_url: str, admin_token: str, work: Path) -> None:
    """Run the README's curl commands with real curl and python against `base_url`, then check
    what they produced. `work` becomes the client's working directory (ref.mp3 goes there)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "ref.mp3").write_bytes(reference_audio("mp3"))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "ADMIN_TOKEN": admin_token,
        "BASE": base_url,
    }
    result = subprocess.run(
        ["bash", str(SEED_FLOW)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout

    # /tts: the three headers the README promises, and a real WAV file.
    headers = (work / "tts_headers.txt").read_text().lower()
    assert "200" in headers.splitlines()[0]
    for name in ("x-generation-id", "x-tokens-used: 26", "x-latency-ms", "content-type: audio/wav"):
        assert name in headers, name
    assert "WAVE audio" in out

    # /batchtts with the README's `texts`: three files and the manifest.
    with zipfile.ZipFile(work / "batch.zip") as archive:
        assert archive.namelist() == ["0.wav", "1.wav", "2.wav", "manifest.json"]
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["tokens_used"] == int(len("First line.Second line.Third line.") * 0.9)
    assert [item["filename"] for item in manifest["items"]] == ["0.wav", "1.wav", "2.wav"]
    batch_headers = (work / "batch_headers.txt").read_text().lower()
    assert "x-batch-discount-used: 0.9" in batch_headers

    # The design example is invalid JSON (trailing comma): a 422 that points at it.
    design = json.loads((work / "design.json").read_text())
    assert design["detail"][0]["type"] == "json_invalid"

    voices = json.loads((work / "voices.json").read_text())
    assert [voice["name"] for voice in voices] == ["Geoff"]
    assert json.loads((work / "voice.json").read_text())["ref_text"].startswith("The quick")
    assert (work / "voice_sample.wav").read_bytes() == (work / "ref.mp3").read_bytes()
    assert (work / "stored.wav").read_bytes() == (work / "kept.wav").read_bytes()

    usage = json.loads((work / "usage.json").read_text())
    assert usage["tts_calls"] == 2 and usage["batch_calls"] == 1
    assert usage["tokens_used_tts"] == 26 + len("Keep this one.")
    assert usage["tokens_used_voices"] == len("The quick, brown fox jumped over the lazy dog")


def media_files(data_dir: Path) -> set[str]:
    """Every file under the media folder, relative to the blob root."""
    root = data_dir / "media" / "blobs"
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def referenced_blob_files(data_dir: Path) -> set[str]:
    """The files the database says must exist: blobs a voice or a generation names."""
    with sqlite3.connect(data_dir / "db.sqlite3") as db:
        keys = [
            row[0]
            for row in db.execute(
                "SELECT sha256 FROM audio_blobs WHERE sha256 IN "
                "(SELECT ref_audio_sha256 FROM voices UNION SELECT audio_sha256 FROM generations)"
            )
        ]
    return {f"{key[:2]}/{key[2:4]}/{key}" for key in keys}


def assert_no_orphans(data_dir: Path) -> None:
    """Every file is a referenced blob, and every referenced blob has its file."""
    files, referenced = media_files(data_dir), referenced_blob_files(data_dir)
    assert files == referenced, f"orphans: {files - referenced}, missing: {referenced - files}"


class RecordingEngine:
    """The real engine, noting the items of every preset-speaker call and the description of
    every design call: what reached the model (the tiny model's audio barely depends on the
    speaker, so the audio alone cannot tell speakers apart)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.custom_items: list[Any] = []
        self.descriptions: list[str] = []

    def prepare(self, item: Any, sampling: Any, budget: int) -> Any:
        if isinstance(item, CustomItem):
            self.custom_items.append(item)
        elif isinstance(item, DesignItem):
            self.descriptions.append(item.description)
        return self.inner.prepare(item, sampling, budget)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def error_text(response: Any) -> str:
    """An error response's message, in the shape its path promises: OpenAI's
    `{"error": {"message", ...}}` below /v1, `{"detail": ...}` everywhere else."""
    body = response.json()
    if response.request.url.path.startswith("/v1/"):
        assert set(body) == {"error"} and body["error"]["message"], body
        return str(body["error"]["message"])
    assert body["detail"], body
    return str(body["detail"])
