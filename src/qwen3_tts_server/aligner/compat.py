"""Import qwen_asr without the floating-point side effect of one of its dependencies.

qwen-asr imports nagisa (its Japanese word splitter) at module level, and nagisa's DyNet
library is compiled with -ffast-math: loading it turns on flush-to-zero and
denormals-are-zero on the loading thread (and on the threads it starts later), so every
subnormal float that thread computes afterwards, in numpy or torch, silently becomes 0. Here
the import runs with the thread's floating-point environment saved before and restored after
(C99 fegetenv/fesetenv, which cover the SSE control register on x86), so the process computes
as it did. Where libm cannot be found the import simply runs.

Nothing happens when this module is imported; the first `import_qwen_asr()` does the work.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib
import sys
import threading
from collections.abc import Iterator
from types import ModuleType

_lock = threading.Lock()
#: Larger than fenv_t on every platform glibc supports (32 bytes on x86-64).
_FENV_BYTES = 256


@contextlib.contextmanager
def floating_point_environment_kept() -> Iterator[None]:
    """Whatever runs inside cannot change this thread's floating-point environment."""
    name = ctypes.util.find_library("m")
    if name is None:
        yield
        return
    libm = ctypes.CDLL(name)
    saved = ctypes.create_string_buffer(_FENV_BYTES)
    if libm.fegetenv(saved) != 0:
        yield
        return
    try:
        yield
    finally:
        libm.fesetenv(saved)


def import_qwen_asr() -> ModuleType:
    """Return the `qwen_asr` package, importing it on first use (a few seconds: nagisa loads
    its model) with the floating-point environment kept."""
    with _lock:
        loaded = sys.modules.get("qwen_asr")
        if loaded is not None:
            return loaded
        with floating_point_environment_kept():
            return importlib.import_module("qwen_asr")
