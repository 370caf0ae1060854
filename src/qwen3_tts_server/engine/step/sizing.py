"""Default sizes of the step engine, by device (importable without torch).

A CPU runs a few slots (each step reads every weight; 8 already keeps all cores busy at 0.6B),
a GPU many (a step costs about the same from 1 to 64 rows: README "Sizing the engine").
"""

from __future__ import annotations

#: Slots per model when ENGINE_MAX_BATCH is unset.
DEFAULT_ROWS = {"cpu": 8, "cuda": 128}
#: K/V positions per slot (prompt + frames + 1) when ENGINE_MAX_CONTEXT is unset.
DEFAULT_CONTEXT = 2048


def default_rows(device: str) -> int:
    """Slots per model when ENGINE_MAX_BATCH is unset: 8 on CPU, 128 on CUDA."""
    return DEFAULT_ROWS["cuda" if device.startswith("cuda") else "cpu"]
