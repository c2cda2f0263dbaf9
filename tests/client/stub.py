"""Tiny real HTTP servers on loopback for the client tests (uvicorn in a thread, raw ASGI):
a scripted server answering canned responses, and a rate-limiting reverse proxy in front of
the real gateway (slow answers, a per-second limit, no Socket.IO)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from tests.harness import free_port

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def respond(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def error_json(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


class ServerThread:
    """Serve an ASGI app on ``127.0.0.1:<free port>`` until :meth:`stop`."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("stub server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    delay_s: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    body_bytes: int
    at: float


class Scripted:
    """Answers requests with ``replies`` in order (the last one repeats); records them."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.seen: list[Seen] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        self.seen.append(Seen(scope["method"], scope["path"], len(body), time.monotonic()))
        reply = self.replies[min(len(self.seen), len(self.replies)) - 1]
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        await respond(send, reply.status, reply.body, reply.headers)


class Proxy:
    """Forwards to ``upstream``. At most ``per_second`` requests in each 1-second window, the
    others answered 429 with ``Retry-After: 1`` (as nginx ``limit_req`` would); the answers
    to POSTs are held ``post_answer_delay_s`` after the upstream answered (a slow link). Socket.IO
    is not proxied (404), so clients fall back to polling."""

    HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}

    def __init__(
        self, upstream: str, per_second: int = 10**9, post_answer_delay_s: float = 0.0
    ) -> None:
        self.upstream = upstream
        self.per_second = per_second
        self.post_answer_delay_s = post_answer_delay_s
        self.rejected = 0
        self.forwarded = 0
        self._window = (0, 0)  # (second, count)

    def _admit(self) -> bool:
        second = int(time.monotonic())
        start, count = self._window
        count = count + 1 if start == second else 1
        self._window = (second, count)
        return count <= self.per_second

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        if scope["path"].startswith("/socket.io"):
            await respond(send, 404, error_json("not_found", "no socket here"), {})
            return
        if not self._admit():
            self.rejected += 1
            await respond(
                send,
                429,
                error_json("too_many_requests", "rate limit exceeded"),
                {"content-type": "application/json", "retry-after": "1"},
            )
            return
        self.forwarded += 1
        headers = [
            (k.decode(), v.decode()) for k, v in scope["headers"] if k.decode() not in self.HOP
        ]
        query = scope.get("query_string", b"").decode()
        url = self.upstream + scope["path"] + (f"?{query}" if query else "")
        async with httpx.AsyncClient(timeout=60) as http:
            r = await http.request(scope["method"], url, headers=headers, content=body)
        if scope["method"] == "POST" and self.post_answer_delay_s:
            await asyncio.sleep(self.post_answer_delay_s)
        out = {k: v for k, v in r.headers.items() if k.lower() not in self.HOP}
        await respond(send, r.status_code, r.content, out)
