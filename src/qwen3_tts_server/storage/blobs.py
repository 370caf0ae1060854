"""Content-addressed file store: a blob's name is the SHA-256 of its bytes.

Naming by content means identical bytes are stored once, however many voices or generations use
them and whatever filename or extension they arrived with; the media type lives in the database
row, not in the path. Files sit at `root/ab/cd/<sha256>` so no directory grows past 65536
entries.

A blob is published (given its final name) only after the database row that names it has
committed, so no crash or rollback can leave a final file that nothing refers to:

1. `stage` writes the bytes under `.staging/<sha256>.<random>` (flushed to disk) before the
   commit; `discard` removes that file when the transaction rolls back;
2. `publish`, after the commit, renames the staged file to its final name (or drops it when
   the final file is already there). A crash between the commit and the publish leaves the
   staged file, which the sweep publishes because its row exists.

Removal is the mirror image (`retire`): the final file is first renamed into `.trash/`, then
the caller's check says whether a row names the key again (another writer, maybe on another
replica, committed one meanwhile); if so the file goes back, else it is deleted. Because a
writer publishes only after committing and a remover checks only after renaming, whichever
order the two run in, a committed row is never left without its file.

Leftovers of a crash (staged, trashed or half-written files) are found by `leftovers`; deciding
which are garbage needs the database and belongs to the caller (services/media.py). Several
replicas may share one root: every step is a rename or an unlink of a uniquely named file, and
losing a race to another replica's identical step is not an error.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_KEY = re.compile(r"[0-9a-f]{64}")
_TEMP_PREFIX = ".tmp-"  # never matches _KEY, so a half-written file is never served
STAGING_DIR = ".staging"
TRASH_DIR = ".trash"


class InvalidBlobKey(ValueError):
    """A key that is not 64 lowercase hex digits (a bug or a path-traversal attempt)."""


class BlobNotFound(FileNotFoundError):
    """No blob with this key is stored."""


@dataclass(frozen=True)
class Staged:
    """Bytes written under a staging name, waiting for their row to commit."""

    key: str
    path: Path
    #: The bytes, to write again if the staged file was swept away; None for a file found on
    #: disk (then another process settled it when it is gone).
    data: bytes | None


@dataclass(frozen=True)
class Leftover:
    """A file no finished operation accounts for: `kind` is "staged" or "trashed" (with the
    key it was going to be or had been), "partial" (a half-written temp file, key None) or
    "blob" (a published file, which is garbage when no row names it)."""

    kind: str
    path: Path
    key: str | None
    mtime: float


class BlobStore:
    """Immutable blobs under `root`, named by the SHA-256 of their content."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for directory in (root, root / STAGING_DIR, root / TRASH_DIR):
            directory.mkdir(parents=True, exist_ok=True)

    # -- writing -------------------------------------------------------------------------------
    def put(self, data: bytes) -> str:
        """Store `data` under its final name at once; return its key. Never leaves a partial
        file. Only for bytes whose row is already committed (see the module docstring)."""
        key = hashlib.sha256(data).hexdigest()
        final = self.path(key)
        if final.exists():
            return key
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = _write_temp(final.parent, _TEMP_PREFIX, data)
        try:
            _replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return key

    def stage(self, data: bytes) -> Staged:
        """Write `data` under a unique staging name, flushed to disk; publish it after the
        commit of the row that names it, or discard it."""
        key = hashlib.sha256(data).hexdigest()
        return Staged(key, _write_temp(self.root / STAGING_DIR, f"{key}.", data), data)

    def publish(self, staged: Staged) -> None:
        """Give staged bytes their final name (their row has committed)."""
        final = self.path(staged.key)
        if final.exists():
            staged.path.unlink(missing_ok=True)
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            _replace(staged.path, final)
        except FileNotFoundError:  # a sweep took it for abandoned, or another process
            if staged.data is not None:  # published it meanwhile
                self.put(staged.data)

    @staticmethod
    def discard(staged: Staged) -> None:
        """Drop staged bytes whose transaction rolled back."""
        staged.path.unlink(missing_ok=True)

    # -- reading -------------------------------------------------------------------------------
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

    # -- removal -------------------------------------------------------------------------------
    def retire(self, key: str, wanted: Callable[[str], bool]) -> bool:
        """Remove blob `key` unless `wanted(key)`, asked after the file was moved aside, says a
        row names it again; True if the file was deleted. Idempotent.

        Empty fan-out directories are kept: removing them would race with a concurrent
        publish into them, and there are at most 65536 of them.
        """
        aside = self.root / TRASH_DIR / f"{key}.{secrets.token_hex(8)}"
        try:
            os.replace(self.path(key), aside)
        except FileNotFoundError:
            return False
        return self._settle_trashed(key, aside, wanted)

    def _settle_trashed(self, key: str, aside: Path, wanted: Callable[[str], bool]) -> bool:
        if wanted(key):
            self.publish(Staged(key, aside, None))
            return False
        aside.unlink(missing_ok=True)
        return True

    def recover(self, leftover: Leftover, wanted: Callable[[str], bool]) -> bool:
        """Finish what a crash interrupted: publish a staged or trashed file that a row names,
        delete it otherwise (and any partial file, and a published blob no row names); True if
        a file was deleted. `wanted(key)` must answer from committed database state."""
        key = leftover.key
        if key is None:
            leftover.path.unlink(missing_ok=True)
            return True
        if leftover.kind == "blob":
            return self.retire(key, wanted)
        if leftover.kind == "trashed":
            return self._settle_trashed(key, leftover.path, wanted)
        if wanted(key):
            self.publish(Staged(key, leftover.path, None))
            return False
        leftover.path.unlink(missing_ok=True)
        return True

    def leftovers(self, older_than: float) -> Iterator[Leftover]:
        """Staged, trashed and partial files, and every published blob, last modified before
        `older_than` (a time.time() value): younger ones may belong to a transaction still
        running in another process."""
        for kind, directory in (("staged", STAGING_DIR), ("trashed", TRASH_DIR)):
            for path, mtime in _files(self.root / directory, older_than):
                key = path.name.split(".", 1)[0]
                if _KEY.fullmatch(key):
                    yield Leftover(kind, path, key, mtime)
        for first in _dirs(self.root):
            for second in _dirs(first):
                for path, mtime in _files(second, older_than):
                    if _KEY.fullmatch(path.name):
                        yield Leftover("blob", path, path.name, mtime)
                    elif path.name.startswith(_TEMP_PREFIX):
                        yield Leftover("partial", path, None, mtime)


def _write_temp(directory: Path, prefix: str, data: bytes) -> Path:
    """`data` in a new uniquely named file in `directory`, flushed to disk."""
    fd, temp = tempfile.mkstemp(dir=directory, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return Path(temp)


def _replace(source: Path, final: Path) -> None:
    """Rename `source` over `final` atomically and make the rename survive a power cut."""
    os.replace(source, final)
    _fsync_dir(final.parent)


_FAN_OUT = re.compile(r"[0-9a-f]{2}")


def _files(directory: Path, older_than: float) -> list[tuple[Path, float]]:
    """Regular files in `directory` last modified before `older_than`, with that time (files
    that vanish while listed are skipped: another process settled them)."""
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                    if mtime < older_than:
                        found.append((Path(entry.path), mtime))
            except FileNotFoundError:
                continue
    return found


def _dirs(directory: Path) -> list[Path]:
    """The fan-out directories (two hex digits) in `directory`."""
    with os.scandir(directory) as entries:
        return [
            Path(entry.path)
            for entry in entries
            if _FAN_OUT.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
        ]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
