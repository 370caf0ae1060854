"""Import qwen_tts on machines where its unused optional dependencies cannot load.

`qwen_tts/__init__` eagerly imports the unreleased 25 Hz tokenizer, which imports
`torchaudio.compliance.kaldi`, `sox` and `onnxruntime` at module level. None of them is used by
the released 12 Hz models, and PyPI's torchaudio is a CUDA build that cannot even load beside a
CPU torch. So: for each of those modules that genuinely fails to import, an inert placeholder
stands in *only while qwen_tts is being imported*; where the real modules import, nothing is
replaced. The placeholders are taken out of `sys.modules` again afterwards, so later code that
imports torchaudio gets the honest ImportError instead of a fake module.

The 25 Hz module also prints a flash-attn banner to stdout on import; it is dropped here, every
other line printed during the import is passed through.

Nothing happens when this module is imported; the work is done by the first call of
`import_qwen_tts()`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import io
import re
import sys
import threading
from collections.abc import Iterator
from types import ModuleType

#: Modules the 25 Hz tokenizer imports at module level. Each tuple is one import chain.
_OPTIONAL_CHAINS: tuple[tuple[str, ...], ...] = (
    ("torchaudio", "torchaudio.compliance", "torchaudio.compliance.kaldi"),
    ("sox",),
    ("onnxruntime",),
)

_BANNER = re.compile(
    r"\n?\*+\nWarning: flash-attn is not installed\.[^\n]*\n\*+\n ?\n?", re.MULTILINE
)

_lock = threading.Lock()


class _Placeholder(ModuleType):
    """Stands in for a module that cannot load; any use says why instead of failing obscurely."""

    def __getattr__(self, attr: str) -> object:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise AttributeError(
            f"{self.__name__} is not available in this environment (only qwen-tts's unreleased "
            f"25 Hz tokenizer needs it); tried to use {self.__name__}.{attr}"
        )


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except Exception:  # OSError from a CUDA-only extension, ImportError, anything else
        return False
    return True


def _forget(root: str) -> None:
    """Drop a half-imported package (a failed import can leave parents in sys.modules)."""
    for key in [k for k in sys.modules if k == root or k.startswith(root + ".")]:
        del sys.modules[key]


@contextlib.contextmanager
def _placeholders_for_missing() -> Iterator[None]:
    installed: list[str] = []
    for chain in _OPTIONAL_CHAINS:
        if _importable(chain[-1]):
            continue
        _forget(chain[0])
        parent: ModuleType | None = None
        for name in chain:
            module = _Placeholder(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules[name] = module
            installed.append(name)
            if parent is not None:
                setattr(parent, name.rsplit(".", 1)[1], module)
            parent = module
    try:
        yield
    finally:
        for name in installed:
            if isinstance(sys.modules.get(name), _Placeholder):
                del sys.modules[name]


@contextlib.contextmanager
def _without_flash_attn_banner() -> Iterator[None]:
    captured = io.StringIO()
    real_stdout = sys.stdout
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        rest = _BANNER.sub("", captured.getvalue())
        if rest:
            real_stdout.write(rest)


def import_qwen_tts() -> ModuleType:
    """Return the `qwen_tts` package, importing it on first use (costs ~3 s)."""
    with _lock:
        loaded = sys.modules.get("qwen_tts")
        if loaded is not None:
            return loaded
        with _placeholders_for_missing(), _without_flash_attn_banner():
            return importlib.import_module("qwen_tts")
