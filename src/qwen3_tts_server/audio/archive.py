"""The /batchtts response: one ZIP holding `0.<fmt>`, `1.<fmt>`, ... and `manifest.json`.

Audio entries are STORED, not deflated. MP3, OGG, Opus and FLAC are already compressed, so
deflate gains nothing there; on WAV/PCM speech (noisy low bits) it gains little for real CPU
time in the request path. A client that wants small files asks for a compressed format. The
JSON manifest is small and very compressible, so it is deflated.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

MANIFEST_NAME = "manifest.json"


def build_zip(entries: Sequence[tuple[str, bytes]], manifest: Mapping[str, Any]) -> bytes:
    """ZIP bytes with `entries` in the given order, then the manifest (JSON, indent 2).

    Names come from the service, not the client; they must still be plain, unique file names so
    that no unzip tool can be led outside its target folder or overwrite the manifest.
    """
    names = [name for name, _ in entries]
    if len(set(names)) != len(names) or MANIFEST_NAME in names:
        raise ValueError(f"ZIP entry names must be unique and not {MANIFEST_NAME!r}: {names}")
    for name in names:
        if not name or name.startswith(".") or "/" in name or "\\" in name:
            raise ValueError(f"ZIP entry name must be a plain file name: {name!r}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries:
            archive.writestr(name, data, compress_type=zipfile.ZIP_STORED)
        body = json.dumps(manifest, indent=2, ensure_ascii=False).encode()
        archive.writestr(MANIFEST_NAME, body, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()
