"""Plain helpers shared by the integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import numpy as np
import soundfile as sf
from fastapi.testclient import TestClient

ADMIN_TOKEN = "test-admin-token-0123456789"

AppFactory = Callable[..., TestClient]


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
