"""The worker's HTTP port: /healthz, /readyz (503 while draining) and /metrics."""

from __future__ import annotations

import json
from typing import Any

from workers.metrics import HEALTH_PATHS, health_app


def call(app: Any, path: str) -> tuple[str, dict[str, Any] | bytes]:
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"] = status

    body = b"".join(app({"PATH_INFO": path}, start_response))
    try:
        return seen["status"], json.loads(body)
    except ValueError:
        return seen["status"], body


def metrics_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"cellseg_up 1\n"]


def test_health_paths_answer_and_readyz_follows_the_worker_state() -> None:
    reason: list[str | None] = [None]
    app = health_app(metrics_app, lambda: reason[0])
    assert call(app, "/healthz") == ("200 OK", {"status": "ok"})
    assert call(app, "/readyz") == ("200 OK", {"status": "ready"})
    assert call(app, "/metrics") == ("200 OK", b"cellseg_up 1\n")
    reason[0] = "draining: finishing the tasks in flight before exit"
    status, body = call(app, "/readyz")
    assert status.startswith("503")
    assert body == {"error": {"code": "not_ready", "message": reason[0]}}
    assert set(HEALTH_PATHS) == {"/healthz", "/readyz", "/metrics"}
