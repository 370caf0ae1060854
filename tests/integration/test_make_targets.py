"""`make demo` and `make serve` as a new user runs them: real processes on a real port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support import run_seed_flow, wait_for_http

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.needs(
    shutil.which("make") is not None and (REPO / ".venv" / "bin" / "qwen3-tts-server").exists(),
    "needs make and the project's .venv (made by `make test`)",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment minus anything that would point the server elsewhere."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"ADMIN_TOKEN", "HMAC_SECRET", "DATA_DIR", "DATABASE_URL", "MEDIA_DIR"}
    }
    env["HOME"] = str(tmp_path)
    return env


def test_make_demo_serves_the_seed_flow_offline(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo-data"
    port = _free_port()
    process = subprocess.Popen(
        ["make", "--no-print-directory", "demo", f"DEMO_DIR={data_dir}", f"DEMO_PORT={port}"],
        cwd=REPO,
        env={**_clean_env(tmp_path), "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/ready", "the demo", process=process)
        token = (data_dir / "secrets" / "admin_token").read_text().strip()
        run_seed_flow(base, token, tmp_path / "client")
    finally:
        os.killpg(process.pid, signal.SIGINT)
        output = process.communicate(timeout=60)[0]
    assert base in output and str(data_dir / "secrets" / "admin_token") in output
    assert "noise" in output
    assert token not in output  # the banner says where the token is, never the token


def test_make_serve_without_models_fails_fast_with_advice(tmp_path: Path) -> None:
    env = {
        **_clean_env(tmp_path),
        "DATA_DIR": str(tmp_path / "data"),
        "MODELS_DIR": str(tmp_path / "no-models"),
        "HF_HUB_OFFLINE": "1",
    }
    started = time.monotonic()
    result = subprocess.run(
        ["make", "--no-print-directory", "serve"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert elapsed < 60, elapsed
    message = result.stdout + result.stderr
    assert "Qwen3-TTS-12Hz-1.7B-Base" in message
    assert "make demo" in message and "MODELS_DIR" in message
