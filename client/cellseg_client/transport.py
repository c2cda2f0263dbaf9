"""HTTP transport: one ``httpx.AsyncClient``, the API key, retries and typed errors.

Every request of :class:`~cellseg_client.AsyncClient` goes through :meth:`AsyncTransport.request`
(load testers and other tools may use it directly). Uploads are described as
:class:`FilePart` records and opened afresh for every try, so a retried upload streams the
files again from disk instead of holding them in memory.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cellseg_client.errors import ApiError, TransportError, api_error
from cellseg_client.retry import IDEMPOTENT_METHODS, RetryPolicy, parse_retry_after

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)

# Failures that happen before any byte of the request reached the server: always safe to retry.
_NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)


@dataclass(frozen=True)
class FilePart:
    """One file of a multipart upload: form ``field``, local ``path``, the ``filename`` sent."""

    field: str
    path: Path
    filename: str
    content_type: str = "application/octet-stream"


class AsyncTransport:
    """Sends requests to one CellSeg Serve gateway with an API key, retrying what may be
    retried (see :mod:`cellseg_client.retry`) and raising typed errors for the rest.

    Args:
        url: the gateway's base URL (``http://127.0.0.1:8000``).
        api_key: sent as ``Authorization: Bearer <key>``.
        retry: the retry policy of every request unless a call gives its own.
        timeout: httpx timeout of every request unless a call gives its own.
        max_connections: connection pool size (bounds concurrent requests).
        seed: seed of the backoff jitter (tests).
    """

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_connections: int = 16,
        seed: int | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.retry = retry or RetryPolicy()
        self._rng = random.Random(seed)
        headers = {"User-Agent": "cellseg-client"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        files: Sequence[FilePart] = (),
        timeout: httpx.Timeout | float | None = None,
        retry: RetryPolicy | None = None,
        raise_for_status: bool = True,
    ) -> httpx.Response:
        """Send one request (retrying per policy) and answer its response.

        Args:
            path: absolute path on the gateway (``/api/v1/jobs``, ``/readyz``).
            files: multipart file parts, reopened for each try.
            raise_for_status: when False, an error answer that is not retried is returned.

        Raises:
            ApiError: (a subclass by status) the final answer was an error.
            TransportError: no answer after the retries allowed.
        """
        policy = retry or self.retry
        method = method.upper()
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._send(method, path, params, json, data, files, timeout)
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                retryable = isinstance(exc, _NOT_SENT) or method in IDEMPOTENT_METHODS
                delay = policy.delay(attempt, None, self._rng)
                if not retryable or not policy.may_retry(
                    attempt, time.monotonic() - started, delay
                ):
                    raise TransportError(f"{method} {self.url}{path}: {reason}") from exc
                log.warning("%s %s: %s; retry %d in %.1f s", method, path, reason, attempt, delay)
                await asyncio.sleep(delay)
                continue
            if response.status_code < 400:
                return response
            error = self._error(response)
            delay = policy.delay(attempt, error.retry_after, self._rng)
            if response.status_code in policy.statuses and policy.may_retry(
                attempt, time.monotonic() - started, delay
            ):
                log.warning(
                    "%s %s: %d %s; retry %d in %.1f s",
                    method,
                    path,
                    error.status,
                    error.code,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            if raise_for_status:
                raise error
            return response

    async def get_json(self, path: str, **kwargs: Any) -> Any:
        return (await self.request("GET", path, **kwargs)).json()

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        json: Any,
        data: Mapping[str, str] | None,
        files: Sequence[FilePart],
        timeout: httpx.Timeout | float | None,
    ) -> httpx.Response:
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = timeout
        with ExitStack() as stack:
            parts = [
                (p.field, (p.filename, stack.enter_context(p.path.open("rb")), p.content_type))
                for p in files
            ]
            return await self._http.request(
                method,
                path,
                params=params,
                json=json,
                data=data,
                files=parts or None,
                **extra,
            )

    @staticmethod
    def _error(response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return api_error(response.status_code, body, response.text, retry_after)
