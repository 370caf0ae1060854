"""From settings to a model loader: which directories, download or not, real or tiny models.

Resolution (and any download) happens in the CLI before the server starts, so a missing model
is a clear message at once rather than a server that never becomes ready. Loading the weights
happens later, in the background, through the returned loader.
"""

from __future__ import annotations

from pathlib import Path

from qwen3_tts_server.composition import EngineLoader
from qwen3_tts_server.config import Settings
from qwen3_tts_server.engine.base import Engine
from qwen3_tts_server.engine.model.model_files import (
    ModelPaths,
    local_model_dir,
    resolve_model_paths,
)
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.model.threads import apply_torch_threads
from qwen3_tts_server.engine.step.stepper import StepEngine

#: The tiny offline models live here below DATA_DIR (`make demo`).
TINY_MODELS_SUBDIR = "tiny-models"
#: Frame cap of the tiny models: their random weights often never reach EOS within a text's
#: budget, which the runaway guard treats as a failure. Capped below every text's budget
#: (at least 26 frames), a sentence ends at EOS or is cut at 2 s, as the demo expects.
TINY_MAX_FRAMES = 25


def _repos(settings: Settings) -> dict[str, str]:
    return {
        "base": settings.model_base_repo,
        "voice_design": settings.model_voicedesign_repo,
        "custom_voice": settings.model_custom_repo,
    }


def model_dirs(settings: Settings) -> dict[str, tuple[str, Path]]:
    """Each configured model's repo id and the directory it is expected in."""
    return {
        role: (repo, local_model_dir(settings.models_dir, repo.strip()))
        for role, repo in _repos(settings).items()
        if repo.strip()
    }


def resolve_paths(settings: Settings) -> ModelPaths:
    """Local model directories, downloading missing ones when ALLOW_DOWNLOAD (ModelsMissing)."""
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    return resolve_model_paths(
        settings.models_dir,
        base_repo=settings.model_base_repo,
        voice_design_repo=settings.model_voicedesign_repo,
        custom_voice_repo=settings.model_custom_repo,
        allow_download=settings.allow_download,
        hf_token=token,
    )


def engine_loader(settings: Settings) -> EngineLoader:
    """Resolve the models now; return a function that loads them (called in the background)."""
    paths = resolve_paths(settings)

    def load() -> Engine:
        apply_torch_threads(settings.torch_threads)
        stock = QwenEngine.load(
            paths.base,
            paths.voice_design,
            paths.custom_voice,
            device=settings.device,
            dtype=settings.dtype,
            max_new_tokens_cap=settings.max_frames,
        )
        return StepEngine(
            stock,
            quant=settings.quant,
            rows=settings.engine_max_batch,
            context=settings.engine_max_context,
        )

    return load


def tiny_model_settings(settings: Settings) -> Settings:
    """Settings pointing at tiny offline models under DATA_DIR, built on first use."""
    from qwen3_tts_server.engine.model.tiny import VARIANTS, make_tiny_models

    root = settings.data_dir / TINY_MODELS_SUBDIR
    if not all((root / variant / "config.json").is_file() for variant in VARIANTS):
        make_tiny_models(root)
    return settings.model_copy(
        update={
            "models_dir": root,
            "model_base_repo": str(root / "base"),
            "model_voicedesign_repo": str(root / "voice_design"),
            "model_custom_repo": str(root / "custom_voice"),
            "allow_download": False,
            "max_frames": min(settings.max_frames, TINY_MAX_FRAMES),
        }
    )
