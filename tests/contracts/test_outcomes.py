"""The outcome table covers every engine error, and the gateway's own upload checks answer a
cause with the table's status."""

from __future__ import annotations

from pathlib import Path

import pytest

import ml_service.errors
from backend.errors import ApiError, outcome_error
from backend.imagecheck import check_image
from contracts.outcomes import OUTCOMES, code_for, outcome
from tests.backend import images


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


ENGINE_ERRORS = [ml_service.errors.EngineError, *_subclasses(ml_service.errors.EngineError)]


@pytest.mark.parametrize("error", ENGINE_ERRORS, ids=lambda c: c.__name__)
def test_every_engine_error_has_an_entry(error: type[ml_service.errors.EngineError]) -> None:
    assert error.code in OUTCOMES
    assert code_for(error.code) == error.code


def test_client_faults_are_4xx_and_not_retryable() -> None:
    for o in OUTCOMES.values():
        assert 400 <= o.status < 600, o
        if o.client_fault:
            assert not o.retryable, o
        if o.status == 503:
            assert o.retryable, o


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("invalid_image", 422),
        ("unsupported_format", 415),
        ("image_too_large", 413),
        ("too_many_objects", 422),
        ("out_of_memory", 503),
        ("engine_closed", 503),
        ("upload_missing", 500),
        ("storage_unavailable", 503),
        ("internal_error", 500),
    ],
)
def test_named_causes(code: str, status: int) -> None:
    assert outcome(code).status == status
    err = outcome_error(code, "why")
    assert (err.status, err.code, err.retryable) == (status, code, outcome(code).retryable)


def test_unknown_codes_are_internal_errors() -> None:
    assert outcome(None).code == outcome("no_such_code").code == "internal_error"
    assert code_for("no_such_code") == "engine_error"
    assert outcome_error("no_such_code", "").status == 500


@pytest.mark.parametrize(
    "data",
    [
        images.png(40, 40)[:-30],
        images.png_claiming(1, 100),
        images.png_claiming(8, 8, colour=2, depth=4),
        images.gif(),
        images.png_claiming(50_000, 50_000),
    ],
    ids=["truncated", "degenerate", "pixel-type", "gif", "too-large"],
)
def test_gateway_checks_answer_the_tables_status(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "upload"
    path.write_bytes(data)
    with pytest.raises(ApiError) as info:
        check_image(path, max_pixels=100_000_000)
    assert info.value.code in OUTCOMES
    assert info.value.status == outcome(info.value.code).status
