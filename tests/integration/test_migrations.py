"""Migrations and ORM models describe the same schema, and upgrades keep the data."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text

from qwen3_tts_server.db.models import Base
from qwen3_tts_server.db.session import make_engine, upgrade


def _drift(engine: Engine) -> list[object]:
    """What autogenerate would write to make the database match the models ([] = nothing)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_sqlite_migrations_match_the_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(engine)
    assert _drift(engine) == []
    engine.dispose()


def test_postgresql_migrations_match_the_models(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    upgrade(engine)
    assert _drift(engine) == []
    engine.dispose()


def test_upgrading_a_populated_0001_database_keeps_every_row(tmp_path: Path) -> None:
    """0002 drops a voices column: done in place, so no generation or batch loses the voice it
    names (a table rebuild would run their ON DELETE SET NULL)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(engine, "0001")
    now = {"now": "2026-01-01 00:00:00+00:00"}
    with engine.begin() as db:
        db.execute(text("INSERT INTO users VALUES (1, 'u', NULL, 1, :now)"), now)
        db.execute(
            text(
                "INSERT INTO voices (id, user_id, name, kind, language, ref_text, prompt, "
                "prompt_model_id, tokens_used, use_count, created_at) VALUES (1, 1, 'v', "
                "'clone', 'auto', 't', x'00', 'm', 3, 1, :now)"
            ),
            now,
        )
        db.execute(
            text(
                "INSERT INTO generations (id, user_id, voice_id, format, language, temperature, "
                "chars, tokens_used, latency_ms, audio_seconds, store, status, created_at) "
                "VALUES (1, 1, 1, 'wav', 'auto', 1.0, 5, 5, 40, 1.0, 0, 'ok', :now)"
            ),
            now,
        )
    upgrade(engine)
    with engine.connect() as db:
        row = db.execute(
            text("SELECT voice_id, latency_ms, queue_ms, finish_reason FROM generations")
        ).one()
        voice_columns = {c[1] for c in db.execute(text("PRAGMA table_info(voices)"))}
    assert tuple(row) == (1, 40, None, None)
    assert "prompt_model_id" not in voice_columns
    engine.dispose()


@pytest.mark.parametrize("target", ["0001", "base"])
def test_downgrade_then_upgrade_again(tmp_path: Path, target: str) -> None:
    from alembic import command
    from alembic.config import Config

    from qwen3_tts_server.db.session import MIGRATIONS_DIR

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(engine)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, target)
    upgrade(engine)
    assert _drift(engine) == []
    engine.dispose()
