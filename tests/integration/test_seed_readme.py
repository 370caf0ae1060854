"""The original README's curl examples, as written, against our server on a real port.

The script below is the seed README's commands in order, verbatim but for the comments that
mark where our behaviour is asserted. `curl` and `python` are real programs here; the model is
the tiny real-architecture one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from support import ADMIN_TOKEN, reference_audio

from conftest import LiveServer
from qwen3_tts_server.engine.base import Engine

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")

SEED_FLOW = r"""
set -euo pipefail

USER_ID=$(curl -sS -X POST "$BASE/admin/users" \
  -H "Authorization: Bearer $ADMIN_TOKEN" \
  | python -c "import sys,json; print(json.load(sys.stdin)['user_id'])")

echo "USER_ID=$USER_ID"

INVITE_CODE=$(curl -sS -X POST "$BASE/admin/users/$USER_ID/invites?expires_hours=24" \
  -H "Authorization: Bearer $ADMIN_TOKEN" \
  | python -c "import sys,json; print(json.load(sys.stdin)['invite_code'])")

echo "INVITE_CODE=$INVITE_CODE"

API_KEY=$(curl -sS -X POST "$BASE/auth/exchange-invite" \
  -H "Content-Type: application/json" \
  -d "{\"invite_code\":\"$INVITE_CODE\"}" \
  | python -c "import sys,json; print(json.load(sys.stdin)['api_key'])")

echo "API_KEY=$API_KEY"

VOICE_ID=$(curl -sS -X POST "$BASE/clonevoice" \
  -H "Authorization: Bearer $API_KEY" \
  -F "name=Geoff" \
  -F "language=English" \
  -F "transcript=The quick, brown fox jumped over the lazy dog" \
  -F "file=@./ref.mp3" \
  | python -c "import sys,json; print(json.load(sys.stdin)['voice_id'])")

echo "VOICE_ID=$VOICE_ID"

curl -sS -X POST "$BASE/designvoice" \
  -H "Authorization: Bearer $API_KEY" \
  -H "Content-Type: application/json" \
  -d '{
    "name": "warm_narrator",
    "language": "English",
    "description": "Warm, calm narrator voice. Slightly husky. Friendly.",
  }' | python -m json.tool > design.json || true

curl -sS "$BASE/voices" -H "Authorization: Bearer $API_KEY" | python -m json.tool > voices.json
curl -sS "$BASE/voices/$VOICE_ID" -H "Authorization: Bearer $API_KEY" | python -m json.tool > voice.json

curl -sS -L "$BASE/voices/$VOICE_ID/sample" \
  -H "Authorization: Bearer $API_KEY" \
  -o voice_sample.wav

curl -sS -X POST "$BASE/tts" \
  -H "Authorization: Bearer $API_KEY" \
  -H "Content-Type: application/json" \
  -D tts_headers.txt \
  -o out.wav \
  -d "{\"text\":\"Hello from the TTS server.\",\"voice_id\":$VOICE_ID,\"store\":false,\"language\":\"English\",\"format\":\"wav\"}"

cat tts_headers.txt | sed -n 's/^X-//p'
file out.wav

curl -sS -X POST "$BASE/batchtts" \
  -H "Authorization: Bearer $API_KEY" \
  -H "Content-Type: application/json" \
  -D batch_headers.txt \
  -o batch.zip \
  -d "{\"texts\":[\"First line.\",\"Second line.\",\"Third line.\"],\"voice_id\":$VOICE_ID,\"store\":false,\"language\":\"English\",\"format\":\"wav\"}"

cat batch_headers.txt | sed -n 's/^X-//p'
unzip -l batch.zip
unzip -p batch.zip manifest.json | python -m json.tool

GENERATION_ID=$(curl -sS -X POST "$BASE/tts" \
  -H "Authorization: Bearer $API_KEY" \
  -H "Content-Type: application/json" \
  -D stored_headers.txt -o kept.wav \
  -d "{\"text\":\"Keep this one.\",\"voice_id\":$VOICE_ID,\"store\":true}" \
  && sed -n 's/^x-generation-id: *//ip' stored_headers.txt | tr -d '\r')

curl -sS -L "$BASE/getstored/$GENERATION_ID" \
  -H "Authorization: Bearer $API_KEY" \
  -o stored.wav

curl -sS "$BASE/usage" -H "Authorization: Bearer $API_KEY" | python -m json.tool > usage.json
"""


def test_seed_readme_examples_work_as_written(
    live_server: Callable[..., LiveServer], engine: Engine, tmp_path: Path
) -> None:
    work = tmp_path / "client"
    work.mkdir()
    (work / "ref.mp3").write_bytes(reference_audio("mp3"))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "ADMIN_TOKEN": ADMIN_TOKEN,
    }
    with live_server(lambda: engine) as server:
        server.wait_ready()
        result = subprocess.run(
            ["bash", "-c", SEED_FLOW],
            cwd=work,
            env={**env, "BASE": server.url},
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
