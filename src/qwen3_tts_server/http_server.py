"""uvicorn's HTTP/1.1 (h11) protocol with the limits a server facing clients needs.

Stock uvicorn bounds the request head (h11's max_incomplete_event_size) but waits forever for
a head or a body that trickles in, and serves a request carrying both Content-Length and
Transfer-Encoding (the classic request-smuggling shape; RFC 9112 §6.1 says to close the
connection after it) on a connection it keeps open. Neither hypercorn (a per-read timeout, so
one byte every few seconds keeps it waiting) nor a switch to a Rust server (a second server
stack to ship and test) fixed this more simply than a small subclass of the protocol uvicorn
already runs, selected with `http=`:

- the request head must be complete within HEADER_TIMEOUT_S of the connection opening (or of
  the previous response ending) and stay under MAX_HEADER_BYTES: else 408 / 431, closed (a
  connection that sent nothing at all is closed without an answer, like an idle keep-alive);
- the body must be complete within BODY_TIMEOUT_S of its head: else 408 (when no response has
  started), the app sees the client as gone, the connection is closed;
- Content-Length together with Transfer-Encoding is a 400, and the connection is closed;
- protocol errors answer JSON `{"detail": ...}` like every other error, and close.

What a reverse proxy should add on top is in docs/deployment.md.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from qwen3_tts_server.config import Settings


@dataclass(frozen=True)
class EdgeLimits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float


class _StrictConnection(h11.Connection):
    """h11, refusing Content-Length with Transfer-Encoding and heads over the size limit, and
    remembering its last error. (h11's own limit applies to a head still incomplete: one that
    arrives whole in a single read passes it.)"""

    last_error: h11.RemoteProtocolError | None = None

    def __init__(self, max_head_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.max_head_bytes = max_head_bytes

    def next_event(self) -> Any:
        try:
            event = super().next_event()
            if isinstance(event, h11.Request):
                self._check(event)
        except h11.RemoteProtocolError as error:
            self.last_error = error
            raise
        return event

    def _check(self, request: h11.Request) -> None:
        size = len(request.method) + len(request.target) + 12  # "M T HTTP/1.1\r\n"
        size += sum(len(name) + len(value) + 4 for name, value in request.headers.raw_items())
        if size > self.max_head_bytes:
            raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        names = {name.lower() for name, _ in request.headers.raw_items()}
        if b"content-length" in names and b"transfer-encoding" in names:
            raise h11.RemoteProtocolError(
                "A request must not carry both Content-Length and Transfer-Encoding"
            )


class EdgeProtocol(H11Protocol):
    """H11Protocol with the limits above; `limits` is set on the subclass `protocol` makes."""

    limits: ClassVar[EdgeLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn: _StrictConnection = _StrictConnection(self.limits.max_header_bytes)
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_for: str | None = None  # "head" | "body" while a timer runs

    # -- timers --------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect("head")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._expect("head")  # the next request on this keep-alive connection
        else:
            self._follow_state()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _follow_state(self) -> None:
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._expect("body")
        elif state is not h11.IDLE:
            self._stop_timer()  # the request is read (or failed): the rest is the app's time

    def _expect(self, part: str) -> None:
        if self._waiting_for == part:
            return
        self._stop_timer()
        seconds = self.limits.header_timeout_s if part == "head" else self.limits.body_timeout_s
        self._waiting_for = part
        self._timer = self.loop.call_later(seconds, self._timed_out, part)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._waiting_for = None

    def _timed_out(self, part: str) -> None:
        self._timer = None
        self._waiting_for = None
        if self.transport.is_closing():
            return
        cycle = self.cycle if part == "body" else None
        if cycle is not None:
            cycle.disconnected = True  # the app's receive() says the client left
            cycle.message_event.set()
        seconds = self.limits.header_timeout_s if part == "head" else self.limits.body_timeout_s
        started = part == "body" or bool(self.conn.trailing_data[0])
        if started and (cycle is None or not cycle.response_started):
            self._answer(408, f"The request {part} did not arrive within {seconds:g} seconds")
        self.transport.close()  # an idle connection (nothing sent yet) is closed silently

    # -- errors --------------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a malformed request, with h11's status and a JSON detail."""
        error = self.conn.last_error
        status = error.error_status_hint if error is not None else 400
        detail = f"Invalid HTTP request: {error}" if error is not None else msg
        if status == 431:
            detail = f"Request headers too large (max {self.limits.max_header_bytes} bytes)"
        self._stop_timer()
        cycle = self.cycle
        if cycle is None or not cycle.response_started or cycle.response_complete:
            self._answer(status, detail)  # (never into the middle of a response being sent)
        self.transport.close()

    def _answer(self, status: int, detail: str) -> None:
        """Write a JSON error straight to the socket, then the caller closes it (the request
        may be half read, so h11's state machine cannot frame a response here)."""
        body = json.dumps({"detail": detail}).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + body)


def protocol(limits: EdgeLimits) -> type[EdgeProtocol]:
    """An EdgeProtocol class bound to `limits` (uvicorn instantiates the class itself)."""
    return type("BoundEdgeProtocol", (EdgeProtocol,), {"limits": limits})


def limits_from(settings: Settings) -> EdgeLimits:
    return EdgeLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
    )


def server_config(app: FastAPI, settings: Settings, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration `serve` runs with (tests use it too)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol(limits_from(settings)),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        log_config=None,
        access_log=False,
        **options,
    )
