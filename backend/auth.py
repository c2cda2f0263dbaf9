"""API keys: creation, hashing, and the FastAPI dependencies that check them.

A key is ``csk_`` + 43 URL-safe characters (256 random bits). Only its sha256 hex digest is
stored (``users.api_key_hash``); the key itself is shown once, when it is created. Clients send
``Authorization: Bearer <key>``. Unknown or missing keys answer 401 ``unauthorized``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backend.errors import Unauthorized
from contracts.db import repo

API_KEY_PREFIX = "csk_"

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer csk_...`")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


@dataclass(frozen=True)
class User:
    id: int
    name: str
    is_admin: bool


def new_api_key() -> str:
    """A fresh random API key (show it once; store :func:`hash_api_key` of it)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """sha256 hex digest of a key, as stored in ``users.api_key_hash``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _key_from(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials.strip():
        sent = request.headers.get("authorization", "").strip()
        if sent and not sent.lower().startswith("bearer"):  # another scheme, or a bare key
            got = (
                f"got the scheme {sent.split()[0]!r}"
                if " " in sent
                else "got no scheme: put 'Bearer ' before the key"
            )
            raise Unauthorized(
                "unauthorized", f"the Authorization header must be 'Bearer <api key>' ({got})"
            )
        raise Unauthorized(
            "unauthorized", "missing API key: send the header 'Authorization: Bearer <api key>'"
        )
    return credentials.credentials.strip()


async def _user_for_key(request: Request, key: str) -> User | None:
    row = await repo.user_by_key_hash(request.app.state.pool, hash_api_key(key))
    if row is None:
        return None
    return User(id=row["id"], name=row["name"], is_admin=row["is_admin"])


async def current_user(request: Request, credentials: BearerCredentials) -> User:
    """FastAPI dependency: the user whose API key is in the ``Authorization`` header.

    Raises:
        Unauthorized: no key, or a key no user has.
    """
    user = await _user_for_key(request, _key_from(request, credentials))
    if user is None:
        raise Unauthorized("unauthorized", "invalid API key")
    return user


async def require_admin(request: Request, credentials: BearerCredentials) -> None:
    """FastAPI dependency: the caller holds ``ADMIN_API_KEY`` (or an admin user's key).

    ``ADMIN_API_KEY`` is compared in constant time. Users created with
    ``python -m backend create-user NAME --admin`` are admins too.

    Raises:
        Unauthorized: no key, or a key that is not an admin's.
    """
    key = _key_from(request, credentials)
    admin_key = request.app.state.settings.admin_api_key
    if admin_key is not None and hmac.compare_digest(
        key.encode("utf-8"), admin_key.get_secret_value().encode("utf-8")
    ):
        return
    user = await _user_for_key(request, key)
    if user is None or not user.is_admin:
        raise Unauthorized("unauthorized", "this endpoint needs the admin API key")
