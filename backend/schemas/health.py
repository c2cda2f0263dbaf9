"""``/healthz`` and ``/readyz``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Alive(BaseModel):
    status: Literal["ok"] = "ok"


class Check(BaseModel):
    ok: bool
    detail: str


class Ready(BaseModel):
    """Every check passed (a failed one answers 503 ``not_ready`` with ``checks``)."""

    status: Literal["ready"] = "ready"
    checks: dict[str, Check]
