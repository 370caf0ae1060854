"""A hard cap on request body size, enforced while the body streams in.

FastAPI parses multipart forms (spooling files to disk) before any route code runs, so a
route-level check comes too late to protect memory and disk: this ASGI middleware answers 413
as soon as the declared or received size passes the limit.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwen3_tts_server.api.openai_errors import is_openai_path, openai_error_body
from qwen3_tts_server.values import format_size


class BodySizeLimit:
    """`max_bytes`: the whole body's cap; `upload_limit`: the configured upload limit it is
    built from (MAX_UPLOAD_BYTES, plus room for the form), which is what the 413 names."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_limit: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        openai = is_openai_path(scope.get("path", ""))
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send, openai)
            return
        received = 0
        rejected = False

        async def limited_receive() -> Message:
            # Past the limit, answer 413 ourselves and tell the app the client is gone, so it
            # stops reading; whatever it then tries to send is dropped below.
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not rejected:
                    rejected = True
                    await self._reject(send, openai)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not rejected:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _reject(self, send: Send, openai: bool) -> None:
        message = (
            f"Request body too large: uploads are limited to "
            f"{format_size(self.upload_limit)}; send a shorter clip or a compressed format"
        )
        content = openai_error_body(413, message) if openai else {"detail": message}
        body = json.dumps(content).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
