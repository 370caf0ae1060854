"""Voice clone prompts as bytes: safetensors tensors plus a small metadata header. No pickle.

A prompt is computed once per voice (speech codes of the reference + a speaker embedding) and
stored in the database, so every later synthesis skips re-encoding the reference audio. What is
stored must be safe to load (safetensors holds raw tensors, nothing executable) and must say
which model made it: a prompt from the 1.7B model (2048-wide embedding) cannot drive the 0.6B
model, and feeding it anyway fails deep inside the model or, worse, speaks in a wrong voice.

All metadata sits in one safetensors metadata entry holding canonical JSON, so the same prompt
always gives the same bytes (safetensors writes several entries in random order).

Loading checks, in order: readable at all → ours and a known version → checksum → made by this
model → structurally sound. The first failure becomes `PromptCorrupt` (the voice must be
recreated) or `PromptMismatch` (made by another model); nothing else ever escapes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from qwen3_tts_server.engine.base import PromptCorrupt, PromptMismatch

FORMAT = "qwen3-tts-server/voice-clone-prompt"
VERSION = 1
_META_KEY = "qwen3_tts_server_prompt"
_MAX_HEADER = 64 * 1024


@dataclass(frozen=True)
class PromptData:
    """The content of a `qwen_tts.VoiceClonePromptItem`, independent of qwen_tts itself.

    `ref_code` is int64 (frames, code groups) in ICL mode and None in x-vector-only mode;
    `spk_embedding` is a 1-D float tensor whose width is the model's hidden size.
    """

    ref_code: torch.Tensor | None
    spk_embedding: torch.Tensor
    x_vector_only: bool
    icl: bool
    ref_text: str | None


def _checksum(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    digest.update(json.dumps(meta, sort_keys=True).encode())
    return digest.hexdigest()


def encode_prompt(prompt: PromptData, model_id: str) -> bytes:
    """Serialise a prompt made by the model identified by `model_id` (see EngineInfo)."""
    tensors = {"spk_embedding": prompt.spk_embedding.detach().to("cpu", torch.float32).contiguous()}
    if prompt.ref_code is not None:
        tensors["ref_code"] = prompt.ref_code.detach().to("cpu", torch.int64).contiguous()
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model_id": model_id,
        "embedding_size": int(tensors["spk_embedding"].shape[-1]),
        "x_vector_only": bool(prompt.x_vector_only),
        "icl": bool(prompt.icl),
        "ref_text": prompt.ref_text,
    }
    meta["checksum"] = _checksum(tensors, meta)
    return save_tensors(tensors, metadata={_META_KEY: json.dumps(meta, sort_keys=True)})


def _read_meta(data: bytes) -> dict[str, Any]:
    """Our metadata from a safetensors header (safetensors.torch.load does not return it)."""
    if len(data) < 8:
        raise PromptCorrupt("prompt data is truncated")
    size = int.from_bytes(data[:8], "little")
    if size > min(_MAX_HEADER, len(data) - 8):
        raise PromptCorrupt("prompt data is truncated or not a prompt")
    try:
        header = json.loads(data[8 : 8 + size])
        meta = json.loads(header["__metadata__"][_META_KEY])
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise PromptCorrupt("data is not a voice clone prompt") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PromptCorrupt("data is not a voice clone prompt")
    if meta.get("version") != VERSION:
        raise PromptCorrupt(f"unsupported prompt format version {meta.get('version')!r}")
    return meta


def decode_prompt(
    data: bytes, *, model_id: str, embedding_size: int, code_groups: int, codebook_size: int
) -> PromptData:
    """Read prompt bytes for the model `model_id` (embedding width, codec groups and codebook).

    Raises PromptCorrupt for anything unreadable and PromptMismatch for another model's prompt.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise PromptCorrupt("prompt data must be bytes")
    data = bytes(data)
    meta = _read_meta(data)
    try:
        tensors = load_tensors(data)
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        raise PromptCorrupt("prompt tensors are unreadable") from exc
    if set(tensors) - {"spk_embedding", "ref_code"} or "spk_embedding" not in tensors:
        raise PromptCorrupt("prompt holds unexpected tensors")
    stated = meta.pop("checksum", None)
    try:
        actual = _checksum(tensors, meta)
    except Exception as exc:  # e.g. a dtype numpy cannot represent
        raise PromptCorrupt("prompt tensors are unreadable") from exc
    if stated != actual:
        raise PromptCorrupt("prompt checksum does not match: the data is damaged")

    if meta.get("model_id") != model_id:
        raise PromptMismatch(
            f"this voice was made by model {meta.get('model_id')!r}, but {model_id!r} is loaded; "
            "recreate the voice with the loaded model"
        )
    embedding = tensors["spk_embedding"]
    if embedding.dim() != 1 or embedding.shape[0] != embedding_size:
        raise PromptMismatch(
            f"this voice has a {list(embedding.shape)} speaker embedding but the loaded model "
            f"needs [{embedding_size}]; recreate the voice with the loaded model"
        )
    return _validated(tensors, meta, embedding, code_groups, codebook_size)


def _validated(
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    embedding: torch.Tensor,
    code_groups: int,
    codebook_size: int,
) -> PromptData:
    x_vector_only, icl, ref_text = meta.get("x_vector_only"), meta.get("icl"), meta.get("ref_text")
    if not isinstance(x_vector_only, bool) or not isinstance(icl, bool) or x_vector_only == icl:
        raise PromptCorrupt("prompt mode flags are inconsistent")
    if ref_text is not None and not isinstance(ref_text, str):
        raise PromptCorrupt("prompt reference text is not text")
    if embedding.dtype != torch.float32 or not bool(torch.isfinite(embedding).all()):
        raise PromptCorrupt("prompt speaker embedding is not finite float32")
    ref_code = tensors.get("ref_code")
    if icl:
        if ref_code is None or not ref_text:
            raise PromptCorrupt("an ICL prompt needs reference codes and text")
        if ref_code.dtype != torch.int64 or ref_code.dim() != 2 or ref_code.shape[0] == 0:
            raise PromptCorrupt("prompt reference codes have the wrong shape or type")
        if ref_code.shape[1] != code_groups:
            raise PromptCorrupt(f"prompt reference codes have {ref_code.shape[1]} groups")
        if int(ref_code.min()) < 0 or int(ref_code.max()) >= codebook_size:
            raise PromptCorrupt("prompt reference codes are outside the codebook")
    elif ref_code is not None:
        raise PromptCorrupt("an x-vector prompt must not carry reference codes")
    return PromptData(
        ref_code=ref_code,
        spk_embedding=embedding,
        x_vector_only=x_vector_only,
        icl=icl,
        ref_text=ref_text,
    )
