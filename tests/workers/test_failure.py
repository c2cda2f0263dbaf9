"""What the worker stores for a failed image: a code of the outcome table and a message."""

from __future__ import annotations

import pytest

from contracts.outcomes import OUTCOMES
from contracts.storage import BlobNotFound
from ml_service.errors import (
    EngineClosed,
    EngineError,
    InvalidImage,
    OutOfMemory,
    TooManyObjects,
    UnknownModel,
)
from workers.tasks import failure


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidImage("corrupt"), "invalid_image"),
        (TooManyObjects("70000 objects"), "too_many_objects"),
        (OutOfMemory("does not fit"), "out_of_memory"),
        (EngineClosed("closed"), "engine_closed"),
        (EngineError("broke"), "engine_error"),
    ],
)
def test_engine_errors_keep_their_code(error: EngineError, code: str) -> None:
    assert failure(error) == (code, error.message)
    assert code in OUTCOMES


def test_a_model_the_worker_lacks_is_a_server_fault() -> None:
    code, message = failure(UnknownModel("model 'hrnet' is not loaded; loaded models: unet"))
    assert code == "model_unavailable" and "hrnet" in message
    assert OUTCOMES[code].status == 503 and OUTCOMES[code].retryable


def test_missing_upload() -> None:
    code, message = failure(BlobNotFound("no such blob", key="abc123"))
    assert code == "upload_missing" and "abc123" in message


def test_a_code_outside_the_table_is_an_engine_error() -> None:
    class Strange(EngineError):
        code = "strange"

    assert failure(Strange("odd"))[0] == "engine_error"
