"""Where the model files live: local directories of the three variants, complete or not,
downloaded from the Hub only when allowed.

Kept apart from the model code because the CLI (`models list`) and the tiny-model builder ask
the same questions without loading torch models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from qwen3_tts_server.engine.base import ModelsMissing

log = logging.getLogger(__name__)

FIX_HINT = (
    "set MODELS_DIR to a directory that holds the models, run `qwen3-tts-server models "
    "download`, or run `make demo` for the offline tiny models"
)


@dataclass(frozen=True)
class ModelPaths:
    """Local directories of the three model variants (each a Hugging Face repo snapshot)."""

    base: Path
    voice_design: Path | None = None
    custom_voice: Path | None = None


def is_complete_model_dir(path: Path) -> bool:
    """Configs and weights of both the model and its speech tokenizer: an interrupted download
    is never taken for a model."""
    speech = path / "speech_tokenizer"
    return (
        (path / "config.json").is_file()
        and (speech / "config.json").is_file()
        and any(path.glob("*.safetensors"))
        and any(speech.glob("*.safetensors"))
    )


def local_model_dir(models_dir: Path, repo: str) -> Path:
    """Where a repo lives: itself when it names a local model directory, else models_dir/<name>."""
    as_path = Path(repo).expanduser()
    if as_path.is_dir() and is_complete_model_dir(as_path):
        return as_path
    return models_dir / repo.rstrip("/").rsplit("/", 1)[-1]


def resolve_model_paths(
    models_dir: str | Path,
    *,
    base_repo: str,
    voice_design_repo: str | None = None,
    custom_voice_repo: str | None = None,
    allow_download: bool = False,
    hf_token: str | None = None,
) -> ModelPaths:
    """Local paths of the configured models, downloading missing ones when allowed.

    A repo id such as "Qwen/Qwen3-TTS-12Hz-1.7B-Base" lives in models_dir/Qwen3-TTS-12Hz-1.7B-Base;
    a blank or None optional repo is simply not loaded. Raises ModelsMissing naming every missing
    model and what to do about it.
    """
    root = Path(models_dir).expanduser()
    wanted = {
        "base": base_repo,
        "voice_design": voice_design_repo,
        "custom_voice": custom_voice_repo,
    }
    found: dict[str, Path] = {}
    problems: list[str] = []
    for role, repo in wanted.items():
        if not repo or not repo.strip():
            continue
        path = local_model_dir(root, repo.strip())
        if not is_complete_model_dir(path):
            if not allow_download:
                problems.append(f"{repo} is not in {path} (downloads are disabled)")
                continue
            try:
                _download(repo.strip(), path, hf_token)
            except Exception as exc:  # network, auth, disk: all end in the same advice
                reason = str(exc).strip().rstrip(".")
                problems.append(f"{repo} could not be downloaded to {path}: {reason}")
                continue
            if not is_complete_model_dir(path):
                problems.append(f"{repo} was downloaded to {path} but is incomplete")
                continue
        found[role] = path
    if problems:
        raise ModelsMissing("models missing: " + "; ".join(problems) + ". To fix: " + FIX_HINT)
    return ModelPaths(
        base=found["base"],
        voice_design=found.get("voice_design"),
        custom_voice=found.get("custom_voice"),
    )


def _download(repo: str, path: Path, token: str | None) -> None:
    from huggingface_hub import snapshot_download

    log.info("downloading %s to %s", repo, path)
    path.mkdir(parents=True, exist_ok=True)
    snapshot_download(repo_id=repo, local_dir=str(path), token=token)
