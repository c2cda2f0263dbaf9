"""The error body of every 4xx/5xx answer (built by :mod:`backend.errors`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    """What went wrong; more members may follow (e.g. ``job_id``, ``status``, ``dependency``)."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(description="stable machine code, e.g. `not_found`, `out_of_memory`")
    message: str = Field(description="what went wrong and, where it can, what to change")
    retryable: bool = Field(description="whether the same request may succeed later")


class ErrorBody(BaseModel):
    error: ErrorDetail


_ERROR: dict[str, Any] = {"model": ErrorBody}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {**_ERROR, "description": "client fault: the request must change"},
    422: {**_ERROR, "description": "a parameter or the body is invalid"},
    "5XX": {**_ERROR, "description": "server fault (503: retry after `Retry-After`)"},
}
"""``responses=`` of every router: errors documented as :class:`ErrorBody` (this also keeps
FastAPI from documenting its own 422 shape, which this service never sends)."""
