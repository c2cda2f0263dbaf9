"""The gateway's typed errors and the ONE table that turns exceptions into JSON responses.

Every error leaves the gateway as ``{"error": {"code": "...", "message": "...", "retryable":
bool, ...}}`` with a 4xx/5xx status (the shape is :class:`backend.schemas.errors.ErrorBody`).
``retryable`` says whether the same request may succeed later: by default for 429, 502, 503 and
504; causes of failed images take theirs from :data:`contracts.outcomes.OUTCOMES`
(:func:`outcome_error`). Routes raise :class:`ApiError` subclasses; they never build error
responses.
:func:`install_error_handlers` maps, besides :class:`ApiError`:

- FastAPI's ``RequestValidationError`` → 422 ``validation_failed``;
- Starlette's ``HTTPException`` (unknown route 404, wrong method 405, ...) → its status;
- a lost PostgreSQL or Redis connection (asyncpg connection errors, ``redis`` connection and
  timeout errors, ``OSError`` raised while connecting) → 503 ``service_unavailable`` naming the
  dependency, with ``Retry-After``;
- a client that went away mid-upload → 400 ``client_disconnected`` (never delivered);
- anything else → 500 ``internal_error``, logged with its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import asyncpg
import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from contracts.outcomes import outcome

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
"""``Retry-After`` sent with a 503 caused by a lost PostgreSQL or Redis connection."""

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses whose errors are ``retryable`` unless the error says otherwise."""


class ApiError(Exception):
    """An error the client should see: ``status``, a stable machine ``code`` and a message.

    Args:
        code: stable snake_case code clients can switch on (``"not_found"``).
        message: human-readable explanation; says what to change where it can.
        status: HTTP status; defaults to the subclass's.
        details: extra members of the JSON ``error`` object (e.g. ``{"status": "queued"}``).
        headers: extra response headers.
        retryable: whether the same request may succeed later; by default for the statuses
            in :data:`RETRYABLE_STATUSES`.
    """

    status: int = 400

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        *,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        if status is not None:
            self.status = status
        self.details = dict(details or {})
        self.headers = dict(headers or {})
        self.retryable = self.status in RETRYABLE_STATUSES if retryable is None else retryable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, {self.status})"


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401

    def __init__(self, code: str, message: str, status: int | None = None, **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(code, message, status, **kw)


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class ValidationFailed(ApiError):
    status = 422


class ServiceUnavailable(ApiError):
    """503; ``retry_after`` (seconds) becomes the ``Retry-After`` header."""

    status = 503

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        *,
        retry_after: int | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(code, message, status, **kw)
        if retry_after is not None:
            self.headers.setdefault("Retry-After", str(retry_after))


def outcome_error(
    code: str | None, message: str, *, details: Mapping[str, Any] | None = None
) -> ApiError:
    """The error for a failed image's ``code``, with the status and ``retryable`` of
    :data:`contracts.outcomes.OUTCOMES` (an unknown code is ``internal_error``, 500)."""
    found = outcome(code)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if found.status == 503 else None
    return ApiError(
        found.code,
        message or found.meaning,
        found.status,
        details=details,
        headers=headers,
        retryable=found.retryable,
    )


# --- the table ---------------------------------------------------------------------------------

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}

# Exceptions that mean "the connection to PostgreSQL is gone or cannot be made".
_POSTGRES_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, cannot connect now
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
)
_REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def error_body(
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    *,
    retryable: bool = False,
) -> dict[str, Any]:
    """The JSON body of every error response:
    ``{"error": {"code", "message", "retryable", ...details}}``."""
    reserved = ("code", "message", "retryable")
    extra = {k: v for k, v in (details or {}).items() if k not in reserved}
    return {"error": {"code": code, "message": message, "retryable": retryable, **extra}}


def _json_error(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    details: Mapping[str, Any] | None = None,
    retryable: bool | None = None,
) -> JSONResponse:
    if retryable is None:
        retryable = status in RETRYABLE_STATUSES
    body = error_body(code, message, details, retryable=retryable)
    return JSONResponse(body, status_code=status, headers=headers)


def _origin(tb: TracebackType | None) -> str | None:
    """``"PostgreSQL"``/``"Redis"`` when the traceback passes through asyncpg/redis code."""
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.startswith("asyncpg"):
            return "PostgreSQL"
        if module.startswith("redis"):
            return "Redis"
        tb = tb.tb_next
    return None


def unavailable_dependency(exc: BaseException) -> str | None:
    """Name the dependency (``"PostgreSQL"`` or ``"Redis"``) whose loss ``exc`` reports.

    ``None`` when ``exc`` is not a lost-connection error of either (e.g. a disk ``OSError``).
    """
    if isinstance(exc, _POSTGRES_ERRORS):
        return "PostgreSQL"
    if isinstance(exc, asyncpg.InterfaceError) and "connection" in str(exc).lower():
        return "PostgreSQL"  # "connection is closed", "connection was closed in the middle..."
    if isinstance(exc, asyncpg.InternalClientError) and "another operation" in str(exc):
        # the server's shutdown notice arrived between two statements of a request (the
        # connection is consuming it when the next statement starts): PostgreSQL restarting
        return "PostgreSQL"
    if isinstance(exc, _REDIS_ERRORS):
        return "Redis"
    if isinstance(exc, OSError):  # includes TimeoutError; raised by asyncpg's connect
        return _origin(exc.__traceback__)
    return None


def dependency_unavailable(name: str, exc: BaseException) -> ServiceUnavailable:
    """The 503 a lost dependency becomes (also used by the lifespan and /readyz)."""
    reason = str(exc) or type(exc).__name__
    return ServiceUnavailable(
        "service_unavailable",
        f"{name} is unavailable ({reason}); retry shortly",
        retry_after=RETRY_AFTER_S,
        details={"dependency": name.lower()},
    )


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, ApiError):  # pragma: no cover - registered for ApiError only
        return await _unexpected(request, exc)
    return _json_error(
        exc.status,
        exc.code,
        exc.message,
        headers=exc.headers,
        details=exc.details,
        retryable=exc.retryable,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    message = "invalid request: " + ("; ".join(parts) or "validation failed")
    return _json_error(422, "validation_failed", message)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover
        return await _unexpected(request, exc)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return _json_error(exc.status_code, code, message, headers=exc.headers)


async def _client_disconnect(request: Request, exc: Exception) -> JSONResponse:
    log.info("client disconnected during %s %s", request.method, request.url.path)
    return _json_error(400, "client_disconnected", "the client closed the connection")


async def _maybe_unavailable(request: Request, exc: Exception) -> JSONResponse:
    name = unavailable_dependency(exc)
    if name is None:
        return await _unexpected(request, exc)
    log.warning("%s unavailable during %s %s: %r", name, request.method, request.url.path, exc)
    err = dependency_unavailable(name, exc)
    return _json_error(err.status, err.code, err.message, headers=err.headers, details=err.details)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return _json_error(500, "internal_error", "internal server error; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    """Register the table above on ``app`` (once, in :func:`backend.app.create_app`)."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    for exc_type in (
        *_POSTGRES_ERRORS,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        *_REDIS_ERRORS,
        OSError,
    ):
        app.add_exception_handler(exc_type, _maybe_unavailable)
    app.add_exception_handler(Exception, _unexpected)
