"""Building blocks of the schemas: strings from a fixed set, timestamps, form bodies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BaseModel, GetCoreSchemaHandler, GetJsonSchemaHandler, WithJsonSchema
from pydantic_core import CoreSchema, core_schema


class OneOf:
    """Metadata for ``Annotated[str, OneOf(NAMES)]``: validated against ``names`` and
    documented as their ``enum`` (the names stay defined once, in :mod:`contracts`)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(names)

    def _check(self, value: str) -> str:
        if value not in self.names:
            raise ValueError(f"must be one of: {', '.join(self.names)}")
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.names)}


Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
"""An ISO 8601 time with its UTC offset, as PostgreSQL's ``timestamptz`` gives it."""


def multipart_body(form: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a route's streamed ``multipart/form-data`` body as
    ``form`` (the route reads the body itself, field by field, with the same limits)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": form.model_json_schema()}},
        }
    }
