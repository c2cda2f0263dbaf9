"""Helpers shared by the gateway tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from fastapi.testclient import TestClient

from tests.backend.images import mask_png

PG_ADMIN_DSN = os.environ.get(
    "CELLSEG_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# A Redis database of our own, so other suites' worker heartbeats (db 0) do not leak in.
REDIS_URL = os.environ.get("CELLSEG_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
ADMIN_KEY = "test-admin-" + secrets.token_hex(8)
MAX_UPLOAD_MB = 1
MAX_FILES = 4


class Response(Protocol):
    """What the tests read from a TestClient response (httpx or httpx2, whichever Starlette's
    TestClient uses)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def text(self) -> str: ...
    @property
    def content(self) -> bytes: ...
    @property
    def request(self) -> Any: ...
    def json(self) -> Any: ...


# --- database ----------------------------------------------------------------------------------


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def dsn_for(dbname: str) -> str:
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + dbname


def create_database() -> str:
    """CREATE a fresh, empty ``cellseg_test_<random>`` database; returns its name."""
    name = f"cellseg_test_{secrets.token_hex(4)}"
    asyncio.run(_admin(f"CREATE DATABASE {name}"))
    return name


def drop_database(name: str) -> None:
    asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@contextmanager
def migrated_database() -> Iterator[str]:
    """A fresh database, migrated, dropped on exit; yields its DSN."""
    from contracts.db.migrate import apply_migrations
    from scripts.local_services import ensure_postgres

    ensure_postgres()
    name = create_database()
    try:
        url = dsn_for(name)
        asyncio.run(apply_migrations(url))
        yield url
    finally:
        drop_database(name)


@dataclass
class SyncDb:
    """Blocking access to the test database (one short connection per call)."""

    dsn: str

    def _run(self, method: str, query: str, *args: Any) -> Any:
        async def go() -> Any:
            conn = await asyncpg.connect(self.dsn)
            try:
                return await getattr(conn, method)(query, *args)
            finally:
                await conn.close()

        return asyncio.run(go())

    def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return list(self._run("fetch", query, *args))

    def fetchval(self, query: str, *args: Any) -> Any:
        return self._run("fetchval", query, *args)

    def execute(self, query: str, *args: Any) -> str:
        return str(self._run("execute", query, *args))


# --- users and requests ------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiUser:
    id: int
    name: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def new_user(client: TestClient, name: str = "alice") -> ApiUser:
    r = client.post(
        "/api/v1/users", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    return ApiUser(body["id"], body["name"], body["api_key"])


def post_job(
    client: TestClient,
    user: ApiUser,
    files: list[tuple[str, bytes]],
    model: str | None = "unet",
    **fields: Any,
) -> Response:
    data = {k: str(v) for k, v in fields.items()}
    if model is not None:
        data["model"] = model
    return client.post(
        "/api/v1/jobs",
        headers=user.headers,
        data=data,
        files=[("files", (name, content, "application/octet-stream")) for name, content in files],
    )


def error_of(response: Response) -> tuple[int, str]:
    """``(status, error code)`` of an error response (asserting the JSON error shape)."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return response.status_code, body["error"]["code"]


def upload_files(upload_dir: Path) -> set[str]:
    """Names in UPLOAD_DIR: blobs and temp files."""
    return {p.name for p in upload_dir.iterdir()}


# --- simulated workers -------------------------------------------------------------------------


def fake_model(name: str, variant: str = "small") -> dict[str, Any]:
    return {
        "name": name,
        "variant": variant,
        "input_size": [256, 256],
        "backend": "torch",
        "batching": {"ceiling": 8, "best_batch_size": 8},
    }


def store_result(db: SyncDb, image_id: str, objects: int = 1, seq: int = 0) -> None:
    """Do what a worker does for a done image: store its result, mark it done."""
    result = {"width": 32, "height": 24, "model": "unet", "count": objects, "objects": []}
    geojson = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": str(k + 1),
                "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
                "properties": {"objectType": "detection", "label": k + 1},
            }
            for k in range(objects)
        ],
    }
    coco = {
        "images": [{"id": seq, "file_name": "image", "width": 32, "height": 24}],
        "annotations": [
            {"id": k + 1, "image_id": seq, "category_id": 1, "area": 4.0, "bbox": [0, 0, 2, 2]}
            for k in range(objects)
        ],
        "categories": [{"id": 1, "name": "cell", "supercategory": "cell"}],
    }
    db.execute(
        "INSERT INTO results (image_id, objects, result, geojson, coco, mask_png) "
        "VALUES ($1, $2, $3::jsonb, $4::jsonb, $5::jsonb, $6)",
        uuid.UUID(image_id),
        objects,
        json.dumps(result),
        json.dumps(geojson),
        json.dumps(coco),
        mask_png(),
    )
    set_status(db, image_id, "done")


def set_status(
    db: SyncDb, image_id: str, status: str, error_code: str | None = None, error: str | None = None
) -> None:
    db.execute(
        "UPDATE images SET status = $2, error_code = $3, error = $4 WHERE id = $1",
        uuid.UUID(image_id),
        status,
        error_code,
        error,
    )
