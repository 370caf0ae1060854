"""Thread settings under competition: bf16 GEMVs idle and beside a busy process; prints JSON.

    .venv/bin/python bench/threads.py [--rounds 3] [--layers 8] [--reps 20]

Why: a frame is ~700 small GEMVs, each an OpenMP parallel region; with as many threads as
cores, one descheduled thread makes every region wait (the prototype saw 5x slower GEMVs while
other processes were busy). This measures, per setting, the median ms per decoder-layer of
oneDNN-prepacked bf16 linears at one row (the 7 projections of one 0.6B layer, 15.7 M weights,
over `--layers` distinct layers so the weights come from memory, as in the real loop):
* `t{N}`: TORCH_THREADS=N with libgomp's default wait policy (spin a while, then sleep);
* `passive`: OMP_WAIT_POLICY=PASSIVE (waiting threads sleep at once);
* `short_spin`: GOMP_SPINCOUNT=10000 (spin ~a few microseconds, then sleep; libgomp's default
  spins 300,000 rounds);
* `pinned`: OMP_PROC_BIND=close, OMP_PLACES=cores (each thread stays on its core).
Each setting runs in its own process (OpenMP reads its environment once, at start-up); settings
alternate within each round so load drifts hit all alike. `competitor`: "none", or "busy" = one
process spinning on one core, started and stopped here (like an encode, an HTTP burst, another
replica or a neighbour's test run). The load average is printed with each block.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

HIDDEN, INTERMEDIATE = 1024, 3072
#: The 7 projections of one 0.6B decoder layer: (out_features, in_features).
SHAPES = [
    (2048, HIDDEN),
    (1024, HIDDEN),
    (1024, HIDDEN),
    (HIDDEN, 2048),
    (INTERMEDIATE, HIDDEN),
    (INTERMEDIATE, HIDDEN),
    (HIDDEN, INTERMEDIATE),
]


def _settings(cores: int) -> dict[str, dict[str, str]]:
    base = {"TORCH_THREADS": str(cores)}
    settings = {f"t{cores}": base, "t1": {"TORCH_THREADS": "1"}}
    settings["passive"] = base | {"OMP_WAIT_POLICY": "PASSIVE"}
    settings["short_spin"] = base | {"GOMP_SPINCOUNT": "10000"}
    settings["pinned"] = base | {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}
    return settings


def worker(layers: int, reps: int) -> dict[str, float]:
    """Runs in a child process: time `reps` passes over `layers` layers of prepacked GEMVs."""
    import torch

    torch.set_num_threads(int(os.environ["TORCH_THREADS"]))
    torch.manual_seed(0)
    packed = [
        [
            torch.ops.mkldnn._reorder_linear_weight((torch.randn(shape) * 0.02).bfloat16(), 1)
            for shape in SHAPES
        ]
        for _ in range(layers)
    ]
    inputs = {size: torch.randn(1, size).bfloat16() for size in (HIDDEN, 2048, INTERMEDIATE)}

    def one_pass() -> None:
        for layer in packed:
            for (_, in_features), weight in zip(SHAPES, layer, strict=True):
                torch.ops.mkldnn._linear_pointwise(
                    inputs[in_features], weight, None, "none", [], ""
                )

    one_pass()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        one_pass()
        times.append((time.perf_counter() - started) / layers * 1000)
    return {"median_ms": statistics.median(times), "min_ms": min(times)}


def _run_worker(env: dict[str, str], layers: int, reps: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", f"--layers={layers}", f"--reps={reps}"]
    done = subprocess.run(
        command, env=os.environ | env, capture_output=True, text=True, check=True, timeout=300
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _busy() -> subprocess.Popen[bytes]:
    """One process spinning on one core for at most 10 minutes (ended by `run` before that)."""
    code = "import time\nend = time.time() + 600\nwhile time.time() < end: pass"
    return subprocess.Popen([sys.executable, "-c", code])


def run(rounds: int, layers: int, reps: int) -> dict[str, Any]:
    cores = len(os.sched_getaffinity(0))
    settings = _settings(cores)
    result: dict[str, Any] = {"cores": cores, "layers": layers, "reps": reps, "unit": "ms/layer"}
    for competitor in ("none", "busy"):
        process = _busy() if competitor == "busy" else None
        try:
            time.sleep(1.0 if process else 0.0)
            load_before = os.getloadavg()[0]
            samples: dict[str, list[float]] = {name: [] for name in settings}
            for _ in range(rounds):
                for name, env in settings.items():
                    samples[name].append(_run_worker(env, layers, reps)["median_ms"])
            block: dict[str, Any] = {
                name: {
                    "median_ms": round(statistics.median(ms), 3),
                    "runs": [round(x, 3) for x in ms],
                }
                for name, ms in samples.items()
            }
            reference = block[f"t{cores}"]["median_ms"]
            for name in settings:
                block[name]["vs_default"] = round(block[name]["median_ms"] / reference, 2)
            block["loadavg"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        finally:
            if process is not None:
                process.kill()
                process.wait()
        result[competitor] = block
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.layers, args.reps)))
        return
    print(json.dumps(run(args.rounds, args.layers, args.reps), indent=1))


if __name__ == "__main__":
    main()
