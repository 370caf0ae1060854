"""Bounded reading of multipart uploads (whole bodies are also capped by `limits.BodySizeLimit`)."""

from __future__ import annotations

from fastapi import UploadFile

from qwen3_tts_server.audio.errors import UploadTooLarge

_CHUNK = 1 << 16
#: Room for the other form fields and multipart boundaries on top of the file itself.
MULTIPART_OVERHEAD = 64 * 1024


async def read_upload(file: UploadFile, limit: int) -> bytes:
    """The file's bytes, or 413 as soon as they exceed `limit`."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await file.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise UploadTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
