"""The layering rules of docs/architecture.md, checked on the source with `ast` (no tools).

Every import counts, at any depth (inside functions and `if TYPE_CHECKING:` blocks too): a
lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = "qwen3_tts_server"
SOURCE = Path(__file__).resolve().parents[2] / "src" / PACKAGE

#: (layer, forbidden import prefixes, why)
RULES: list[tuple[str, tuple[str, ...], str]] = [
    (
        "api",
        (f"{PACKAGE}.db", f"{PACKAGE}.engine", f"{PACKAGE}.storage", f"{PACKAGE}.aligner"),
        "routes reach tables, storage and the models only through services",
    ),
    ("audio", (f"{PACKAGE}.engine",), "audio shares value types through values.py"),
    (
        "engine",
        (f"{PACKAGE}.aligner",),
        "the step loop knows nothing of word timestamps (they run on the aligner's thread)",
    ),
    *[
        (
            layer,
            (f"{PACKAGE}.services", f"{PACKAGE}.api"),
            "lower layers never import the layers above them",
        )
        for layer in ("engine", "aligner", "db", "storage", "audio")
    ],
    (
        "services",
        ("fastapi", "starlette"),
        "services know nothing of HTTP (use services.threads.in_thread)",
    ),
]


def imported_modules(code: str, package: str) -> set[str]:
    """Every module `code` (a module of `package`) imports, as absolute dotted names."""
    tree = ast.parse(code)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def violations(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((SOURCE / layer).rglob("*.py")):
        package = ".".join((PACKAGE, *path.relative_to(SOURCE).parent.parts))
        for module in sorted(imported_modules(path.read_text(encoding="utf-8"), package)):
            if any(module == bad or module.startswith(f"{bad}.") for bad in forbidden):
                found.append(f"{path.relative_to(SOURCE)} imports {module}")
    return found


@pytest.mark.parametrize(("layer", "forbidden", "why"), RULES, ids=[rule[0] for rule in RULES])
def test_layer_imports(layer: str, forbidden: tuple[str, ...], why: str) -> None:
    assert (SOURCE / layer).is_dir()
    assert violations(layer, forbidden) == [], why


def test_the_checker_sees_every_kind_of_import() -> None:
    """Plain, from, relative and function-level imports are all found (else the rules above
    could pass by not looking)."""
    code = (
        "import starlette.concurrency\n"
        "from . import sibling\n"
        "from ..db.models import Voice\n"
        "def lazy():\n"
        "    from qwen3_tts_server.engine import base\n"
    )
    assert imported_modules(code, f"{PACKAGE}.services") >= {
        "starlette.concurrency",
        f"{PACKAGE}.services.sibling",
        f"{PACKAGE}.db.models",
        f"{PACKAGE}.engine.base",
    }


CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python" / "src" / "qwen3_tts_client"
#: What the client may import beyond the standard library: its declared dependencies
#: (clients/python/pyproject.toml) and typing_extensions for the type checker only.
CLIENT_ALLOWED = {"qwen3_tts_client", "httpx", "websockets", "typing_extensions"}


def test_the_client_imports_only_the_standard_library_httpx_and_websockets() -> None:
    """The client installs without the server's dependencies (torch, numpy, fastapi, ...)."""
    found = []
    for path in sorted(CLIENT.rglob("*.py")):
        for module in imported_modules(path.read_text(encoding="utf-8"), "qwen3_tts_client"):
            top = module.split(".")[0]
            if top and top not in CLIENT_ALLOWED and top not in sys.stdlib_module_names:
                found.append(f"{path.name} imports {module}")
    assert found == []
