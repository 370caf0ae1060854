"""Default sizes of the step engine, by device (importable without torch).

A CPU runs a few slots (each step reads every weight; 8 already keeps all cores busy at 0.6B),
a GPU many (a step costs about the same from 1 to 64 rows: README "Sizing the engine").
"""

from __future__ import annotations

#: Slots per model when ENGINE_MAX_BATCH is unset.
DEFAULT_ROWS = {"cpu": 8, "cuda": 128}
#: Prompt positions prefilled per loop turn (at least one request). A CPU prefills ~1-5 ms per
#: token at 0.6B (compute-bound: batching saves little) and stalls the running streams meanwhile;
#: a GPU prefills a few thousand tokens in about the time of one step.
PREFILL_TOKENS = {"cpu": 64, "cuda": 4096}
#: K/V positions per slot (prompt + frames + 1) when ENGINE_MAX_CONTEXT is unset.
DEFAULT_CONTEXT = 2048


def _kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def default_rows(device: str) -> int:
    """Slots per model when ENGINE_MAX_BATCH is unset: 8 on CPU, 128 on CUDA."""
    return DEFAULT_ROWS[_kind(device)]


def prefill_tokens(device: str) -> int:
    """Prompt positions the loop prefills per turn on `device`."""
    return PREFILL_TOKENS[_kind(device)]
