"""The /batchtts ZIP: audio in input order, then a deflated manifest; unsafe names refused."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from qwen3_tts_server.audio.archive import MANIFEST_NAME, build_zip

MANIFEST = {"batch_id": 7, "files": ["0.mp3", "1.mp3"], "format": "mp3", "note": "naïve ✓"}


def test_entries_in_order_then_the_manifest() -> None:
    data = build_zip([("0.mp3", b"first"), ("1.mp3", b"second")], MANIFEST)

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["0.mp3", "1.mp3", MANIFEST_NAME]
        assert archive.read("0.mp3") == b"first"
        assert archive.read("1.mp3") == b"second"
        assert json.loads(archive.read(MANIFEST_NAME)) == MANIFEST
        assert archive.read(MANIFEST_NAME).startswith(b'{\n  "batch_id"')  # indent 2, UTF-8
        kinds = {info.filename: info.compress_type for info in archive.infolist()}
    assert kinds == {
        "0.mp3": zipfile.ZIP_STORED,
        "1.mp3": zipfile.ZIP_STORED,
        MANIFEST_NAME: zipfile.ZIP_DEFLATED,
    }


@pytest.mark.parametrize(
    "names",
    [
        ["0.wav", "0.wav"],
        ["manifest.json"],
        ["../0.wav"],
        ["sub/0.wav"],
        ["..\\0.wav"],
        [""],
        [".hidden"],
    ],
)
def test_unsafe_or_clashing_names_are_refused(names: list[str]) -> None:
    with pytest.raises(ValueError, match="ZIP entry name"):
        build_zip([(name, b"x") for name in names], MANIFEST)
