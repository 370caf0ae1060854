"""The whole step of one lane captured as CUDA graphs, one per (rows, span) bucket, at warm-up.

Why: on a GPU the step is thousands of small kernels (28 talker layers, 15 predictor passes of
5 layers, 16 sampling points), so launching them from Python costs many times what the kernels
do. A graph replays all of them with one call. A step over rows [0, n) attending over [0, span)
replays the smallest captured bucket that covers both: the extra rows are free rows (stepped on
stale, bounded state and ignored), the extra span is masked out. Every bucket is captured at
warm-up, before /ready, so no request ever waits for a capture.

Buckets: rows 1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256 (up to the table's
rows, which is always one), spans powers of two from 128 up to the table's context (always one).
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from qwen3_tts_server.engine.step.table import SlotTable

log = logging.getLogger(__name__)

ROW_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256)
MIN_SPAN = 128


def row_buckets(rows: int) -> list[int]:
    return sorted({b for b in ROW_BUCKETS if b < rows} | {rows})


def span_buckets(context: int) -> list[int]:
    spans = []
    span = MIN_SPAN
    while span < context:
        spans.append(span)
        span *= 2
    return [*spans, context]


def cover(buckets: list[int], need: int) -> int:
    """The smallest bucket >= need (buckets sorted; the last one covers everything allowed)."""
    return buckets[min(bisect.bisect_left(buckets, need), len(buckets) - 1)]


Body = Callable[[int, int], None]


class StepGraphs:
    """Captured graphs of one lane's step body; `run(n, span)` replays the covering bucket."""

    def __init__(self, table: SlotTable, body: Body) -> None:
        self._rows = row_buckets(table.rows)
        self._spans = span_buckets(table.context)
        self._graphs: dict[tuple[int, int], Any] = {}
        started = time.perf_counter()
        pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # kernel selection and workspaces before any capture
            for n in self._rows:
                body(n, self._spans[-1])
        torch.cuda.current_stream().wait_stream(side)
        for n in reversed(self._rows):  # largest first: later captures fit in its pool blocks
            for span in self._spans:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    body(n, span)
                self._graphs[(n, span)] = graph
        torch.cuda.synchronize()
        log.info(
            "captured %d step graphs (rows %s, spans %s) in %.1f s",
            len(self._graphs), self._rows, self._spans, time.perf_counter() - started,
        )  # fmt: skip

    def cover(self, n: int, span: int) -> tuple[int, int]:
        return cover(self._rows, n), cover(self._spans, span)

    def run(self, n: int, span: int) -> int:
        """Replay the bucket covering n rows and span positions; returns the rows it stepped."""
        key = self.cover(n, span)
        self._graphs[key].replay()
        return key[0]
