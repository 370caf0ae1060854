"""Plain helpers shared by the integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from fastapi.testclient import TestClient

ADMIN_TOKEN = "test-admin-token-0123456789"

AppFactory = Callable[..., TestClient]


def admin_headers(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_user_key(client: TestClient | httpx.Client) -> tuple[int, dict[str, str]]:
    """Create a user through the admin API and exchange an invite: (user_id, auth headers)."""
    user_id = client.post("/admin/users", headers=admin_headers()).json()["user_id"]
    code = client.post(f"/admin/users/{user_id}/invites", headers=admin_headers()).json()[
        "invite_code"
    ]
    key = client.post("/auth/exchange-invite", json={"invite_code": code}).json()["api_key"]
    return user_id, {"Authorization": f"Bearer {key}"}
