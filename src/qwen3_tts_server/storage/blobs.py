"""Content-addressed file store: a blob's name is the SHA-256 of its bytes.

Naming by content means identical bytes are stored once, however many voices or generations use
them and whatever filename or extension they arrived with; the media type lives in the database
row, not in the path. Files sit at `root/ab/cd/<sha256>` so no directory grows past 65536
entries. Several replicas may share one root: writes are atomic and idempotent, so two processes
storing the same bytes at once both succeed and leave one complete file.

This class never decides when a blob is garbage. Reference counting belongs to the database
(voices and stored generations point at `audio_blobs.sha256`), and the service calls `delete`
only once nothing refers to the key, in the same transaction that removed the last reference.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

_KEY = re.compile(r"[0-9a-f]{64}")
_TEMP_PREFIX = ".tmp-"  # never matches _KEY, so a half-written file is never served


class InvalidBlobKey(ValueError):
    """A key that is not 64 lowercase hex digits (a bug or a path-traversal attempt)."""


class BlobNotFound(FileNotFoundError):
    """No blob with this key is stored."""


class BlobStore:
    """Immutable blobs under `root`, named by the SHA-256 of their content."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes) -> str:
        """Store `data` if new; return its key (SHA-256 hex). Never leaves a partial file.

        Written to a temp file in the target directory, flushed to disk, then renamed over the
        final name: readers see nothing or everything, and a crash leaves only a `.tmp-` file.
        """
        key = hashlib.sha256(data).hexdigest()
        final = self.path(key)
        if final.exists():
            return key
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=final.parent, prefix=_TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, final)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)  # make the rename itself survive a power cut
        return key

    def path(self, key: str) -> Path:
        """Where blob `key` lives (for streaming responses); raises `InvalidBlobKey`."""
        if not _KEY.fullmatch(key):
            raise InvalidBlobKey(f"not a SHA-256 hex key: {key!r}")
        return self.root / key[:2] / key[2:4] / key

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def open(self, key: str) -> BinaryIO:
        """The blob opened for binary reading; the caller closes it."""
        try:
            return self.path(key).open("rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def read(self, key: str) -> bytes:
        with self.open(key) as blob:
            return blob.read()

    def size(self, key: str) -> int:
        """Size in bytes of blob `key`."""
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def delete(self, key: str) -> bool:
        """Remove blob `key`; True if it existed. Idempotent, so a retried cleanup is harmless.

        Empty fan-out directories are kept: removing them would race with a concurrent `put`
        creating its temp file there, and there are at most 65536 of them.
        """
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            return False
        return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
