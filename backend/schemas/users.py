"""``POST /api/v1/users`` (admin): a new user and its API key."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints


class NewUser(BaseModel):
    name: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"\S"),
    ] = Field(description="not blank; surrounding spaces are removed")


class UserCreated(BaseModel):
    id: int
    name: str
    api_key: str = Field(description="shown only this once (stored hashed)")
