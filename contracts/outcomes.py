"""The one table of why an image failed: a stable ``code`` per cause, its HTTP status and
whether repeating the same request may succeed (``retryable``).

Workers store a failed image's ``code`` (``images.error_code``) from this table; the gateway
answers with the code's status and ``retryable`` (``POST /api/v1/segment``, and its own upload
checks for the same causes). Client faults are 4xx and not retryable; server faults are 5xx, and
503 for a cause that passes (device memory, an engine shutting down, storage down). The engine's
error classes each carry one of these codes (``ml_service.errors``; a test holds every class to
an entry here); :func:`code_for` maps anything else a worker meets. One cause differs by where it
is met: a model name the gateway does not know is the client's ``unknown_model`` (422), while a
worker without a model the gateway accepted is the server's ``model_unavailable`` (503).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """One cause of failure as clients see it."""

    code: str
    status: int
    retryable: bool
    meaning: str

    @property
    def client_fault(self) -> bool:
        return self.status < 500


OUTCOMES: dict[str, Outcome] = {
    o.code: o
    for o in (
        # client faults: the same request fails again
        Outcome(
            "invalid_image",
            422,
            False,
            "not a readable image: empty, truncated, corrupt, "
            "a degenerate size or a pixel type the engine does not read",
        ),
        Outcome(
            "unsupported_format",
            415,
            False,
            "not PNG, JPEG or TIFF, or a TIFF compression this service cannot decode",
        ),
        Outcome("image_too_large", 413, False, "more pixels than MAX_IMAGE_PIXELS"),
        Outcome(
            "choose_plane_or_channel",
            422,
            False,
            "a stack (several planes or channels) without a plane/channel choice, or a choice "
            "the file does not hold; the message says what it holds",
        ),
        Outcome("invalid_parameters", 422, False, "segmentation parameters out of range"),
        Outcome("unknown_model", 422, False, "no such model"),
        Outcome(
            "too_many_objects",
            422,
            False,
            "more objects than a 16-bit label mask holds; "
            "raise threshold or min_area, or send a smaller region",
        ),
        Outcome("cancelled", 409, False, "the image was cancelled before it ran"),
        # server faults
        Outcome("out_of_memory", 503, True, "the image does not fit in device memory now"),
        Outcome("engine_closed", 503, True, "the worker was shutting down"),
        Outcome("backend_unavailable", 503, True, "the inference runtime cannot run here"),
        Outcome(
            "model_unavailable",
            503,
            True,
            "the worker that took the image does not serve its model (a deployment fault)",
        ),
        Outcome("storage_unavailable", 503, True, "the blob store is unreachable"),
        Outcome("timeout", 504, True, "no result within the time allowed"),
        Outcome("upload_missing", 500, True, "the stored upload is gone; send the image again"),
        Outcome("export_failed", 500, False, "a model could not be exported"),
        Outcome("engine_error", 500, False, "the engine failed"),
        Outcome("internal_error", 500, False, "internal server error"),
    )
}

INTERNAL = OUTCOMES["internal_error"]


def outcome(code: str | None) -> Outcome:
    """The table's entry for ``code``; an unknown or missing code is an internal error."""
    return OUTCOMES.get(code or "", INTERNAL)


def code_for(error_code: str | None) -> str:
    """The code a worker stores for an error carrying ``error_code`` (``EngineError.code``):
    itself when the table has it, else ``engine_error``."""
    return error_code if error_code in OUTCOMES else "engine_error"
