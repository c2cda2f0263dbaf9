"""Typed errors from the service's error bodies (pure)."""

from __future__ import annotations

import pytest

from cellseg_client import errors


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequest),
        (401, errors.Unauthorized),
        (404, errors.NotFound),
        (409, errors.NotReady),
        (413, errors.PayloadTooLarge),
        (415, errors.UnsupportedMediaType),
        (422, errors.ValidationFailed),
        (429, errors.RateLimited),
        (500, errors.ServerError),
        (503, errors.ServiceUnavailable),
        (504, errors.GatewayTimeout),
        (418, errors.ApiError),
    ],
)
def test_status_picks_the_class_and_the_body_fills_it(status: int, cls: type) -> None:
    body = {"error": {"code": "some_code", "message": "why", "job_id": "j1"}}
    exc = errors.api_error(status, body, retry_after=2.0)
    assert type(exc) is cls
    assert (exc.status, exc.code, exc.message) == (status, "some_code", "why")
    assert exc.details == {"job_id": "j1"} and exc.retry_after == 2.0


def test_a_body_that_is_not_the_services_still_gives_a_typed_error() -> None:
    exc = errors.api_error(502, None, "<html>Bad Gateway</html>")
    assert isinstance(exc, errors.ServiceUnavailable)
    assert exc.code == "http_502" and "Bad Gateway" in exc.message


@pytest.mark.parametrize(
    ("status", "said", "retryable"),
    [
        (503, True, True),
        (500, True, True),
        (503, None, True),
        (422, None, False),
        (500, None, False),
    ],
)
def test_retryable_is_the_servers_word_else_the_status(
    status: int, said: bool | None, retryable: bool
) -> None:
    error: dict[str, object] = {"code": "c", "message": "m"}
    if said is not None:
        error["retryable"] = said
    assert errors.api_error(status, {"error": error}).retryable is retryable
