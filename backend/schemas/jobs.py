"""Jobs: the form's parameters (with their parsers), a job, its images, a page of jobs.

A parameter is defined once, here, from the limits in :mod:`contracts.requests`: its annotated
type documents it in the OpenAPI schema and its parser (used by the streaming form reader)
validates it with that same type, answering 422 with the parameter's own code.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from backend.errors import ValidationFailed
from backend.schemas.fields import OneOf, Timestamp
from contracts.jobs_state import IMAGE_STATUSES, JOB_STATUSES
from contracts.requests import (
    DEFAULT_MIN_AREA,
    DEFAULT_SPLIT,
    DEFAULT_THRESHOLD,
    DIAMETER_AUTO,
    MAX_DIAMETER,
    MAX_MIN_AREA,
    MAX_PLANE_INDEX,
    MAX_THRESHOLD,
    MIN_DIAMETER,
    MIN_THRESHOLD,
    MODEL_NAMES,
)

T = TypeVar("T")

# --- parameters --------------------------------------------------------------------------------

ModelName = Annotated[str, OneOf(MODEL_NAMES)]
Threshold = Annotated[
    float,
    Field(
        ge=MIN_THRESHOLD,
        le=MAX_THRESHOLD,
        allow_inf_nan=False,
        description="foreground probability cut-off",
    ),
]
MinArea = Annotated[
    int, Field(ge=0, le=MAX_MIN_AREA, description="objects with fewer pixels are dropped")
]

Plane = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_PLANE_INDEX,
        description="the plane of a TIFF stack to segment (z-stack, time series, pages of one "
        "series); required when a file holds several, which a 422 choose_plane_or_channel says",
    ),
]
Channel = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_PLANE_INDEX,
        description="the channel to segment: of a TIFF holding channels as planes (required "
        "then), or one colour (0 red, 1 green, 2 blue) of a colour image, read as grey",
    ),
]

Split = Annotated[
    bool, Field(description="separate touching objects into instances (watershed); true or false")
]
Diameter = (
    Annotated[
        float,
        Field(
            ge=MIN_DIAMETER,
            le=MAX_DIAMETER,
            allow_inf_nan=False,
            description="typical object diameter in pixels (at most the image's longer side): "
            "images are rescaled so objects have the size the model was trained on, results "
            "come back in the image's own pixels",
        ),
    ]
    | Literal["auto"]
)

MAX_PAGE_SIZE = 100
MAX_OFFSET = 2**63 - 1
"""PostgreSQL's ``OFFSET`` is a bigint: larger offsets are refused with a 422, not sent."""


class JobParams(BaseModel):
    """The text fields of the job form (``POST /jobs``, ``POST /segment``)."""

    model: ModelName
    threshold: Threshold = DEFAULT_THRESHOLD
    min_area: MinArea = DEFAULT_MIN_AREA
    plane: Plane | None = None
    channel: Channel | None = None
    split: Split = DEFAULT_SPLIT
    diameter: Diameter | None = Field(
        default=None, description="object diameter in pixels, or 'auto' to estimate it per image"
    )


class JobForm(JobParams):
    """``POST /api/v1/jobs``: one or more images and the parameters."""

    files: list[bytes] = Field(
        min_length=1,
        description="PNG, JPEG or TIFF images; at most MAX_FILES_PER_JOB of at most "
        "MAX_UPLOAD_MB together (`GET /api/v1/models` → `limits`)",
    )


def document_file_limit(schema: dict[str, Any], max_files: int) -> None:
    """Set ``maxItems`` of the job form's ``files`` in a generated OpenAPI ``schema`` to this
    gateway's ``MAX_FILES_PER_JOB`` (a setting, so not known when the models are defined)."""
    body = schema["paths"]["/api/v1/jobs"]["post"]["requestBody"]
    body["content"]["multipart/form-data"]["schema"]["properties"]["files"]["maxItems"] = max_files


class SegmentForm(JobParams):
    """``POST /api/v1/segment``: one image and the parameters."""

    file: bytes = Field(description="one PNG, JPEG or TIFF image")


def _parser(adapter: TypeAdapter[T], code: str, explain: str) -> Any:
    def parse(value: str) -> T:
        try:
            return adapter.validate_python(value)
        except ValidationError:
            raise ValidationFailed(code, f"{explain}, got {value!r}") from None

    return parse


parse_model = _parser(
    TypeAdapter(ModelName), "unknown_model", f"model must be one of: {', '.join(MODEL_NAMES)}"
)
parse_threshold = _parser(
    TypeAdapter(Threshold),
    "invalid_threshold",
    f"threshold must be a number from {MIN_THRESHOLD} to {MAX_THRESHOLD}",
)
parse_min_area = _parser(
    TypeAdapter(MinArea),
    "invalid_min_area",
    f"min_area must be a whole number of pixels from 0 to {MAX_MIN_AREA}",
)

parse_plane = _parser(
    TypeAdapter(Plane), "invalid_plane", f"plane must be a whole number from 0 to {MAX_PLANE_INDEX}"
)
parse_channel = _parser(
    TypeAdapter(Channel),
    "invalid_channel",
    f"channel must be a whole number from 0 to {MAX_PLANE_INDEX}",
)

parse_split = _parser(TypeAdapter(Split), "invalid_split", "split must be true or false")
parse_diameter = _parser(
    TypeAdapter(Diameter),
    "invalid_diameter",
    f"diameter must be {DIAMETER_AUTO!r} or a number of pixels from {MIN_DIAMETER:g} to "
    f"{MAX_DIAMETER:g}",
)

TEXT_FIELDS = {
    "model": parse_model,
    "threshold": parse_threshold,
    "min_area": parse_min_area,
    "plane": parse_plane,
    "channel": parse_channel,
    "split": parse_split,
    "diameter": parse_diameter,
}
"""The form reader's parser per text field of :class:`JobParams`."""

# --- answers -----------------------------------------------------------------------------------

ImageStatus = Annotated[str, OneOf(IMAGE_STATUSES)]
JobStatus = Annotated[str, OneOf(JOB_STATUSES)]


class Counts(BaseModel):
    """A job's images by status as users see them (``queued`` includes ``dispatched``)."""

    total: int
    queued: int
    processing: int
    done: int
    failed: int
    cancelled: int


class ImageError(BaseModel):
    """Why an image failed: a code of the outcome table (``contracts.outcomes``)."""

    code: str
    message: str
    retryable: bool


class CreatedImage(BaseModel):
    id: UUID
    filename: str
    status: ImageStatus


class JobFields(BaseModel):
    """What every job answer carries: its id, status and the parameters it was created with."""

    id: UUID
    status: JobStatus
    model: str
    threshold: float
    min_area: int
    plane: int | None = None
    channel: int | None = None
    split: bool = DEFAULT_SPLIT
    diameter: float | Literal["auto"] | None = None


class JobCreated(JobFields):
    """``POST /jobs`` (202): the job and its images, all queued."""

    images: list[CreatedImage]
    created_at: Timestamp


class JobSummary(JobFields):
    created_at: Timestamp
    finished_at: Timestamp | None
    counts: Counts
    filenames: list[str] = Field(
        default_factory=list,
        description="the first file names, in upload order (GET /jobs: at most 3; "
        "GET /jobs/{id}: every image's)",
    )


class JobImage(BaseModel):
    id: UUID
    filename: str
    status: ImageStatus
    error: ImageError | None
    objects: int | None
    width: int | None
    height: int | None


class JobDetail(JobSummary):
    """``GET /jobs/{id}``: the job, its counts and every image."""

    images: list[JobImage]


class JobPage(BaseModel):
    """``GET /jobs``: one page of the caller's jobs, newest first."""

    items: list[JobSummary]
    total: int
    limit: int
    offset: int


class JobCancelled(BaseModel):
    """``DELETE /jobs/{id}``: the counts after the cancel (``running``: still processing)."""

    id: UUID
    status: JobStatus
    cancelled: int
    running: int
    done: int
    failed: int
