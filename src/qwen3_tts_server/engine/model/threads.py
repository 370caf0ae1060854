"""How many threads torch's CPU kernels use (TORCH_THREADS), set once when the engine starts.

Why a setting: a frame is ~500 small GEMVs, each an OpenMP parallel region that waits for its
slowest thread. Torch's default is the number of physical cores it finds, which in a container
can exceed the CPUs the process may actually use; the default here is the CPUs this process
may run on (its affinity mask). Fewer threads leave cores for encoding and HTTP work or for
another replica. bench/threads.py measures the settings beside a busy process; with libgomp's
default wait policy, one busy process on a 2-core machine made 2-thread GEMVs ~30x slower
(README "Speed": set OMP_WAIT_POLICY=PASSIVE where cores are shared).
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def available_cpus() -> int:
    """CPUs this process may run on (respects taskset and cpusets), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def apply_torch_threads(requested: int | None) -> int:
    """Set torch's intra-op threads to `requested` (None: `available_cpus()`); returns it."""
    threads = requested or available_cpus()
    torch.set_num_threads(threads)
    log.info(
        "torch threads: %d (OMP_WAIT_POLICY=%s)",
        threads,
        os.environ.get("OMP_WAIT_POLICY", "unset"),
    )
    return threads
