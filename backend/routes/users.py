"""``POST /api/v1/users``: an admin creates a user and receives its API key, once."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, StringConstraints

from backend.auth import hash_api_key, new_api_key
from backend.deps import AdminKey, PoolDep
from contracts.db import repo

router = APIRouter(tags=["users"])


class NewUser(BaseModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


@router.post("/users", status_code=201)
async def create_user(body: NewUser, _admin: AdminKey, pool: PoolDep) -> dict[str, Any]:
    """Create a user. The API key in the answer is shown only this once (stored hashed)."""
    key = new_api_key()
    row = await repo.create_user(pool, body.name, hash_api_key(key))
    return {"id": row["id"], "name": row["name"], "api_key": key}
