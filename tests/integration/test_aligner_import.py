"""qwen-asr's Japanese splitter (nagisa, on DyNet built with -ffast-math) turns on
flush-to-zero when it loads; importing it through aligner/compat.py must leave the process's
floating-point arithmetic as it was. In a fresh interpreter: the test session has imported it
long before."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import threading
import numpy as np
from qwen3_tts_server.aligner.compat import import_qwen_asr

import_qwen_asr()
results = [float(np.array([1e-310])[0] * 1.0)]
thread = threading.Thread(target=lambda: results.append(float(np.array([1e-310])[0] * 1.0)))
thread.start()
thread.join()
print(results)
"""


def test_importing_qwen_asr_keeps_subnormal_floats() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[1e-310, 1e-310]"
