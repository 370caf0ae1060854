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


def test_0003_gives_existing_users_their_running_totals(tmp_path: Path) -> None:
    """Quotas compare against per-user totals from 0003 on: existing users start with what
    their rows say (as /usage counts them), not with zero (which would reset every quota)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(engine, "0002")
    now = {"now": "2026-01-01 00:00:00+00:00"}
    statements = [
        "INSERT INTO users VALUES (1, 'a', 100, 1, :now), (2, 'b', NULL, 1, :now)",
        "INSERT INTO audio_blobs VALUES ('aa', 'audio/wav', 1000, 2.0, :now)",
        "INSERT INTO voices (id, user_id, name, kind, language, ref_text, ref_audio_sha256, "
        "prompt, tokens_used, use_count, created_at, deleted_at) VALUES "
        "(1, 1, 'live', 'clone', 'auto', 't', 'aa', x'00', 30, 0, :now, NULL), "
        "(2, 1, 'gone', 'clone', 'auto', 't', NULL, x'00', 12, 0, :now, :now)",
        "INSERT INTO batches (id, user_id, format, language, store, item_count, chars, "
        "tokens_used, discount_used, latency_ms_total, status, created_at) VALUES "
        "(1, 1, 'wav', 'auto', 0, 2, 20, 18, 0.9, 10, 'ok', :now), "
        "(2, 1, 'wav', 'auto', 0, 2, 20, 0, 0.0, 0, 'error', :now)",
        "INSERT INTO generations (user_id, batch_id, format, language, temperature, chars, "
        "tokens_used, latency_ms, audio_seconds, store, status, created_at) VALUES "
        "(1, NULL, 'wav', 'auto', 1.0, 5, 5, 40, 1.0, 0, 'ok', :now), "
        "(1, NULL, 'wav', 'auto', 1.0, 7, 0, 0, 0.0, 0, 'error', :now), "
        "(1, NULL, 'wav', 'auto', 1.0, 9, 0, 0, 0.0, 0, 'streaming', :now), "
        "(1, 1, 'wav', 'auto', 1.0, 10, 9, 10, 1.0, 0, 'ok', :now), "
        "(1, 1, 'wav', 'auto', 1.0, 10, 9, 10, 1.0, 0, 'ok', :now)",
    ]
    with engine.begin() as db:
        for statement in statements:
            db.execute(text(statement), now)
    upgrade(engine)
    with engine.connect() as db:
        rows = db.execute(
            text(
                "SELECT id, tokens_used, tokens_reserved, storage_bytes, voice_count FROM users "
                "ORDER BY id"
            )
        ).all()
        reservations = db.execute(text("SELECT COUNT(*) FROM reservations")).scalar()
    assert [tuple(row) for row in rows] == [(1, 30 + 12 + 5 + 18, 0, 1000, 1), (2, 0, 0, 0, 0)]
    assert reservations == 0
    engine.dispose()
