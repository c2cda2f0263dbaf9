"""The client's hand-written answer types mirror the gateway's OpenAPI schema: each has the
fields of its component, with the same JSON types, and needs only what the schema requires.

The client may not import the service; this test compares the two."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import pytest

from backend.app import create_app
from cellseg_client import schema as client_schema
from contracts.settings import Settings

MIRRORS = {
    client_schema.Limits: "Limits",
    client_schema.ModelInfo: "ModelInfo",
    client_schema.Counts: "Counts",
    client_schema.ImageError: "ImageError",
    client_schema.JobImage: "JobImage",
    client_schema.Job: "JobDetail",
    client_schema.JobPage: "JobPage",
}
"""Client class → the component it mirrors; every field (``raw`` aside) is a property."""

SUBSETS = {
    client_schema.Job: ("JobCreated", "JobSummary"),
    client_schema.JobImage: ("CreatedImage",),
}
"""Other answers the same class reads: its fields without a default must be there too."""

JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array"}


@pytest.fixture(scope="module")
def components() -> dict[str, Any]:
    app = create_app(Settings(database_url="postgresql://unused/x", admin_api_key="x" * 20))
    schemas: dict[str, Any] = app.openapi()["components"]["schemas"]
    return schemas


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls) if f.name != "raw"}


def _required(field: dataclasses.Field[Any]) -> bool:
    missing = dataclasses.MISSING
    return field.default is missing and field.default_factory is missing


def _json_kinds(hint: Any) -> set[str]:
    """The JSON types a client annotation accepts (``None`` for unconstrained)."""
    if hint is Any:
        return {"any"}
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_json_kinds(a) for a in typing.get_args(hint)))
    if hint is type(None):
        return {"null"}
    if origin is not None:
        hint = origin
    if dataclasses.is_dataclass(hint):
        return {"object"}
    if hint is dict:
        return {"object"}
    return {JSON_TYPES[hint]}


def _schema_kinds(prop: dict[str, Any]) -> set[str]:
    if "anyOf" in prop:
        return set().union(*(_schema_kinds(p) for p in prop["anyOf"]))
    if "$ref" in prop:
        return {"object"}
    if "type" not in prop:
        return {"any"}
    return {prop["type"]}


@pytest.mark.parametrize("cls", list(MIRRORS), ids=lambda c: c.__name__)
def test_client_type_mirrors_its_component(cls: type, components: dict[str, Any]) -> None:
    component = components[MIRRORS[cls]]
    props = component["properties"]
    fields = _fields(cls)
    assert set(fields) == set(props), f"{cls.__name__} vs {MIRRORS[cls]}"
    hints = typing.get_type_hints(cls)
    for name in fields:
        client, server = _json_kinds(hints[name]), _schema_kinds(props[name])
        if "any" in client or "any" in server:
            continue
        assert server <= client | ({"integer"} if "number" in client else set()), (
            f"{cls.__name__}.{name}: client {client}, schema {server}"
        )
        if _required(fields[name]):
            assert name in component.get("required", []), f"{cls.__name__}.{name}"


@pytest.mark.parametrize("cls", list(SUBSETS), ids=lambda c: c.__name__)
def test_client_type_reads_its_other_answers(cls: type, components: dict[str, Any]) -> None:
    needed = {name for name, f in _fields(cls).items() if _required(f)}
    for name in SUBSETS[cls]:
        assert needed <= set(components[name]["required"]), (cls.__name__, name)
