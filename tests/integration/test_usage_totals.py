"""Usage totals for several users at once, from rows written to a real SQLite file."""

from __future__ import annotations

from pathlib import Path

from qwen3_tts_server.db.models import Batch, Generation, User, Voice, utcnow
from qwen3_tts_server.db.session import make_engine, make_session_factory, transaction, upgrade
from qwen3_tts_server.services.usage import Usage, usage_by_user
from qwen3_tts_server.values import GenerationStatus

OK, ERROR = GenerationStatus.OK, GenerationStatus.ERROR


def _generation(user_id: int, tokens: int, seconds: float, **extra: object) -> Generation:
    values: dict[str, object] = {
        "user_id": user_id,
        "format": "wav",
        "language": "auto",
        "temperature": 1.0,
        "chars": tokens,
        "tokens_used": tokens,
        "audio_seconds": seconds,
        "status": OK,
        **extra,
    }
    return Generation(**values)


def _batch(user_id: int, tokens: int, status: GenerationStatus) -> Batch:
    return Batch(
        user_id=user_id,
        format="wav",
        language="auto",
        item_count=2,
        chars=20,
        tokens_used=tokens,
        discount_used=0.9 if tokens else 0.0,
        status=status,
    )


def test_totals_are_per_user_and_count_only_ok_rows(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(engine)
    with transaction(make_session_factory(engine)) as session:
        alice, bob, carol = User(name="alice"), User(name="bob"), User(name="carol")
        session.add_all([alice, bob, carol])
        session.flush()
        voice = {"kind": "clone", "ref_text": "x", "prompt": b"p"}
        session.add_all(
            [
                Voice(user_id=alice.id, name="a1", tokens_used=30, **voice),
                Voice(user_id=alice.id, name="a2", tokens_used=12, deleted_at=utcnow(), **voice),
                Voice(user_id=bob.id, name="b1", tokens_used=5, **voice),
            ]
        )
        batch = _batch(alice.id, tokens=18, status=OK)
        failed_batch = _batch(bob.id, tokens=0, status=ERROR)
        session.add_all([batch, failed_batch])
        session.flush()
        session.add_all(
            [
                _generation(alice.id, 5, 1.0),
                _generation(alice.id, 7, 2.0),
                _generation(alice.id, 0, 0.0, status=ERROR, error="boom"),
                _generation(alice.id, 0, 9.0, status=GenerationStatus.STREAMING),
                _generation(alice.id, 9, 0.5, batch_id=batch.id),
                _generation(alice.id, 9, 0.25, batch_id=batch.id),
                _generation(bob.id, 4, 3.0),
                _generation(bob.id, 0, 0.0, status=GenerationStatus.CANCELLED),
                _generation(bob.id, 0, 0.0, batch_id=failed_batch.id, status=ERROR),
            ]
        )
        session.flush()
        ids = (alice.id, bob.id, carol.id)
        totals = usage_by_user(session, ids)
    engine.dispose()
    assert totals == {
        ids[0]: Usage(
            tokens_used_total=5 + 7 + 18 + 42,
            tokens_used_tts=12,
            tokens_used_batch=18,
            tokens_used_voices=42,  # a deleted voice's creation stays charged
            voices_created=1,  # ... but only live voices are counted
            tts_calls=2,
            batch_calls=1,
            audio_seconds_total=3.75,
        ),
        ids[1]: Usage(
            tokens_used_total=4 + 5,
            tokens_used_tts=4,
            tokens_used_voices=5,
            voices_created=1,
            tts_calls=1,
            audio_seconds_total=3.0,
        ),
        ids[2]: Usage(),
    }


def test_a_stream_left_after_some_audio_counts_as_a_charged_call(tmp_path: Path) -> None:
    """The stream-billing rule charges a CANCELLED row for what it was sent: that row is a
    call, its tokens and audio are usage; a cancelled row with nothing sent is not."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(engine)
    with transaction(make_session_factory(engine)) as session:
        user = User(name="u")
        session.add(user)
        session.flush()
        cancelled = GenerationStatus.CANCELLED
        session.add_all(
            [
                _generation(user.id, 19, 1.5, status=cancelled, error="left"),
                _generation(user.id, 0, 0.0, status=cancelled, error="left before any audio"),
                _generation(user.id, 4, 0.5),
            ]
        )
        session.flush()
        totals = usage_by_user(session, [user.id])[user.id]
    engine.dispose()
    assert totals == Usage(
        tokens_used_total=23, tokens_used_tts=23, tts_calls=2, audio_seconds_total=2.0
    )
