"""Users, invites, keys and the auth rules, over HTTP on real SQLite files."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import ADMIN_TOKEN, AppFactory, admin_headers, new_user_key

from qwen3_tts_server.db.models import Invite
from qwen3_tts_server.db.session import make_engine, make_session_factory


def test_invite_flow_gives_a_working_key(client: TestClient) -> None:
    response = client.post("/admin/users", headers=admin_headers())
    assert response.status_code == 200
    user_id = response.json()["user_id"]
    assert isinstance(user_id, int)

    invite = client.post(
        f"/admin/users/{user_id}/invites?expires_hours=24", headers=admin_headers()
    )
    assert invite.status_code == 200
    assert invite.json()["expires_hours"] == 24
    code = invite.json()["invite_code"]

    exchanged = client.post("/auth/exchange-invite", json={"invite_code": code})
    assert exchanged.status_code == 200
    body = exchanged.json()
    assert set(body) == {"api_key", "key_prefix"}
    assert body["key_prefix"] == body["api_key"][:8]
    assert len(body["api_key"]) >= 43  # 256 bits, URL-safe base64

    usage = client.get("/usage", headers={"Authorization": f"Bearer {body['api_key']}"})
    assert usage.status_code == 200
    assert usage.json()["tokens_used_total"] == 0
    # "bearer" is accepted case-insensitively, like the original server.
    lower = client.get("/usage", headers={"Authorization": f"bearer {body['api_key']}"})
    assert lower.status_code == 200


def test_create_user_with_body_and_listing(client: TestClient) -> None:
    created = client.post(
        "/admin/users", headers=admin_headers(), json={"name": "alice", "token_quota": 500}
    )
    assert created.status_code == 200
    listing = client.get("/admin/users", headers=admin_headers())
    assert listing.status_code == 200
    [user] = listing.json()
    assert user["name"] == "alice" and user["token_quota"] == 500 and user["is_active"]
    assert user["usage"]["tokens_used_total"] == 0
    assert user["created_at"].endswith("Z") or "+00:00" in user["created_at"]


def test_invite_reuse_expiry_and_unknown_code(client: TestClient, tmp_path: Path) -> None:
    user_id = client.post("/admin/users", headers=admin_headers()).json()["user_id"]
    code = client.post(f"/admin/users/{user_id}/invites", headers=admin_headers()).json()[
        "invite_code"
    ]
    assert client.post("/auth/exchange-invite", json={"invite_code": code}).status_code == 200
    again = client.post("/auth/exchange-invite", json={"invite_code": code})
    assert again.status_code == 403 and again.json()["detail"] == "Invite already used"

    unknown = client.post("/auth/exchange-invite", json={"invite_code": "nope-nope-nope"})
    assert unknown.status_code == 403 and unknown.json()["detail"] == "Invalid invite code"
    short = client.post("/auth/exchange-invite", json={"invite_code": "short"})
    assert short.status_code == 422

    # Age an invite in the database itself: expiry is judged by the server's clock.
    expiring = client.post(f"/admin/users/{user_id}/invites", headers=admin_headers()).json()
    db = make_engine(f"sqlite:///{tmp_path / 'data' / 'db.sqlite3'}")
    with make_session_factory(db).begin() as session:
        newest = session.query(Invite).order_by(Invite.id.desc()).first()
        assert newest is not None
        newest.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    db.dispose()
    expired = client.post("/auth/exchange-invite", json={"invite_code": expiring["invite_code"]})
    assert expired.status_code == 403 and expired.json()["detail"] == "Invite expired"


def test_invite_for_unknown_user_and_bad_hours(client: TestClient) -> None:
    missing = client.post("/admin/users/9999/invites", headers=admin_headers())
    assert missing.status_code == 404 and missing.json() == {"detail": "User not found"}
    user_id = client.post("/admin/users", headers=admin_headers()).json()["user_id"]
    for hours in (0, -5, 721):
        bad = client.post(
            f"/admin/users/{user_id}/invites?expires_hours={hours}", headers=admin_headers()
        )
        assert bad.status_code == 422, hours
    assert (
        client.post(
            f"/admin/users/{user_id}/invites?expires_hours=abc", headers=admin_headers()
        ).status_code
        == 422
    )


def test_concurrent_exchange_has_exactly_one_winner(client: TestClient) -> None:
    user_id = client.post("/admin/users", headers=admin_headers()).json()["user_id"]
    code = client.post(f"/admin/users/{user_id}/invites", headers=admin_headers()).json()[
        "invite_code"
    ]
    barrier = threading.Barrier(16)
    statuses: list[int] = []
    lock = threading.Lock()

    def exchange() -> None:
        barrier.wait()
        status = client.post("/auth/exchange-invite", json={"invite_code": code}).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=exchange) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [403] * 15
    keys = client.get(f"/admin/users/{user_id}/keys", headers=admin_headers()).json()
    assert len(keys) == 1


@pytest.mark.parametrize(
    ("header", "status", "detail"),
    [
        (None, 401, "Missing admin bearer token"),
        ("Basic abc", 401, "Missing admin bearer token"),
        ("Bearer ", 401, "Missing admin bearer token"),
        ("Bearer    ", 401, "Missing admin bearer token"),
        ("Bearer wrong-token", 403, "Invalid admin token"),
        (f"Bearer {ADMIN_TOKEN}x", 403, "Invalid admin token"),
        ("Bearer t\u00e9st", 403, "Invalid admin token"),
    ],
)
def test_admin_auth_failures(
    client: TestClient, header: str | None, status: int, detail: str
) -> None:
    headers = {} if header is None else {"Authorization": header.encode()}
    response = client.post("/admin/users", headers=headers)
    assert response.status_code == status
    assert response.json() == {"detail": detail}


def test_blank_admin_token_env_never_matches(make_client: AppFactory, tmp_path: Path) -> None:
    """compose's `ADMIN_TOKEN=""` must not mean "empty token accepted" (the original's hole)."""
    client = make_client(admin_token="   ")
    for header in (b"Bearer ", b"Bearer \xa0", b"Bearer \x85", b"Bearer  "):
        response = client.post("/admin/users", headers={"Authorization": header})
        assert response.status_code in (401, 403), header
    generated = (tmp_path / "data" / "secrets" / "admin_token").read_text().strip()
    assert client.post("/admin/users", headers=admin_headers(generated)).status_code == 200


def test_non_ascii_bearer_bytes_are_refused(client: TestClient) -> None:
    # h11 passes latin-1 bytes through; \xa0 would strip to "" under str.strip().
    response = client.post("/admin/users", headers={"Authorization": b"Bearer \xa0"})  # type: ignore[dict-item]
    assert response.status_code in (401, 403)
    user = client.get("/usage", headers={"Authorization": b"Bearer \xa0\x85"})  # type: ignore[dict-item]
    assert user.status_code in (401, 403)


@pytest.mark.parametrize(
    ("header", "status", "detail"),
    [
        (None, 401, "Missing bearer token"),
        ("Token abc", 401, "Missing bearer token"),
        ("Bearer ", 401, "Missing API key"),
        ("Bearer not-a-real-key", 403, "Invalid or revoked API key"),
        ("Bearer k\u00e9y", 403, "Invalid or revoked API key"),
    ],
)
def test_user_auth_failures(
    client: TestClient, header: str | None, status: int, detail: str
) -> None:
    headers = {} if header is None else {"Authorization": header.encode()}
    response = client.get("/usage", headers=headers)
    assert response.status_code == status
    assert response.json() == {"detail": detail}


def test_disabled_user_and_revoked_key(client: TestClient) -> None:
    user_id, headers = new_user_key(client)
    assert client.get("/usage", headers=headers).status_code == 200

    assert client.post(f"/admin/users/{user_id}/disable", headers=admin_headers()).json() == {
        "status": "disabled"
    }
    disabled = client.get("/usage", headers=headers)
    assert disabled.status_code == 403 and disabled.json()["detail"] == "User disabled"
    client.post(f"/admin/users/{user_id}/enable", headers=admin_headers())
    assert client.get("/usage", headers=headers).status_code == 200

    [key] = client.get(f"/admin/users/{user_id}/keys", headers=admin_headers()).json()
    assert key["revoked_at"] is None and key["last_used_at"] is not None
    revoked = client.post(
        f"/admin/users/{user_id}/keys/{key['key_id']}/revoke", headers=admin_headers()
    )
    assert revoked.status_code == 200
    after = client.get("/usage", headers=headers)
    assert after.status_code == 403 and after.json()["detail"] == "Invalid or revoked API key"

    assert client.post("/admin/users/424242/disable", headers=admin_headers()).status_code == 404
    other = client.post(f"/admin/users/{user_id}/keys/99999/revoke", headers=admin_headers())
    assert other.status_code == 404


def test_key_from_another_deployment_secret_is_refused(
    make_client: AppFactory, tmp_path: Path
) -> None:
    first = make_client(data_dir=tmp_path / "one", hmac_secret="secret-number-one-xxxxxxxx")
    _, headers = new_user_key(first)
    assert first.get("/usage", headers=headers).status_code == 200
    # Same database file, another HMAC secret: the stored hashes no longer match.
    second = make_client(data_dir=tmp_path / "one", hmac_secret="secret-number-two-yyyyyyyy")
    assert second.get("/usage", headers=headers).status_code == 403


def test_database_holds_no_plaintext_key_or_code(client: TestClient, tmp_path: Path) -> None:
    user_id = client.post("/admin/users", headers=admin_headers()).json()["user_id"]
    code = client.post(f"/admin/users/{user_id}/invites", headers=admin_headers()).json()[
        "invite_code"
    ]
    key = client.post("/auth/exchange-invite", json={"invite_code": code}).json()["api_key"]
    db_dir = tmp_path / "data"
    raw = b"".join(path.read_bytes() for path in db_dir.glob("db.sqlite3*"))
    assert raw, "expected SQLite files"
    assert code.encode() not in raw and key.encode() not in raw
    with sqlite3.connect(db_dir / "db.sqlite3") as connection:
        dump = "\n".join(connection.iterdump())
    assert code not in dump and key not in dump


def test_last_used_is_written_at_most_once_a_minute(client: TestClient) -> None:
    user_id, headers = new_user_key(client)
    client.get("/usage", headers=headers)
    [first] = client.get(f"/admin/users/{user_id}/keys", headers=admin_headers()).json()
    for _ in range(5):
        client.get("/usage", headers=headers)
    [second] = client.get(f"/admin/users/{user_id}/keys", headers=admin_headers()).json()
    assert first["last_used_at"] == second["last_used_at"]
