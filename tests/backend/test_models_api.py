"""GET /api/v1/models: MODEL_NAMES merged with the live workers' heartbeats in the real Redis."""

from __future__ import annotations

import redis
from fastapi.testclient import TestClient

from contracts.heartbeats import worker_key
from contracts.requests import MODEL_NAMES
from tests.backend.conftest import HeartbeatWriter
from tests.backend.helpers import MAX_FILES, MAX_UPLOAD_MB, ApiUser, error_of, fake_model


def test_models_without_workers(client: TestClient, user: ApiUser) -> None:
    r = client.get("/api/v1/models", headers=user.headers)
    assert r.status_code == 200
    body = r.json()
    assert [m["name"] for m in body["models"]] == list(MODEL_NAMES)
    for m in body["models"]:
        assert m == {"name": m["name"], "variant": None, "input_size": None, "workers": []}
    assert body["limits"] == {
        "max_upload_mb": MAX_UPLOAD_MB,
        "max_files_per_job": MAX_FILES,
        "max_image_pixels": 100_000_000,
    }


def test_models_with_live_workers(
    client: TestClient,
    user: ApiUser,
    heartbeat: HeartbeatWriter,
    redis_client: redis.Redis,
) -> None:
    w1 = heartbeat([fake_model("unet"), fake_model("hrnet", "base")], name="t-a")
    w2 = heartbeat([fake_model("unet"), fake_model("not_served")], name="t-b")
    redis_client.set(worker_key("t-broken"), b"{not json", ex=60)
    try:
        body = client.get("/api/v1/models", headers=user.headers).json()
    finally:
        redis_client.delete(worker_key("t-broken"))
    models = {m["name"]: m for m in body["models"]}
    assert set(models) == set(MODEL_NAMES)
    assert models["unet"]["variant"] == "small"
    assert models["unet"]["input_size"] == [256, 256]
    assert [w["worker"] for w in models["unet"]["workers"]] == [w1, w2]
    assert models["unet"]["workers"][0] == {
        "worker": w1,
        "queue": "gpu0",
        "device": "cpu-2core",
        "batching": {"ceiling": 8, "best_batch_size": 8},
    }
    assert models["hrnet"]["variant"] == "base"
    assert [w["worker"] for w in models["hrnet"]["workers"]] == [w1]
    assert models["cbam_resunet"]["workers"] == []


def test_models_needs_a_key(client: TestClient) -> None:
    assert error_of(client.get("/api/v1/models")) == (401, "unauthorized")
