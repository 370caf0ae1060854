"""kill -9 in the middle of work, restart on the same data: nothing left behind, nothing lost.

The server runs as a real process (`python -m qwen3_tts_server serve`) on the tiny models. A
stored batch is killed the moment its audio reaches the disk (between writing the files and
committing the rows, the window that used to leave orphans), while a stream waits behind it
with its row open. The restart (RECOVERY_GRACE_S=0: this is the only server) must find an
intact database, every file named by a row and every row's file present, no row still open,
and usage that counts exactly the calls that completed.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from support import ADMIN_TOKEN, assert_no_orphans, clone_voice, media_files, new_user_key

from qwen3_tts_server.wiring import TINY_MAX_FRAMES

#: Long enough that a real process loads the tiny models, warms up and answers.
START_LIMIT_S = 180.0
#: Short texts: the tiny model's random weights rarely stop early, so a text runs to the frame
#: cap (MAX_FRAMES below, as in the demo: under every text's own budget, so a text cut there is
#: a truncation, not a runaway the guard would fail).
BATCH = ["One.", "Two.", "Three.", "Four."]
STREAM_TEXT = " ".join(f"Streamed sentence {index}." for index in range(30))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def server_process(models: Path, data_dir: Path, log: Path) -> Iterator[tuple[str, int]]:
    """The server as a subprocess on `data_dir`; yields (base URL, pid). Killed on exit."""
    port = _free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATA_DIR": str(data_dir),
        "MODELS_DIR": str(models),
        "MODEL_BASE_REPO": str(models / "base"),
        "MODEL_VOICEDESIGN_REPO": str(models / "voice_design"),
        "MODEL_CUSTOM_REPO": "",
        "MODEL_ALIGNER_REPO": "",  # no word timestamps: not what this test is about
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


def _rows(data_dir: Path, query: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{data_dir / 'db.sqlite3'}?mode=ro", uri=True, timeout=30) as db:
        return db.execute(query, params).fetchall()


def _post_quietly(url: str, headers: dict[str, str], path: str, body: dict[str, object]) -> None:
    """Send a request the kill will cut short; whatever happens to it is the test's subject."""
    try:
        with httpx.stream("POST", url + path, headers=headers, json=body, timeout=120) as answer:
            for _ in answer.iter_bytes():
                pass
    except httpx.HTTPError:
        pass


def _kill_when(condition: Callable[[], object], pid: int, limit_s: float = 120.0) -> None:
    """SIGKILL `pid` the moment `condition()` holds (polled every millisecond)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "the awaited moment never came"
        time.sleep(0.001)
    os.kill(pid, signal.SIGKILL)


def test_kill_during_a_stored_batch_and_a_stream_then_restart(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    with server_process(tiny_models_dir, data_dir, log) as (url, pid):
        with httpx.Client(base_url=url, timeout=120) as client:
            _, headers = new_user_key(client)
            voice_id = clone_voice(client, headers)
            kept = client.post(
                "/tts", headers=headers, json={"text": "Hi.", "voice_id": voice_id, "store": True}
            )
            assert kept.status_code == 200, kept.text
            before = client.get("/usage", headers=headers).json()
        files_before = media_files(data_dir)

        batch = threading.Thread(
            target=_post_quietly,
            args=(url, headers, "/batchtts"),
            kwargs={"body": {"texts": BATCH, "voice_id": voice_id, "store": True}},
        )
        stream = threading.Thread(
            target=_post_quietly,
            args=(url, headers, "/tts"),
            kwargs={"body": {"text": STREAM_TEXT, "voice_id": voice_id, "stream": True, "seed": 1}},
        )
        batch.start()
        stream.start()
        streaming = "SELECT id FROM generations WHERE status = 'streaming'"
        deadline = time.monotonic() + 120
        while not _rows(data_dir, streaming):
            assert time.monotonic() < deadline, "the stream never opened its row"
            time.sleep(0.01)
        _kill_when(lambda: media_files(data_dir) - files_before, pid)
        batch.join(timeout=60)
        stream.join(timeout=60)

    with sqlite3.connect(data_dir / "db.sqlite3") as db:  # what the crash left, unrecovered
        left_open = db.execute(streaming).fetchall()
        [(left_held,)] = db.execute("SELECT COUNT(*) FROM reservations").fetchall()
    assert left_open
    assert left_held >= 1  # at least the stream's: the user's quota is held until recovery

    with server_process(tiny_models_dir, data_dir, log) as (url, _):
        assert _rows(data_dir, "PRAGMA integrity_check") == [("ok",)]
        assert _rows(data_dir, "PRAGMA foreign_key_check") == []
        assert_no_orphans(data_dir)
        assert _rows(data_dir, streaming) == []
        settled = _rows(
            data_dir, "SELECT status, tokens_used FROM generations WHERE id = ?", left_open[0][0]
        )
        assert settled == [("interrupted", 0)]
        batches = _rows(data_dir, "SELECT tokens_used FROM batches")
        batch_tokens = math.floor(sum(len(text) for text in BATCH) * 0.9)
        assert batches in ([], [(batch_tokens,)])  # committed whole before the kill, or not at all
        running = _rows(data_dir, "SELECT tokens_used, tokens_reserved FROM users")
        held_after = _rows(data_dir, "SELECT COUNT(*) FROM reservations")
        with httpx.Client(base_url=url, timeout=120) as client:
            usage = client.get("/usage", headers=headers).json()
            for (stored_id,) in _rows(data_dir, "SELECT id FROM generations WHERE store = 1"):
                stored = client.get(f"/getstored/{stored_id}", headers=headers)
                assert stored.status_code == 200
    charged_batch = batches[0][0] if batches else 0
    assert usage["tokens_used_tts"] == before["tokens_used_tts"]
    assert usage["tts_calls"] == before["tts_calls"]  # the interrupted stream is no call
    assert usage["tokens_used_batch"] == before["tokens_used_batch"] + charged_batch
    assert usage["tokens_used_total"] == before["tokens_used_total"] + charged_batch
    # The running totals the quota checks use agree, and nothing is held any more.
    assert running == [(usage["tokens_used_total"], 0)]
    assert held_after == [(0,)]
