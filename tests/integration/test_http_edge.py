"""The HTTP edge over real sockets against the real server (uvicorn with http_server's protocol).

Slow clients are played by threads that send a byte at a time; no test measures time. Each
read has a generous deadline only so that a server which never answers fails the test instead
of hanging it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from support import AppFactory, new_user_key, reference_audio

from conftest import LiveServer
from qwen3_tts_server.engine.base import Engine

#: Limits small enough that the slow-client tests end quickly.
EDGE = {"max_header_bytes": 4096, "header_timeout_s": 1.0, "body_timeout_s": 1.0}
#: How long a test waits for the server's answer before calling it hung.
DEADLINE_S = 30.0


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after answering

    def detail(self) -> str:
        detail: str = json.loads(self.body)["detail"]
        return detail


@pytest.fixture
def server(live_server: Callable[..., LiveServer]) -> Iterator[LiveServer]:
    with live_server(**EDGE) as running:
        yield running


@contextmanager
def connection(server: LiveServer) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S) as sock:
        yield sock


def read_answer(sock: socket.socket) -> Answer:
    """One response, then whether the server closed the connection after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines)
    }
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    rest = body[length:]
    try:
        closed = not rest and sock.recv(1) == b""
    except ConnectionResetError:
        closed = True
    return Answer(int(status_line.split()[1]), headers, body[:length], closed)


def answer_while_trickling(sock: socket.socket) -> Answer:
    """The server's answer while this client sends one byte every 100 ms (until the server
    closes the connection or answers)."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.1):
            try:
                sock.send(b"a")
            except OSError:
                return

    sender = threading.Thread(target=run, daemon=True)
    sender.start()
    try:
        return read_answer(sock)
    finally:
        stop.set()
        sender.join()


def test_a_request_head_over_the_limit_is_431_and_closed(server: LiveServer) -> None:
    with connection(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
        answer = read_answer(sock)
    assert answer.status == 431
    assert "4096" in answer.detail()
    assert answer.closed


def test_a_head_that_trickles_in_is_408_and_closed(server: LiveServer) -> None:
    with connection(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answer = answer_while_trickling(sock)
    assert answer.status == 408
    assert "head" in answer.detail()
    assert answer.closed


def test_a_connection_that_sends_nothing_is_closed(server: LiveServer) -> None:
    with connection(server) as sock:
        assert sock.recv(1) == b""


def test_a_body_that_trickles_in_is_408_and_closed(server: LiveServer) -> None:
    with connection(server) as sock:
        sock.sendall(
            b"POST /auth/exchange-invite HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            b'{"invite_code": "'
        )
        answer = answer_while_trickling(sock)
    assert answer.status == 408
    assert "body" in answer.detail()
    assert answer.closed


def test_content_length_with_transfer_encoding_is_refused_and_closed(server: LiveServer) -> None:
    """On a keep-alive connection that has served a request, so the close is this refusal's."""
    body = b'{"invite_code": "abcdefgh12345678"}'
    with connection(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200") and b"connection: close" not in first.lower()
        sock.sendall(
            b"POST /auth/exchange-invite HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(body):x}\r\n".encode()
            + body
            + b"\r\n0\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n"  # a smuggled request
        )
        answer = read_answer(sock)
    assert answer.status == 400
    assert "Content-Length" in answer.detail() and "Transfer-Encoding" in answer.detail()
    assert answer.closed


def test_malformed_requests_get_a_json_detail(server: LiveServer) -> None:
    with connection(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        answer = read_answer(sock)
    assert answer.status == 400
    assert answer.detail().startswith("Invalid HTTP request")
    assert answer.closed


# -- X-Transcript ------------------------------------------------------------------------------
@pytest.fixture
def api(make_client: AppFactory, engine: Engine) -> TestClient:
    return make_client(load_engine=lambda: engine)


def _clone(api: TestClient, headers: dict[str, str], transcript: str) -> int:
    response = api.post(
        "/clonevoice",
        headers=headers,
        data={"name": "long", "transcript": transcript, "language": "Chinese"},
        files={"file": ("ref.wav", reference_audio())},
    )
    assert response.status_code == 200, response.text
    voice_id: int = response.json()["voice_id"]
    return voice_id


def test_a_transcript_too_long_for_a_header_is_left_to_the_voice_detail(api: TestClient) -> None:
    _, headers = new_user_key(api)
    transcript = "天地玄黄宇宙洪荒" * 250  # 2000 characters, 18 KB percent-encoded
    long_id = _clone(api, headers, transcript)
    short_id = _clone(api, headers, "天地玄黄，宇宙洪荒。")

    sample = api.get(f"/voices/{long_id}/sample", headers=headers)

    assert sample.status_code == 200
    assert "x-transcript" not in sample.headers
    assert f"/voices/{long_id}" in sample.headers["x-transcript-omitted"]
    assert len(b"".join(f"{k}: {v}\r\n".encode() for k, v in sample.headers.items())) < 8192
    assert api.get(f"/voices/{long_id}", headers=headers).json()["ref_text"] == transcript
    short = api.get(f"/voices/{short_id}/sample", headers=headers).headers
    assert unquote(short["x-transcript"]) == "天地玄黄，宇宙洪荒。"
    assert "x-transcript-omitted" not in short
