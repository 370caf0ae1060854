"""The code predictor's passes of one frame, run eagerly (CPU) or replayed from CUDA graphs.

Why this split: per 80 ms frame the code predictor runs 15 passes of 5 layers (73 % of the
frame's weights). On a CPU that costs what reading the weights costs, and the passes run as
they are. On a GPU the same weights are read in about a millisecond, so the thousand-odd kernel
launches of those passes are the cost (stock qwen-tts runs below real time on an H100 for that
reason). The shapes of pass g are fixed for a batch size (rows, 2 tokens at positions 0..1 for
g = 0, then 1 token at position g + 1), so each (batch bucket, g) is captured once as a CUDA
graph over static buffers and replayed every frame.

Both runners call the same `predictor_logits` (the same layers, norms, heads and ops as the
eager CPU path, which codes equal stock with); only capture and replay are CUDA-specific. The
talker step stays eager on CUDA (its slots attend over prefixes of different lengths), and the
samplers run per slot on the host between passes (one small sync per pass): moving greedy
choice onto the device and capturing the talker over a fixed-capacity masked cache are the next
steps for GPU speed. Verified on CUDA only by tests/integration/test_cuda_graphs.py, which
skips where no GPU is present (README, "What is verified where").
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

KV = tuple[torch.Tensor, torch.Tensor]

#: Batch sizes captured on CUDA; a step with B slots replays the smallest bucket >= B.
BUCKETS = (1, 2, 4, 8, 16, 32)


def predictor_logits(lane: Any, g: int, x: torch.Tensor, caches: list[KV]) -> torch.Tensor:
    """float32 logits (B, vocab) of code group g + 1 for every row.

    x is (B, 2, H) = (the talker's last hidden state, the embedding of its token) for g = 0, and
    (B, 1) = the codes chosen in pass g - 1 for g > 0. Writes K/V at positions [start, end).
    """
    predictor = lane.predictor
    if g == 0:
        h = predictor.small_to_mtp_projection(x)
    else:
        embeddings = predictor.model.get_input_embeddings()
        h = predictor.small_to_mtp_projection(embeddings[g - 1](x))
    start = 0 if g == 0 else g + 1
    end = start + h.shape[1]
    cos, sin = lane.predictor_rope
    for layer, cache in zip(lane.predictor_layers, caches, strict=True):
        h = layer.step_shared(h, cos[:, :, start:end], sin[:, :, start:end], cache, start)
    h = predictor.model.norm(h)
    logits: torch.Tensor = lane.heads[g](h)[:, -1, :].to(copy=True, dtype=torch.float32)
    return logits


def _caches(lane: Any, batch: int) -> list[KV]:
    shape = (batch, *lane.predictor_kv_shape)
    return [
        (
            torch.empty(shape, dtype=lane.dtype, device=lane.device),
            torch.empty(shape, dtype=lane.dtype, device=lane.device),
        )
        for _ in lane.predictor_layers
    ]


class FramePasses(Protocol):
    """The passes of one frame for a fixed set of rows."""

    def logits(self, g: int, x: torch.Tensor) -> torch.Tensor: ...


class EagerPasses:
    """Runs each pass as it comes, over K/V buffers allocated for this frame (CPU path)."""

    def __init__(self, lane: Any, batch: int) -> None:
        self._lane = lane
        self._caches = _caches(lane, batch)

    def logits(self, g: int, x: torch.Tensor) -> torch.Tensor:
        return predictor_logits(self._lane, g, x, self._caches)


class PredictorGraphs:
    """One lane's passes captured as CUDA graphs per (batch bucket, g), captured on first use."""

    def __init__(self, lane: Any, buckets: tuple[int, ...] = BUCKETS) -> None:
        if lane.device.type != "cuda":
            raise ValueError("CUDA graphs need the model on a CUDA device")
        self._lane = lane
        self._buckets = buckets
        self._captured: dict[int, _Bucket] = {}
        self._pool: Any = None  # one memory pool shared by every graph of the lane

    def frame(self, batch: int) -> FramePasses:
        """The passes for `batch` rows: replays when batch fits a bucket, else eager."""
        size = next((b for b in self._buckets if b >= batch), None)
        if size is None:
            return EagerPasses(self._lane, batch)
        if size not in self._captured:
            self._captured[size] = self._capture(size)
        return _Replay(self._captured[size], batch)

    def _capture(self, size: int) -> _Bucket:
        lane = self._lane
        width = int(lane.talker.config.hidden_size)
        first = torch.zeros(size, 2, width, dtype=lane.dtype, device=lane.device)
        tokens = torch.zeros(size, 1, dtype=torch.long, device=lane.device)
        caches = _caches(lane, size)
        warm = torch.cuda.Stream()
        warm.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(warm):  # allocator and kernel warm-up off the capture
            for g in range(lane.groups - 1):
                predictor_logits(lane, g, first if g == 0 else tokens, caches)
        torch.cuda.current_stream().wait_stream(warm)
        graphs, outputs = [], []
        for g in range(lane.groups - 1):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                outputs.append(predictor_logits(lane, g, first if g == 0 else tokens, caches))
            self._pool = graph.pool()
            graphs.append(graph)
        return _Bucket(first, tokens, caches, graphs, outputs)


class _Bucket:
    """Static inputs, K/V and outputs of one batch bucket's captured passes."""

    def __init__(
        self,
        first: torch.Tensor,
        tokens: torch.Tensor,
        caches: list[KV],
        graphs: list[Any],
        outputs: list[torch.Tensor],
    ) -> None:
        self.first, self.tokens, self.caches = first, tokens, caches
        self.graphs, self.outputs = graphs, outputs


class _Replay:
    """Copies a frame's inputs into a bucket's static buffers and replays pass g's graph.
    Rows beyond `batch` compute on stale inputs and are never read."""

    def __init__(self, bucket: _Bucket, batch: int) -> None:
        self._bucket, self._batch = bucket, batch

    def logits(self, g: int, x: torch.Tensor) -> torch.Tensor:
        bucket, batch = self._bucket, self._batch
        (bucket.first if g == 0 else bucket.tokens)[:batch].copy_(x)
        bucket.graphs[g].replay()
        return bucket.outputs[g][:batch]
