"""A real server process for crash tests: started on the tiny models, killed with -9."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from support import ADMIN_TOKEN

from qwen3_tts_server.wiring import TINY_MAX_FRAMES

#: Long enough that a real process loads the tiny models, warms up and answers.
START_LIMIT_S = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def server_process(
    models: Path, data_dir: Path, log: Path, **env_overrides: str
) -> Iterator[tuple[str, int]]:
    """The server as a subprocess on `data_dir` (SQLite there unless DATABASE_URL is given);
    yields (base URL, pid). Killed on exit."""
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATA_DIR": str(data_dir),
        "MODELS_DIR": str(models),
        "MODEL_BASE_REPO": str(models / "base"),
        "MODEL_VOICEDESIGN_REPO": str(models / "voice_design"),
        "MODEL_CUSTOM_REPO": "",
        "MODEL_ALIGNER_REPO": "",  # no word timestamps: not what these tests are about
        "ALLOW_DOWNLOAD": "0",
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "HMAC_SECRET": "crash-test-hmac-secret-0123456789",
        "LOG_JSON": "0",
        "RECOVERY_GRACE_S": "0",  # the only server: everything it finds at start is a crash's
        "ENGINE_MAX_BATCH": "4",
        "MAX_FRAMES": str(TINY_MAX_FRAMES),
        "CHUNK_MAX_CHARS": "20",
        "DATABASE_URL": f"sqlite:///{data_dir / 'db.sqlite3'}",
        "MEDIA_DIR": str(data_dir / "media"),
        **env_overrides,
    }
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "qwen3_tts_server", "serve"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_LIMIT_S
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server never became ready"
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url, process.pid
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)


def post_quietly(url: str, headers: dict[str, str], path: str, body: dict[str, object]) -> None:
    """Send a request the kill will cut short; whatever happens to it is the test's subject."""
    try:
        with httpx.stream("POST", url + path, headers=headers, json=body, timeout=120) as answer:
            for _ in answer.iter_bytes():
                pass
    except httpx.HTTPError:
        pass


def kill_when(condition: Callable[[], object], pid: int, limit_s: float = 120.0) -> None:
    """SIGKILL `pid` the moment `condition()` holds (polled every millisecond)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "the awaited moment never came"
        time.sleep(0.001)
    os.kill(pid, signal.SIGKILL)
