"""Word timestamps as the services use them: the aligner's lifecycle, and words placed in the
audio the client gets.

The aligner loads in the background like the speech model (`AlignerRuntime`); a timestamp
request asks `worker()` first, before any reservation, so a server without an aligner (or one
still loading) answers 503 saying what to do and charges nothing.

Each sentence chunk of a text is aligned with its own audio (shorter passages align better,
and a stream can align a chunk as soon as it is spoken); `place` then moves each chunk's words
to where the chunk lies in the joined audio (after the earlier chunks and the pauses between
them) and to the tempo asked (`speed`), so a stream's words and a whole file's are the same.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from qwen3_tts_server.aligner.model import ForcedAligner, Passage
from qwen3_tts_server.aligner.worker import Aligned, AlignerWorker
from qwen3_tts_server.errors import ServiceUnavailable
from qwen3_tts_server.services.speech import SENTENCE_PAUSE_S
from qwen3_tts_server.values import Audio, Word

log = logging.getLogger(__name__)

AlignerLoader = Callable[[], ForcedAligner]

#: What a timestamp request says when the server runs without an aligner.
DISABLED = (
    "Word timestamps are off on this server: set MODEL_ALIGNER_REPO (for example "
    "Qwen/Qwen3-ForcedAligner-0.6B) and restart it"
)


class AlignerRuntime:
    """The aligner's lifecycle: disabled (no loader), loading, ready or failed."""

    def __init__(self, load: AlignerLoader | None) -> None:
        self._load_aligner = load
        self._worker: AlignerWorker | None = None
        self._error: str | None = None
        self._thread: threading.Thread | None = None

    def start(self, after: Callable[[], object] = lambda: None) -> None:
        """Load in the background once `after()` returns: transformers' loading patches
        torch globally (weights start on the meta device), so two models must never load at
        the same time; the speech model goes first."""
        if self._load_aligner is None:
            return
        self._thread = threading.Thread(
            target=self._load, args=(after,), name="aligner-loader", daemon=True
        )
        self._thread.start()

    def _load(self, after: Callable[[], object]) -> None:
        assert self._load_aligner is not None
        try:
            after()
            worker = AlignerWorker(self._load_aligner())
            worker.warm_up()
            worker.start()
            self._worker = worker
            log.info("aligner ready: %s on %s", worker.aligner.model_id, worker.aligner.device)
        except Exception as exc:  # a load failure must surface on /ready, not kill the server
            log.exception("aligner failed to load")
            self._error = f"{type(exc).__name__}: {exc}"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until loading ended (tests); True when ready."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._worker is not None

    @property
    def status(self) -> str:
        """disabled | loading | ready | failed"""
        if self._load_aligner is None:
            return "disabled"
        if self._error is not None:
            return "failed"
        return "ready" if self._worker is not None else "loading"

    @property
    def settled(self) -> bool:
        """Loading has ended one way or the other (or never started): /ready may say ready."""
        return self.status != "loading"

    @property
    def error(self) -> str | None:
        return self._error

    def worker(self) -> AlignerWorker:
        """The running aligner, or a 503 that says why there is none."""
        if self._worker is not None:
            return self._worker
        if self._load_aligner is None:
            raise ServiceUnavailable(DISABLED)
        if self._error is not None:
            raise ServiceUnavailable(
                "Word timestamps are unavailable: the aligner failed to load (see GET /ready); "
                "check MODEL_ALIGNER_REPO and restart"
            )
        raise ServiceUnavailable("The aligner is still loading: retry when GET /ready is ready")

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._worker is not None:
            self._worker.stop()


def passages(texts: Sequence[str], parts: Sequence[Audio], language: str) -> list[Passage]:
    """One passage per sentence chunk: its text and its own audio."""
    return [Passage(audio, text, language) for text, audio in zip(texts, parts, strict=True)]


def chunk_offset(previous: Sequence[Audio]) -> float:
    """Where the next chunk starts in the joined audio: after `previous` and their pauses."""
    return sum(part.duration_s + SENTENCE_PAUSE_S for part in previous)


def place(words: Sequence[Word], offset: float, speed: float, duration_s: float) -> list[Word]:
    """Words of one chunk moved `offset` seconds in, at tempo `speed`, inside `duration_s`."""
    return [
        Word(
            word.text,
            round(min((word.start + offset) / speed, duration_s), 3),
            round(min((word.end + offset) / speed, duration_s), 3),
        )
        for word in words
    ]


def place_text(
    per_chunk: Sequence[Sequence[Word]],
    parts: Sequence[Audio],
    speed: float,
    duration_s: float,
    lead_s: float = 0.0,
) -> list[Word]:
    """A whole text's words in its joined audio, from each chunk's own words (`lead_s`: the
    audio starts with that much silence, a realtime segment's pause)."""
    placed: list[Word] = []
    for index, words in enumerate(per_chunk):
        offset = lead_s + chunk_offset(parts[:index])
        placed.extend(place(words, offset, speed, duration_s))
    return placed


async def align_text(
    worker: AlignerWorker,
    texts: Sequence[str],
    parts: Sequence[Audio],
    language: str,
    speed: float,
    duration_s: float,
    lead_s: float = 0.0,
) -> tuple[list[Word], float]:
    """One text's words in its joined audio (see `place_text`), and the aligner's seconds."""
    aligned = await worker.align(passages(texts, parts, language))
    return place_text(aligned.words, parts, speed, duration_s, lead_s), aligned.seconds


class ChunkTimer:
    """A stream's words: each sentence chunk is aligned on the aligner's thread as soon as its
    audio is complete, while the stream goes on; its words are handed out in text order once
    aligned, at times from the start of the whole stream."""

    def __init__(
        self, worker: AlignerWorker, texts: Sequence[str], language: str, speed: float
    ) -> None:
        self._worker = worker
        self._texts = texts
        self._language = language
        self._speed = speed
        self._samples: list[list[npt.NDArray[np.float32]]] = [[] for _ in texts]
        self._done: list[Audio] = []
        self._pending: list[tuple[float, asyncio.Future[Aligned]]] = []
        self.seconds = 0.0

    def add(self, index: int, samples: npt.NDArray[np.float32]) -> None:
        """More of chunk `index`'s audio, as the model made it (before any tempo change)."""
        self._samples[index].append(samples)

    def chunk_ended(self, index: int, sample_rate: int) -> None:
        """Chunk `index` is complete: align it now (chunks end in text order)."""
        pieces = self._samples[index] or [np.zeros(0, dtype=np.float32)]
        audio = Audio(np.concatenate(pieces), sample_rate)
        offset = chunk_offset(self._done)
        self._done.append(audio)
        passage = Passage(audio, self._texts[index], self._language)
        self._pending.append((offset, asyncio.wrap_future(self._worker.submit([passage]))))

    def ready(self) -> list[Word]:
        """Words of the chunks aligned so far, in order (an alignment's error is raised)."""
        words: list[Word] = []
        while self._pending and self._pending[0][1].done():
            words += self._placed(*self._pending.pop(0))
        return words

    async def rest(self) -> list[Word]:
        """Words of every chunk not handed out yet, once aligned."""
        words: list[Word] = []
        for offset, future in self._pending:
            await future
            words += self._placed(offset, future)
        self._pending.clear()
        return words

    def cancel(self) -> None:
        """The stream ended early: alignments not started yet are skipped."""
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()

    def _placed(self, offset: float, future: asyncio.Future[Aligned]) -> list[Word]:
        aligned = future.result()
        self.seconds += aligned.seconds
        [words] = aligned.words
        return place(words, offset, self._speed, math.inf)
