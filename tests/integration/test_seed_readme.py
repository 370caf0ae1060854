"""The original README's curl examples, as written, against our server on a real port.

`curl` and `python` are real programs here; the model is the tiny real-architecture one.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from support import ADMIN_TOKEN, run_seed_flow

from conftest import LiveServer
from qwen3_tts_server.engine.base import Engine

pytestmark = pytest.mark.needs(shutil.which("curl") is not None, "curl is not installed")


def test_seed_readme_examples_work_as_written(
    live_server: Callable[..., LiveServer], engine: Engine, tmp_path: Path
) -> None:
    with live_server(lambda: engine) as server:
        server.wait_ready()
        run_seed_flow(server.url, ADMIN_TOKEN, tmp_path / "client")
