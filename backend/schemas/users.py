"""``POST /api/v1/users`` (admin): a new user and its API key."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints


def _printable(name: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError("a user name must not hold control characters")
    return name


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt member is refused, not ignored

    name: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True,
            min_length=1,
            max_length=200,
            pattern=r"\S",
        ),
        AfterValidator(_printable),
    ] = Field(description="not blank, no control characters; surrounding spaces are removed")


class UserCreated(BaseModel):
    id: int
    name: str
    api_key: str = Field(description="shown only this once (stored hashed)")
