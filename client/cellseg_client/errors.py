"""The client's typed errors.

Every error the service answers (``{"error": {"code", "message", ...}}`` with a 4xx/5xx
status) becomes an :class:`ApiError` subclass chosen by status, carrying the server's ``code``,
``message`` and extra members (``details``). Problems that never got an answer are
:class:`TransportError`; files the client refuses before sending are :class:`LocalFileError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class CellsegError(Exception):
    """Base class of every error raised by :mod:`cellseg_client`."""


class ApiError(CellsegError):
    """The service answered with an error.

    Attributes:
        status: HTTP status (``404``).
        code: the server's stable machine code (``"not_found"``), or ``http_<status>`` when the
            body was not the service's JSON error (e.g. a proxy's HTML page).
        message: the server's explanation.
        details: the other members of the ``error`` object (e.g. ``job_id`` of a 504 timeout).
        retry_after: seconds from ``Retry-After``, when the answer had one.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later: the server's ``retryable`` when the
        body had one, else true for 429, 502, 503 and 504."""
        said = self.details.get("retryable")
        return said if isinstance(said, bool) else self.status in (429, 502, 503, 504)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.message!r})"


class BadRequest(ApiError):
    """400: malformed request."""


class Unauthorized(ApiError):
    """401: missing or invalid API key."""


class Forbidden(ApiError):
    """403: the key may not do this (e.g. not an admin key)."""


class NotFound(ApiError):
    """404: no such job or image (or it belongs to another user)."""


class NotReady(ApiError):
    """409 ``not_ready``: the result is not available yet (``details["status"]`` says why)."""


class PayloadTooLarge(ApiError):
    """413: too many files, too many bytes or too many pixels."""


class UnsupportedMediaType(ApiError):
    """415: not a PNG, JPEG or TIFF."""


class ValidationFailed(ApiError):
    """422: a parameter or a file is invalid (``code`` names which rule)."""


class RateLimited(ApiError):
    """429: too many requests; retried automatically, raised once retries are spent."""


class ServerError(ApiError):
    """500 and other 5xx not listed below."""


class ServiceUnavailable(ApiError):
    """502/503: a dependency (PostgreSQL, Redis) or the gateway is down; retried."""


class GatewayTimeout(ApiError):
    """504: ``POST /segment`` gave no result within ``SYNC_TIMEOUT_S``.

    ``details`` holds ``job_id`` and ``image_id``; ``details["status"]`` is ``"processing"``
    when the image is still running (fetch it later) or ``"cancelled"``.
    """


class TransportError(CellsegError):
    """No answer from the service (connection refused, reset, timed out), after retries."""


class LocalFileError(CellsegError):
    """A file the client will not send (unreadable, not an image, larger than the limit)."""

    def __init__(self, path: str, code: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.code = code
        self.message = message


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: NotReady,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationFailed,
    429: RateLimited,
    502: ServiceUnavailable,
    503: ServiceUnavailable,
    504: GatewayTimeout,
}


def error_class(status: int) -> type[ApiError]:
    """The :class:`ApiError` subclass for an HTTP status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ApiError


def api_error(status: int, body: Any, text: str = "", retry_after: float | None = None) -> ApiError:
    """Build the typed error for an answer with ``status`` and decoded JSON ``body``.

    A body that is not the service's ``{"error": {"code", "message"}}`` (a proxy's page) still
    gives a typed error, with code ``http_<status>`` and the start of the text as message.
    """
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code = str(error["code"])
        message = str(error.get("message", ""))
        details = {k: v for k, v in error.items() if k not in ("code", "message")}
    else:
        code, message, details = f"http_{status}", text.strip()[:300] or f"HTTP {status}", {}
    return error_class(status)(status, code, message, details, retry_after)
