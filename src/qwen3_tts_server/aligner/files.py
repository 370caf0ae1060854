"""Where the aligner's files live: a local directory, or MODELS_DIR/<repo name>, downloaded
from the Hub only when allowed (the TTS models' rules, engine/model/model_files.py)."""

from __future__ import annotations

import logging
from pathlib import Path

from qwen3_tts_server.engine.base import ModelsMissing

log = logging.getLogger(__name__)

_FIX = (
    "run `qwen3-tts-server models download`, point MODEL_ALIGNER_REPO at a local copy, or set "
    "MODEL_ALIGNER_REPO= (empty) to run without word timestamps"
)


def is_complete_aligner_dir(path: Path) -> bool:
    """Config, weights, tokenizer and feature-extractor files: an interrupted download is
    never taken for an aligner."""
    return all(
        (path / name).is_file()
        for name in ("config.json", "preprocessor_config.json", "tokenizer_config.json")
    ) and any(path.glob("*.safetensors"))


def aligner_dir(models_dir: Path, repo: str) -> Path:
    """Where a repo lives: itself when it names a local aligner directory, else
    models_dir/<last part of the repo id>."""
    as_path = Path(repo).expanduser()
    if as_path.is_dir() and is_complete_aligner_dir(as_path):
        return as_path
    return Path(models_dir).expanduser() / repo.rstrip("/").rsplit("/", 1)[-1]


def resolve_aligner_dir(
    models_dir: Path, repo: str, *, allow_download: bool, hf_token: str | None = None
) -> Path:
    """The aligner's local directory, downloading it when missing and allowed (ModelsMissing
    otherwise, saying what to do)."""
    path = aligner_dir(models_dir, repo.strip())
    if is_complete_aligner_dir(path):
        return path
    if not allow_download:
        raise ModelsMissing(
            f"aligner {repo} is not in {path} (downloads are disabled). To fix: {_FIX}"
        )
    from huggingface_hub import snapshot_download

    log.info("downloading %s to %s", repo, path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        snapshot_download(repo_id=repo.strip(), local_dir=str(path), token=hf_token)
    except Exception as exc:  # network, auth, disk: all end in the same advice
        reason = str(exc).strip().rstrip(".")
        raise ModelsMissing(
            f"aligner {repo} could not be downloaded to {path}: {reason}. To fix: {_FIX}"
        ) from exc
    if not is_complete_aligner_dir(path):
        raise ModelsMissing(f"aligner {repo} was downloaded to {path} but is incomplete")
    return path
