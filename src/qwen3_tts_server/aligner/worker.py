"""The aligner's own thread: alignments never run on the step loop's thread.

Why a thread of its own rather than steps between frames: one alignment is one forward pass
over a whole sentence's audio and text (tens to hundreds of milliseconds), far longer than a
step. Run on the loop's thread it would hold every running stream for that long; on its own
thread the loop keeps stepping while it runs. The two share the device: on CUDA the aligner's
kernels go to a stream of their own so they can overlap the loop's, on a CPU they share the
cores (bench/aligner.py measures what a stream loses while alignments run).

One thread, one call at a time: qwen-asr's model keeps per-call state on itself. Callers
await a future; a caller that went away before its turn costs nothing (its future is
cancelled and skipped). The queue needs no bound of its own: everything that reaches it has
passed the scheduler's bounded queue first, as the synthesis it times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from qwen3_tts_server.aligner.model import ForcedAligner, Passage
from qwen3_tts_server.values import Audio, Word

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Aligned:
    """Each passage's words, and how long the aligner worked on them."""

    words: list[list[Word]]
    seconds: float


_Request = tuple[list[Passage], "Future[Aligned]"]


class AlignerWorker:
    def __init__(self, aligner: ForcedAligner) -> None:
        self.aligner = aligner
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="aligner", daemon=True)
        self._cuda_stream = (
            torch.cuda.Stream(device=aligner.device) if aligner.device.startswith("cuda") else None
        )

    def start(self) -> None:
        self._thread.start()

    def warm_up(self) -> None:
        """One alignment before the first request (first calls build kernels and caches)."""
        silence = Audio(np.zeros(16000, dtype=np.float32), 16000)
        with self._device_stream():
            self.aligner.align([Passage(silence, "warm up", "english")])

    def submit(self, passages: Sequence[Passage]) -> Future[Aligned]:
        future: Future[Aligned] = Future()
        self._queue.put((list(passages), future))
        return future

    async def align(self, passages: Sequence[Passage]) -> Aligned:
        """The passages' words, computed on the aligner's thread."""
        return await asyncio.wrap_future(self.submit(passages))

    def stop(self) -> None:
        """Finish what was asked, then end the thread."""
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while (request := self._queue.get()) is not None:
            passages, future = request
            if not future.set_running_or_notify_cancel():
                continue
            started = time.perf_counter()
            try:
                with self._device_stream():
                    words = self.aligner.align(passages)
            except Exception as error:  # handed to the caller, never kills the thread
                future.set_exception(error)
            else:
                future.set_result(Aligned(words, time.perf_counter() - started))

    @contextlib.contextmanager
    def _device_stream(self) -> Iterator[None]:
        if self._cuda_stream is None:
            yield
            return
        with torch.cuda.stream(self._cuda_stream):
            yield
        self._cuda_stream.synchronize()
