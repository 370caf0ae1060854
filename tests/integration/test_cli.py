"""The `qwen3-tts-server` command: db, admin, models and serve, on real files in tmp_path.

Most commands run in-process through typer's CliRunner with the environment set by monkeypatch;
the console entry itself (`python -m qwen3_tts_server`) runs as a real subprocess where what is
checked is the process: its exit code, its output, how long it takes to give up.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from support import ADMIN_TOKEN, AppFactory, admin_headers, reference_audio
from typer.testing import CliRunner, Result

import qwen3_tts_server.observability
import qwen3_tts_server.wiring
from qwen3_tts_server.cli import app
from qwen3_tts_server.config import Settings

#: The secret the CLI gets from the environment; apps under test are built with the same one.
HMAC_SECRET = "cli-test-hmac-secret-0123456789abcdef"
BASE_REPO = "Qwen/Qwen3-TTS-12Hz-1.7B-Base"
VOICEDESIGN_REPO = "Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign"
TABLES = {
    "alembic_version",
    "users",
    "api_keys",
    "invites",
    "audio_blobs",
    "voices",
    "batches",
    "generations",
    "runtime_stats",
}
#: Every environment variable Settings reads: none may leak in from the shell running the tests.
SETTINGS_ENV = [name.upper() for name in Settings.model_fields]
#: A generous bound for a command that must give up at once rather than load or download.
FAST_SECONDS = 60


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean environment: DATA_DIR (not created yet), an empty MODELS_DIR, no downloads."""
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("DATA_DIR", str(data))
    monkeypatch.setenv("MODELS_DIR", str(models))
    monkeypatch.setenv("ALLOW_DOWNLOAD", "0")
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("HMAC_SECRET", HMAC_SECRET)
    return data


def cli(*args: str) -> Result:
    """Run the CLI in-process; unexpected exceptions propagate (typer.Exit becomes exit_code)."""
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def cli_json(*args: str) -> Any:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def run_module(*args: str, timeout: float = FAST_SECONDS) -> subprocess.CompletedProcess[str]:
    """`python -m qwen3_tts_server ARGS` in a real process; it inherits the monkeypatched env.

    A command still running after `timeout` seconds fails the test: every command run here must
    end by itself (a server that starts instead of refusing to would run forever).
    """
    try:
        return subprocess.run(
            [sys.executable, "-m", "qwen3_tts_server", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"`{' '.join(args)}` did not exit within {timeout:g} s: {expired.stderr!r}")


def bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def exchange(client: TestClient, code: str) -> str:
    response = client.post("/auth/exchange-invite", json={"invite_code": code})
    assert response.status_code == 200, response.text
    api_key: str = response.json()["api_key"]
    return api_key


def new_cli_user(client: TestClient) -> tuple[int, str]:
    """A user created and invited through the CLI, its key exchanged over HTTP."""
    user_id: int = cli_json("admin", "create-user")["user_id"]
    code = cli_json("admin", "invite", str(user_id))["invite_code"]
    return user_id, exchange(client, code)


def clone_status(client: TestClient, api_key: str, transcript: str) -> int:
    response = client.post(
        "/clonevoice",
        headers=bearer(api_key),
        data={"name": "mine", "transcript": transcript, "language": "English"},
        files={"file": ("ref.wav", reference_audio())},
    )
    return response.status_code


# -- db --------------------------------------------------------------------------------------------
def test_db_upgrade_creates_the_schema_in_a_fresh_sqlite_file(data_dir: Path) -> None:
    assert not data_dir.exists()
    for _ in range(2):  # the second run finds everything in place
        result = cli("db", "upgrade")
        assert result.exit_code == 0, result.output
        assert "database is up to date" in result.stdout
    with sqlite3.connect(data_dir / "db.sqlite3") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables >= TABLES


def test_db_upgrade_follows_database_url(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere" / "server.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{elsewhere}")
    assert cli("db", "upgrade").exit_code == 0
    assert not (data_dir / "db.sqlite3").exists()
    with sqlite3.connect(elsewhere) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables >= TABLES


# -- admin -----------------------------------------------------------------------------------------
def test_cli_user_and_invite_give_a_working_key_with_quota_and_usage(
    data_dir: Path, make_client: AppFactory
) -> None:
    created = cli("admin", "create-user", "--name", "x", "--quota", "5")
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout) == {"user_id": 1}
    invite = cli_json("admin", "invite", "1", "--hours", "2")
    assert invite["expires_hours"] == 2 and len(invite["invite_code"]) >= 16

    # No clone minimum here, so that a 4-character transcript costs 4 tokens.
    client = make_client(data_dir=data_dir, hmac_secret=HMAC_SECRET, clone_min_tokens=0)
    api_key = exchange(client, invite["invite_code"])
    usage = client.get("/usage", headers=bearer(api_key))
    assert usage.status_code == 200 and usage.json()["tokens_used_total"] == 0
    # The quota set on the command line holds over HTTP, checked before the model is needed:
    # 4 tokens fit in 5 (and reach the model, absent here), 6 do not.
    assert clone_status(client, api_key, "Hey.") == 503
    assert clone_status(client, api_key, "Hello!") == 402

    [user] = cli_json("admin", "list-users")
    assert user["user_id"] == 1 and user["name"] == "x" and user["token_quota"] == 5
    assert user["is_active"] is True and user["created_at"]
    assert user["usage"] == usage.json()


def test_disable_enable_list_keys_and_revoke_take_effect_over_http(
    data_dir: Path, make_client: AppFactory
) -> None:
    client = make_client(data_dir=data_dir, hmac_secret=HMAC_SECRET)
    user_id, api_key = new_cli_user(client)
    headers = bearer(api_key)
    assert client.get("/usage", headers=headers).status_code == 200

    assert cli_json("admin", "disable", str(user_id)) == {"user_id": user_id, "status": "disabled"}
    refused = client.get("/usage", headers=headers)
    assert refused.status_code == 403 and refused.json()["detail"] == "User disabled"
    [listed] = cli_json("admin", "list-users")
    assert listed["is_active"] is False

    assert cli_json("admin", "enable", str(user_id)) == {"user_id": user_id, "status": "enabled"}
    assert client.get("/usage", headers=headers).status_code == 200

    [key] = cli_json("admin", "list-keys", str(user_id))
    assert key["key_prefix"] == api_key[:8] and api_key not in json.dumps(key)
    assert key["revoked_at"] is None and key["last_used_at"] is not None

    revoked = cli_json("admin", "revoke-key", str(user_id), str(key["key_id"]))
    assert revoked == {"key_id": key["key_id"], "status": "revoked"}
    refused = client.get("/usage", headers=headers)
    assert refused.status_code == 403 and refused.json()["detail"] == "Invalid or revoked API key"
    [key] = cli_json("admin", "list-keys", str(user_id))
    assert key["revoked_at"] is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["invite", "99"], "User not found"),
        (["disable", "99"], "User not found"),
        (["enable", "99"], "User not found"),
        (["list-keys", "99"], "User not found"),
        (["revoke-key", "1", "99"], "API key not found"),
        (["invite", "1", "--hours", "0"], "expires_hours must be between 1 and 720"),
        (["invite", "1", "--hours", "721"], "expires_hours must be between 1 and 720"),
    ],
)
@pytest.mark.usefixtures("data_dir")
def test_admin_errors_exit_non_zero_with_a_clear_message(args: list[str], message: str) -> None:
    assert cli_json("admin", "create-user") == {"user_id": 1}
    result = cli("admin", *args)
    assert result.exit_code == 1
    assert message in result.stderr and result.stdout == ""


def test_revoking_another_users_key_is_refused(data_dir: Path, make_client: AppFactory) -> None:
    client = make_client(data_dir=data_dir, hmac_secret=HMAC_SECRET)
    owner, api_key = new_cli_user(client)
    other, _ = new_cli_user(client)
    [key] = cli_json("admin", "list-keys", str(owner))
    result = cli("admin", "revoke-key", str(other), str(key["key_id"]))
    assert result.exit_code == 1 and "API key not found" in result.stderr
    assert client.get("/usage", headers=bearer(api_key)).status_code == 200


def test_negative_quota_is_a_usage_error(data_dir: Path) -> None:
    result = cli("admin", "create-user", "--quota", "-1")
    assert result.exit_code == 2 and "--quota" in result.output
    assert not (data_dir / "db.sqlite3").exists()


def test_generated_secrets_are_shared_with_a_later_server(
    data_dir: Path, make_client: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ADMIN_TOKEN")
    monkeypatch.delenv("HMAC_SECRET")
    created = run_module("admin", "create-user", "--name", "sub")
    assert created.returncode == 0, created.stderr
    user_id = json.loads(created.stdout)["user_id"]
    invited = run_module("admin", "invite", str(user_id))
    assert invited.returncode == 0, invited.stderr
    code = json.loads(invited.stdout)["invite_code"]

    secrets_dir = data_dir / "secrets"
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    for name in ("hmac_secret", "admin_token"):
        assert stat.S_IMODE((secrets_dir / name).stat().st_mode) == 0o600
        assert len((secrets_dir / name).read_text().strip()) >= 32

    # A server with no secrets configured reads the same files: the CLI's invite is valid there,
    # and the generated admin token is the one it accepts.
    client = make_client(data_dir=data_dir, hmac_secret=None, admin_token=None)
    api_key = exchange(client, code)
    assert client.get("/usage", headers=bearer(api_key)).status_code == 200
    token = (secrets_dir / "admin_token").read_text().strip()
    [user] = client.get("/admin/users", headers=admin_headers(token)).json()
    assert user["name"] == "sub"


# -- models ----------------------------------------------------------------------------------------
@pytest.mark.usefixtures("data_dir")
def test_make_tiny_builds_models_that_list_and_resolve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "tiny"
    built = cli_json("models", "make-tiny", str(out))
    variants = ("base", "custom_voice", "voice_design")
    assert built == {"models": [str(out / name) for name in ("aligner", *variants)]}
    for name in variants:
        assert (out / name / "config.json").is_file()
        assert (out / name / "speech_tokenizer" / "config.json").is_file()
    assert (out / "aligner" / "preprocessor_config.json").is_file()

    monkeypatch.setenv("MODELS_DIR", str(out))
    monkeypatch.setenv("MODEL_BASE_REPO", "base")
    monkeypatch.setenv("MODEL_VOICEDESIGN_REPO", "voice_design")
    monkeypatch.setenv("MODEL_CUSTOM_REPO", "custom_voice")
    monkeypatch.setenv("MODEL_ALIGNER_REPO", "aligner")
    listed = cli_json("models", "list")
    assert listed == {
        role: {"repo": role, "path": str(out / role), "present": True}
        for role in ("base", "voice_design", "custom_voice", "aligner")
    }
    # Already there: `models download` only reports the paths, even with downloads disabled.
    resolved = cli_json("models", "download")
    assert resolved == {role: str(out / role) for role in (*variants, "aligner")}


@pytest.mark.usefixtures("data_dir")
def test_models_list_reports_missing_and_incomplete_models(tmp_path: Path) -> None:
    models = tmp_path / "models"
    listed = cli_json("models", "list")
    assert listed == {
        "base": {
            "repo": BASE_REPO,
            "path": str(models / "Qwen3-TTS-12Hz-1.7B-Base"),
            "present": False,
        },
        "voice_design": {
            "repo": VOICEDESIGN_REPO,
            "path": str(models / "Qwen3-TTS-12Hz-1.7B-VoiceDesign"),
            "present": False,
        },
        "aligner": {
            "repo": "Qwen/Qwen3-ForcedAligner-0.6B",
            "path": str(models / "Qwen3-ForcedAligner-0.6B"),
            "present": False,
        },
    }
    # An interrupted download leaves some files behind: still not a usable model.
    partial = models / "Qwen3-TTS-12Hz-1.7B-Base"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    assert cli_json("models", "list")["base"]["present"] is False


@pytest.mark.usefixtures("data_dir")
def test_models_download_when_disabled_fails_fast_with_advice(tmp_path: Path) -> None:
    started = time.monotonic()
    result = cli("models", "download")
    assert time.monotonic() - started < 10  # in-process: nothing to import, nothing to fetch
    assert result.exit_code == 3 and result.stdout == ""
    message = result.stderr
    for part in (BASE_REPO, VOICEDESIGN_REPO, "downloads are disabled", "MODELS_DIR"):
        assert part in message
    assert "qwen3-tts-server models download" in message and "make demo" in message
    assert list((tmp_path / "models").iterdir()) == []


# -- serve -----------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _must_not_run(*args: object, **kwargs: object) -> None:
    raise AssertionError("serve went past its checks")


def test_serve_refuses_several_workers_before_loading_anything(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKERS", "2")
    monkeypatch.setattr(qwen3_tts_server.observability, "configure_logging", lambda *a: None)
    monkeypatch.setattr(qwen3_tts_server.wiring, "engine_loader", _must_not_run)
    monkeypatch.setattr(uvicorn, "run", _must_not_run)
    result = cli("serve")
    assert result.exit_code == 2
    assert "WORKERS > 1" in result.stderr and "WORKERS=1" in result.stderr
    assert not data_dir.exists()


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"ALLOW_DOWNLOAD": "0"}, "downloads are disabled"),
        ({"ALLOW_DOWNLOAD": "1", "HF_HUB_OFFLINE": "1"}, "could not be downloaded"),
    ],
    ids=["downloads-disabled", "offline"],
)
@pytest.mark.usefixtures("data_dir")
def test_serve_without_models_exits_with_advice(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    reason: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no cached snapshot to fall back on
    monkeypatch.setenv("HOST", "127.0.0.1")
    monkeypatch.setenv("PORT", str(_free_port()))
    result = run_module("serve")  # fails the test if the server starts instead of exiting
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"models missing: {BASE_REPO}" in result.stderr
    assert reason in result.stderr
    assert "MODELS_DIR" in result.stderr and "make demo" in result.stderr


def test_make_tiny_refuses_an_unknown_size_preset(tmp_path: Path) -> None:
    result = cli("models", "make-tiny", "--dims", "huge", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "--dims must be one of real-0.6b, real-1.7b, tiny" in result.stderr
    assert not (tmp_path / "out").exists()


# -- help ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["serve", "demo", "admin", "models", "db"]),
        (["admin"], ["create-user", "invite", "list-users", "disable", "enable", "list-keys"]),
        (["models"], ["download", "make-tiny", "list"]),
        (["db"], ["upgrade"]),
        (["admin", "revoke-key"], ["user_id", "key_id"]),
        (["models", "make-tiny"], ["out_dir", "--seed", "--dims", "real-0.6b"]),
        (["serve"], ["--host", "--port"]),
        (["demo"], ["--data-dir", "--host", "--port"]),
    ],
)
def test_help(args: list[str], expected: list[str]) -> None:
    result = cli(*args, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    for word in expected:
        assert word in result.stdout


@pytest.mark.parametrize("group", [[], ["admin"], ["models"], ["db"]])
def test_a_group_without_a_command_shows_its_help(group: list[str]) -> None:
    result = cli(*group)
    assert "Usage:" in result.output and "Commands" in result.output


def test_console_entry_runs_as_qwen3_tts_server() -> None:
    result = run_module("--help", timeout=FAST_SECONDS)
    assert result.returncode == 0, result.stderr
    assert "Usage: qwen3-tts-server" in result.stdout
