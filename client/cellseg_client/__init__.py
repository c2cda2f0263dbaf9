"""Python client of CellSeg Serve: submit images, watch progress, fetch results.

>>> from cellseg_client import Client
>>> with Client("http://127.0.0.1:8000", api_key) as client:          # doctest: +SKIP
...     sub = client.submit(["a.tif", "b.png"], "hrnet")
...     for event in client.watch([job.id for job in sub.jobs]):
...         print(event.name, event.data)

Depends on httpx and python-socketio only (no torch, nothing else of the service).
"""

from cellseg_client.async_client import AsyncClient, Submission, SubmittedImage
from cellseg_client.client import Client
from cellseg_client.errors import (
    ApiError,
    BadRequest,
    CellsegError,
    Forbidden,
    GatewayTimeout,
    LocalFileError,
    NotFound,
    NotReady,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from cellseg_client.retry import RetryPolicy
from cellseg_client.schema import Counts, Event, Health, Job, JobImage, JobPage, Limits, ModelInfo
from cellseg_client.transport import AsyncTransport, FilePart

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncTransport",
    "BadRequest",
    "CellsegError",
    "Client",
    "Counts",
    "Event",
    "FilePart",
    "Forbidden",
    "GatewayTimeout",
    "Health",
    "Job",
    "JobImage",
    "JobPage",
    "Limits",
    "LocalFileError",
    "ModelInfo",
    "NotFound",
    "NotReady",
    "PayloadTooLarge",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailable",
    "Submission",
    "SubmittedImage",
    "TransportError",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationFailed",
]
