"""Typed views of the service's JSON answers (built with ``from_json``; ``raw`` keeps it all).

Hand-written mirrors of the gateway's answer models (its OpenAPI schema, ``/openapi.json``):
each class has the fields of the component of the same name (:class:`Job` those of
``JobDetail``); a test of the service holds the two together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

IMAGE_TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})
JOB_TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled", "partial"})


@dataclass(frozen=True)
class Limits:
    """Upload limits of the server (``GET /api/v1/models`` → ``limits``)."""

    max_upload_mb: int
    max_files_per_job: int
    max_image_pixels: int

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Limits:
        return cls(
            max_upload_mb=int(data["max_upload_mb"]),
            max_files_per_job=int(data["max_files_per_job"]),
            max_image_pixels=int(data["max_image_pixels"]),
        )


@dataclass(frozen=True)
class ModelInfo:
    """A servable model; ``workers`` lists the live workers that run it (empty: none now)."""

    name: str
    variant: str | None
    input_size: Any
    workers: list[dict[str, Any]]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelInfo:
        return cls(
            name=str(data["name"]),
            variant=data.get("variant"),
            input_size=data.get("input_size"),
            workers=list(data.get("workers") or []),
        )


@dataclass(frozen=True)
class Counts:
    """A job's images by status, as users see them (``dispatched`` counts as ``queued``)."""

    total: int
    queued: int = 0
    processing: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.cancelled

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Counts:
        return cls(**{k: int(data.get(k) or 0) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ImageError:
    """Why an image failed: a stable ``code`` and whether sending it again may succeed."""

    code: str
    message: str
    retryable: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ImageError | None:
        if not data:
            return None
        return cls(
            str(data.get("code") or "failed"),
            str(data.get("message") or ""),
            bool(data.get("retryable", False)),
        )


@dataclass(frozen=True)
class JobImage:
    """One image of a job: its id, the filename sent, its status and (if failed) why."""

    id: str
    filename: str
    status: str
    error: ImageError | None = None
    objects: int | None = None
    width: int | None = None
    height: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobImage:
        return cls(
            id=str(data["id"]),
            filename=str(data.get("filename") or ""),
            status=str(data.get("status") or "queued"),
            error=ImageError.from_json(data.get("error")),
            objects=data.get("objects"),
            width=data.get("width"),
            height=data.get("height"),
        )


@dataclass(frozen=True)
class Job:
    """A job as ``POST /jobs`` (images, no counts) or ``GET /jobs/{id}`` answers it; in
    ``GET /jobs`` listings ``images`` is empty."""

    id: str
    status: str
    model: str
    threshold: float
    min_area: int
    split: bool = True
    diameter: float | str | None = None
    plane: int | None = None
    channel: int | None = None
    created_at: str | None = None
    finished_at: str | None = None
    counts: Counts | None = None
    filenames: list[str] = field(default_factory=list)
    images: list[JobImage] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.status in JOB_TERMINAL

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        counts = data.get("counts")
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            model=str(data.get("model") or ""),
            threshold=float(data.get("threshold") or 0.0),
            min_area=int(data.get("min_area") or 0),
            split=bool(data.get("split", True)),
            diameter=data.get("diameter"),
            plane=data.get("plane"),
            channel=data.get("channel"),
            created_at=data.get("created_at"),
            finished_at=data.get("finished_at"),
            counts=Counts.from_json(counts) if isinstance(counts, Mapping) else None,
            filenames=[str(name) for name in data.get("filenames") or []],
            images=[JobImage.from_json(im) for im in data.get("images") or []],
            raw=dict(data),
        )


@dataclass(frozen=True)
class JobPage:
    """One page of ``GET /jobs`` (newest first)."""

    items: list[Job]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class Health:
    """``/healthz`` and ``/readyz``: ``alive`` (the gateway answers), ``ready`` (PostgreSQL,
    Redis and a worker with models answer) and each readiness check with its detail."""

    alive: bool
    ready: bool
    checks: dict[str, Any]
    message: str = ""


@dataclass(frozen=True)
class Event:
    """One progress event of a watched job, from Socket.IO (``source="socket"``) or derived
    from the REST state (``source="poll"``).

    ``name`` is ``image.update`` (``data``: ``job_id, image_id, status, error?, objects?``),
    ``job.progress`` (``data``: counts, ``queue_position``, ``eta_s``) or ``job.done``
    (``data``: ``job_id, status, counts``), as the service documents them.
    """

    name: str
    job_id: str
    data: dict[str, Any]
    source: str = "socket"
