"""Secrets: never a default, generated once, kept owner-only, stable across restarts."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from qwen3_tts_server.config import Settings, resolve_secrets
from qwen3_tts_server.security import is_well_formed_token, same_secret


def test_generated_secrets_persist_with_owner_only_permissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("HMAC_SECRET", raising=False)
    first = resolve_secrets(Settings(data_dir=tmp_path))
    assert first.admin_token is not None and first.hmac_secret is not None
    admin = first.admin_token.get_secret_value()
    hmac_secret = first.hmac_secret.get_secret_value()
    assert len(admin) >= 40 and admin != hmac_secret
    for name in ("admin_token", "hmac_secret"):
        mode = stat.S_IMODE((tmp_path / "secrets" / name).stat().st_mode)
        assert mode == 0o600, oct(mode)

    again = resolve_secrets(Settings(data_dir=tmp_path))
    assert again.admin_token is not None and again.hmac_secret is not None
    assert again.admin_token.get_secret_value() == admin
    assert again.hmac_secret.get_secret_value() == hmac_secret


def test_configured_secrets_win_and_blank_ones_count_as_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "from-the-environment-123")
    monkeypatch.setenv("HMAC_SECRET", "  ")
    settings = resolve_secrets(Settings(data_dir=tmp_path))
    assert settings.admin_token is not None and settings.hmac_secret is not None
    assert settings.admin_token.get_secret_value() == "from-the-environment-123"
    assert settings.hmac_secret.get_secret_value().strip()
    assert not (tmp_path / "secrets" / "admin_token").exists()
    assert (tmp_path / "secrets" / "hmac_secret").exists()


@pytest.mark.parametrize(
    ("given", "expected", "match"),
    [
        ("abc", "abc", True),
        ("abc", "abd", False),
        ("", "", False),
        (" ", " ", False),
        ("\u00a0", "", False),
        ("t\u00e9st", "t\u00e9st", False),
        ("tab\there", "tab\there", False),
    ],
)
def test_same_secret(given: str, expected: str, match: bool) -> None:
    assert same_secret(given, expected) is match


def test_well_formed_tokens_are_printable_ascii() -> None:
    assert is_well_formed_token("Abc-_123")
    assert not is_well_formed_token("")
    assert not is_well_formed_token("a b")
    assert not is_well_formed_token("\x85")
