"""Blocking work (database, encoding, decoding) off the event loop, without a web framework.

Services run under FastAPI but must not import it (or Starlette): this is anyio's thread pool,
which is what Starlette's `run_in_threadpool` uses underneath.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import anyio.to_thread

P = ParamSpec("P")
T = TypeVar("T")


async def in_thread(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `func(*args, **kwargs)` on a worker thread and await its result."""
    return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))
