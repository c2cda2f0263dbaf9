"""``POST /api/v1/users``: an admin creates a user and receives its API key, once."""

from __future__ import annotations

from fastapi import APIRouter

from backend.auth import hash_api_key, new_api_key
from backend.deps import AdminKey, PoolDep
from backend.schemas.errors import ERROR_RESPONSES
from backend.schemas.users import NewUser, UserCreated
from contracts.db import repo

router = APIRouter(tags=["users"], responses=ERROR_RESPONSES)


@router.post("/users", status_code=201)
async def create_user(body: NewUser, _admin: AdminKey, pool: PoolDep) -> UserCreated:
    """Create a user. The API key in the answer is shown only this once (stored hashed)."""
    key = new_api_key()
    row = await repo.create_user(pool, body.name, hash_api_key(key))
    return UserCreated(id=row["id"], name=row["name"], api_key=key)
