"""The OpenAPI schema says what the code enforces and returns: bounded query parameters, the
job form's limits from ``contracts.requests``, a typed answer and the error body everywhere."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.schemas.jobs import MAX_OFFSET
from contracts.requests import (
    DEFAULT_MIN_AREA,
    DEFAULT_THRESHOLD,
    MAX_MIN_AREA,
    MAX_THRESHOLD,
    MIN_THRESHOLD,
    MODEL_NAMES,
)
from contracts.settings import Settings
from tests.backend.helpers import MAX_FILES, ApiUser, error_of


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    app = create_app(Settings(database_url="postgresql://unused/x", admin_api_key="x" * 20))
    return app.openapi()


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, ops in schema["paths"].items() for m, op in ops.items()]


@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/segment"])
def test_job_form_states_the_codes_limits(schema: dict[str, Any], path: str) -> None:
    body = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
    props = body["schema"]["properties"]
    assert props["model"]["enum"] == list(MODEL_NAMES)
    assert (props["threshold"]["minimum"], props["threshold"]["maximum"]) == (
        MIN_THRESHOLD,
        MAX_THRESHOLD,
    )
    assert props["threshold"]["default"] == DEFAULT_THRESHOLD
    assert (props["min_area"]["minimum"], props["min_area"]["maximum"]) == (0, MAX_MIN_AREA)
    assert props["min_area"]["default"] == DEFAULT_MIN_AREA
    assert "model" in body["schema"]["required"]


def test_the_file_limit_is_this_gateways_setting(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["properties"]["files"]["maxItems"] == MAX_FILES


def test_every_operation_has_a_typed_answer_and_the_error_body(schema: dict[str, Any]) -> None:
    for method, path, op in _operations(schema):
        ok = next(v for k, v in op["responses"].items() if k.startswith("2"))
        content = ok.get("content", {})
        json_schema = content.get("application/json", {}).get("schema")
        if path.endswith((".png", ".zip")):  # mask.png, preview.png, geojson.zip
            assert ("image/png" if path.endswith(".png") else "application/zip") in content
            continue
        assert json_schema and json_schema != {}, (method, path)
        for status in ("4XX", "422", "5XX"):
            ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorBody"), (method, path, status)


def test_error_body_documents_code_and_retryable(schema: dict[str, Any]) -> None:
    detail = schema["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"code", "message", "retryable"}


@pytest.mark.parametrize(
    ("query", "name"),
    [
        (f"offset={MAX_OFFSET + 1}", "offset"),
        ("offset=-1", "offset"),
        ("offset=1e3", "offset"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
    ],
)
def test_out_of_range_paging_is_a_422_naming_the_parameter(
    client: TestClient, user: ApiUser, query: str, name: str
) -> None:
    r = client.get(f"/api/v1/jobs?{query}", headers=user.headers)
    assert error_of(r) == (422, "validation_failed"), r.text
    assert name in r.json()["error"]["message"]
    assert r.json()["error"]["retryable"] is False


def test_largest_offset_answers_an_empty_page(client: TestClient, user: ApiUser) -> None:
    r = client.get(f"/api/v1/jobs?offset={MAX_OFFSET}", headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"items": [], "total": 0, "limit": 20, "offset": MAX_OFFSET}


def test_unknown_result_format(client: TestClient, user: ApiUser) -> None:
    job, image = "00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000001"
    r = client.get(f"/api/v1/jobs/{job}/images/{image}/result?format=xml", headers=user.headers)
    assert error_of(r) == (422, "invalid_format"), r.text
