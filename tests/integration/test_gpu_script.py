"""bench/gpu.sh, the one script a GPU session runs, works before a GPU session spends minutes on
it: its dry run (the same stages on this CPU, tiny sizes) leaves every result file, each
readable JSON, and its HTTP streams all complete. A GPU session is short and rare; a stage that
breaks there (as the streams stage did once the server began to want the aligner) loses it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_script_dry_run_gives_every_result(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {
        **os.environ,
        "GPU_DRY_RUN": "1",
        "OUT": str(out),
        "GPU_DATA": str(tmp_path / "data"),
        "PYTHON": sys.executable,
    }
    run = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for name in ("check-small.json", "check-large.json"):
        check = json.loads((out / name).read_text())
        assert check["seeded"]["alone_twice_identical"] is True, name
        assert set(check["step_ms"]) == {"1", "8", "16"}, name
    streams = json.loads((out / "streams-small.json").read_text())
    rounds = streams["rounds"]
    assert [r["concurrency"] for r in rounds] == [1, 4]
    assert all(r["errors"] == 0 and r["first_audio_p95"] > 0 for r in rounds), rounds
    cuda_tests = (out / "cuda-tests.txt").read_text()  # collected, skipped without CUDA
    assert "skipped" in cuda_tests and "error" not in cuda_tests.lower(), cuda_tests
