"""Users: created by an admin, API keys stored hashed, keys checked on every request."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient

from tests.backend.helpers import ADMIN_KEY, SyncDb, error_of, new_user

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def test_admin_creates_a_user(client: TestClient, db: SyncDb) -> None:
    r = client.post("/api/v1/users", json={"name": "  carol  "}, headers=ADMIN)
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"id", "name", "api_key"}
    assert body["name"] == "carol"
    assert body["api_key"].startswith("csk_") and len(body["api_key"]) > 40
    row = db.fetch("SELECT * FROM users WHERE id = $1", body["id"])[0]
    assert row["api_key_hash"] == hashlib.sha256(body["api_key"].encode()).hexdigest()
    assert row["is_admin"] is False
    # the new key works at once
    r = client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {body['api_key']}"})
    assert r.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {ADMIN_KEY}"},
        {"Authorization": ADMIN_KEY},
    ],
    ids=["missing", "empty", "wrong", "basic-scheme", "no-scheme"],
)
def test_creating_users_needs_the_admin_key(
    client: TestClient, db: SyncDb, headers: dict[str, str]
) -> None:
    before = db.fetchval("SELECT count(*) FROM users")
    r = client.post("/api/v1/users", json={"name": "mallory"}, headers=headers)
    assert error_of(r) == (401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    assert db.fetchval("SELECT count(*) FROM users") == before


def test_a_normal_users_key_is_not_an_admin_key(client: TestClient) -> None:
    user = new_user(client, "dave")
    r = client.post("/api/v1/users", json={"name": "eve"}, headers=user.headers)
    assert error_of(r) == (401, "unauthorized")


def test_an_admin_users_key_is_an_admin_key(client: TestClient, db: SyncDb) -> None:
    user = new_user(client, "root")
    db.execute("UPDATE users SET is_admin = TRUE WHERE id = $1", user.id)
    r = client.post("/api/v1/users", json={"name": "frank"}, headers=user.headers)
    assert r.status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 201},
        {},
        {"name": "a\u0000b"},  # PostgreSQL text holds no NUL: was a 500
        {"name": "a\nb"},
        {"name": "ok", "admin": True},  # unknown member
    ],
    ids=["empty", "blank", "long", "missing", "nul", "newline", "unknown-member"],
)
def test_user_name_is_validated(client: TestClient, db: SyncDb, body: dict[str, str]) -> None:
    before = db.fetchval("SELECT count(*) FROM users")
    r = client.post("/api/v1/users", json=body, headers=ADMIN)
    assert error_of(r) == (422, "validation_failed")
    assert db.fetchval("SELECT count(*) FROM users") == before


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer csk_not-a-key"}, {"Authorization": "Token abc"}],
    ids=["missing", "unknown", "other-scheme"],
)
def test_api_needs_a_valid_key(client: TestClient, headers: dict[str, str]) -> None:
    for method, path in [
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/models"),
        ("GET", "/api/v1/jobs/00000000-0000-0000-0000-000000000000"),
        ("DELETE", "/api/v1/jobs/00000000-0000-0000-0000-000000000000"),
    ]:
        r = client.request(method, path, headers=headers)
        assert error_of(r) == (401, "unauthorized"), (method, path)
