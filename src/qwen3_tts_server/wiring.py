"""From settings to a model loader: which directories, download or not, real or tiny models.

Resolution (and any download) happens in the CLI before the server starts, so a missing model
is a clear message at once rather than a server that never becomes ready. Loading the weights
happens later, in the background, through the returned loader.
"""

from __future__ import annotations

from pathlib import Path

from qwen3_tts_server.aligner.files import aligner_dir, resolve_aligner_dir
from qwen3_tts_server.aligner.model import ForcedAligner
from qwen3_tts_server.composition import AlignerLoader, EngineLoader
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
    found = {
        role: (repo, local_model_dir(settings.models_dir, repo.strip()))
        for role, repo in _repos(settings).items()
        if repo.strip()
    }
    if settings.model_aligner_repo.strip():
        repo = settings.model_aligner_repo.strip()
        found["aligner"] = (repo, aligner_dir(settings.models_dir, repo))
    return found


def resolve_paths(settings: Settings) -> ModelPaths:
    """Local model directories, downloading missing ones when ALLOW_DOWNLOAD (ModelsMissing)."""
    return resolve_model_paths(
        settings.models_dir,
        base_repo=settings.model_base_repo,
        voice_design_repo=settings.model_voicedesign_repo,
        custom_voice_repo=settings.model_custom_repo,
        allow_download=settings.allow_download,
        hf_token=_token(settings),
    )


def _token(settings: Settings) -> str | None:
    return settings.hf_token.get_secret_value() if settings.hf_token else None


def resolve_aligner(settings: Settings) -> Path | None:
    """The aligner's directory (downloaded when missing and ALLOW_DOWNLOAD), None when
    MODEL_ALIGNER_REPO is empty (ModelsMissing when it cannot be had)."""
    repo = settings.model_aligner_repo.strip()
    if not repo:
        return None
    return resolve_aligner_dir(
        settings.models_dir,
        repo,
        allow_download=settings.allow_download,
        hf_token=_token(settings),
    )


def aligner_loader(settings: Settings) -> AlignerLoader | None:
    """Resolve the aligner now; return a function that loads it on the engine's device
    (None: timestamps are off)."""
    path = resolve_aligner(settings)
    if path is None:
        return None

    def load() -> ForcedAligner:
        return ForcedAligner.load(path, device=settings.device, dtype=settings.dtype)

    return load


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
        slots = settings.engine_slots(stock.info().device)
        return StepEngine(
            stock,
            quant=settings.quant,
            rows=slots + settings.engine_reserve_slots,
            context=settings.engine_max_context,
        )

    return load


def tiny_model_settings(settings: Settings) -> Settings:
    """Settings pointing at tiny offline models under DATA_DIR, built on first use (the
    aligner too, unless MODEL_ALIGNER_REPO is empty)."""
    from qwen3_tts_server.aligner.tiny import cached_aligner
    from qwen3_tts_server.engine.model.tiny import VARIANTS, make_tiny_models

    root = settings.data_dir / TINY_MODELS_SUBDIR
    if not all((root / variant / "config.json").is_file() for variant in VARIANTS):
        make_tiny_models(root)
    aligner = str(cached_aligner(root / "aligner")) if settings.model_aligner_repo.strip() else ""
    return settings.model_copy(
        update={
            "models_dir": root,
            "model_base_repo": str(root / "base"),
            "model_voicedesign_repo": str(root / "voice_design"),
            "model_custom_repo": str(root / "custom_voice"),
            "model_aligner_repo": aligner,
            "allow_download": False,
            "max_frames": min(settings.max_frames, TINY_MAX_FRAMES),
        }
    )
