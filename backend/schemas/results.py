"""A segmentation result: one image's (``/segment``, ``GET .../result``) and a job's."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from backend.schemas.jobs import ImageError, ImageStatus, JobStatus


class SegmentedObject(BaseModel):
    """One object: outline, holes, extent and measurements (pixels)."""

    model_config = ConfigDict(extra="allow")

    id: int = Field(description="label value in the mask (1-based)")
    polygon: list[list[float]] = Field(description="exterior ring [[x, y], ...], not closed")
    holes: list[list[list[float]]]
    bbox: list[int] = Field(description="[x0, y0, x1, y1], x1 and y1 exclusive")
    centroid: list[float] = Field(description="[x, y]")
    metrics: dict[str, float] = Field(
        description="area, perimeter, circularity, equivalent_diameter, feret_max, feret_min, "
        "solidity, eccentricity"
    )


class ImageResult(BaseModel):
    """What the engine found in one image (``format=json``)."""

    model_config = ConfigDict(extra="allow")

    model: str
    variant: str | None
    threshold: float
    min_area: int
    tiles: int
    batch_sizes: list[int]
    timings_ms: dict[str, float]
    width: int
    height: int
    count: int
    objects: list[SegmentedObject]


class SegmentAnswer(ImageResult):
    """``POST /segment`` (200): the result, and where it stays stored."""

    job_id: UUID
    image_id: UUID


class GeoJson(BaseModel):
    """``format=geojson``: a FeatureCollection of Polygon features (QuPath detections)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="FeatureCollection")
    features: list[dict[str, Any]]


class CocoDataset(BaseModel):
    """``format=coco``: a COCO instance-segmentation dataset, masks as compressed RLE."""

    model_config = ConfigDict(extra="allow")

    images: list[dict[str, Any]]
    annotations: list[dict[str, Any]]
    categories: list[dict[str, Any]]


class JobResultImage(BaseModel):
    image_id: UUID
    filename: str
    status: ImageStatus
    error: ImageError | None
    result: ImageResult | None


class JobResults(BaseModel):
    """``GET /jobs/{id}/results`` (``format=json``): every image with its status and result."""

    job_id: UUID
    status: JobStatus
    model: str
    images: list[JobResultImage]
