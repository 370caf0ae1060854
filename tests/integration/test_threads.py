"""TORCH_THREADS: the engine's loader sets torch's CPU threads before loading the models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from qwen3_tts_server.config import Settings
from qwen3_tts_server.engine.model.threads import apply_torch_threads, available_cpus
from qwen3_tts_server.wiring import engine_loader


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("restore_threads")
def test_engine_start_applies_torch_threads(tiny_models_dir: Path, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        models_dir=tiny_models_dir,
        model_base_repo="base",
        model_voicedesign_repo="",
        allow_download=False,
        torch_threads=1,
    )
    torch.set_num_threads(2)
    engine_loader(settings)()
    assert torch.get_num_threads() == 1


@pytest.mark.usefixtures("restore_threads")
def test_default_is_the_cpus_this_process_may_use() -> None:
    torch.set_num_threads(1)
    assert apply_torch_threads(None) == available_cpus() == torch.get_num_threads()
    assert available_cpus() == len(os.sched_getaffinity(0))


def test_torch_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        Settings(torch_threads=0)
