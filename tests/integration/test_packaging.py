"""The installed package (as Docker's `pip install .` makes it) carries its non-Python parts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_holds_migrations_and_static_files(tmp_path: Path) -> None:
    # Built from a copy, in the copy: setuptools keeps a build/ folder in the working
    # directory, and a stale one would hide missing entries (and litter the checkout).
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    command += ["--no-build-isolation", "--wheel-dir", str(tmp_path), str(source)]
    subprocess.run(command, cwd=source, check=True, capture_output=True)
    [wheel] = tmp_path.glob("qwen3_tts_server-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = sorted(REPO.glob("src/qwen3_tts_server/db/migrations/versions/*.py"))
    assert migrations
    for path in migrations:
        assert f"qwen3_tts_server/db/migrations/versions/{path.name}" in names
    for required in (
        "qwen3_tts_server/db/migrations/env.py",
        "qwen3_tts_server/db/migrations/script.py.mako",
        "qwen3_tts_server/static/playground.html",
        "qwen3_tts_server/py.typed",
    ):
        assert required in names, required
