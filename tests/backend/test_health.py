"""/healthz, /readyz, and the JSON shape of framework errors (404, 405, 500)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from backend.app import create_app
from contracts.settings import Settings
from tests.backend.conftest import HeartbeatWriter
from tests.backend.helpers import ADMIN_KEY, error_of


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


def test_probes_answer_under_the_api_prefix_too(client: TestClient) -> None:
    r = client.get("/api/v1/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    assert error_of(client.get("/api/v1/readyz")) == (503, "not_ready")  # no worker here


def test_readyz_without_a_worker(client: TestClient) -> None:
    r = client.get("/readyz")
    assert error_of(r) == (503, "not_ready")
    checks = r.json()["error"]["checks"]
    assert checks["postgresql"]["ok"] and checks["redis"]["ok"]
    assert not checks["workers"]["ok"]
    assert "workers" in r.json()["error"]["message"]


def test_readyz_with_a_worker_without_models(
    client: TestClient, heartbeat: HeartbeatWriter
) -> None:
    heartbeat(models=[])
    assert error_of(client.get("/readyz")) == (503, "not_ready")


def test_readyz_ignores_workers_of_queues_it_does_not_dispatch_to(
    client: TestClient, heartbeat: HeartbeatWriter
) -> None:
    """A worker of another service sharing the Redis database is neither counted by readiness
    nor listed by ``/workers`` (the gateway dispatches to ``DISPATCH_QUEUES`` = gpu0 only)."""
    name = heartbeat(queue="someone-elses-queue")
    assert error_of(client.get("/readyz")) == (503, "not_ready")
    listed = client.get("/api/v1/workers", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert name not in [w["name"] for w in listed["workers"]]
    assert "someone-elses-queue" not in listed["queues"]


def test_readyz_with_a_worker(client: TestClient, heartbeat: HeartbeatWriter) -> None:
    name = heartbeat()
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert all(c["ok"] for c in body["checks"].values())
    assert name in body["checks"]["workers"]["detail"]


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    assert error_of(client.get("/api/v1/nothing-here")) == (404, "not_found")
    assert error_of(client.put("/healthz")) == (405, "method_not_allowed")


def test_unexpected_errors_are_json_500(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
    assert error_of(r) == (500, "internal_error")
    assert "bug" not in r.text  # internals are logged, not shown
