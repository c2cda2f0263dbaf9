"""Typed errors of the inference engine.

Every error the engine raises for a caller derives from :class:`EngineError` and carries a
stable machine-readable ``code``; the gateway maps these classes to HTTP status codes in one
table, so nothing here knows about HTTP.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine reports to its callers."""

    code = "engine_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImage(EngineError):
    """The bytes are not a decodable image (empty, truncated, corrupt or degenerate)."""

    code = "invalid_image"


class UnsupportedFormat(InvalidImage):
    """The container format (magic bytes) or its compression is not one the engine reads.

    A known container with a pixel type the engine does not read is an :class:`InvalidImage`,
    as the gateway's upload check says too."""

    code = "unsupported_format"


class ImageTooLarge(InvalidImage):
    """The image has more pixels than ``MAX_IMAGE_PIXELS`` allows."""

    code = "image_too_large"


class StackNeedsChoice(InvalidImage):
    """A stack (planes or channel planes) without a valid ``plane``/``channel`` choice; the
    message says what the file holds and how to choose."""

    code = "choose_plane_or_channel"


class InvalidParameters(EngineError):
    """Segmentation parameters out of range (threshold, minimum area)."""

    code = "invalid_parameters"


class TooManyObjects(InvalidParameters):
    """More objects than a 16-bit label mask can hold (raise the threshold or min_area)."""

    code = "too_many_objects"


class UnknownModel(EngineError):
    """The requested model is not loaded in this engine."""

    code = "unknown_model"


class OutOfMemory(EngineError):
    """A single image does not fit in device memory even alone."""

    code = "out_of_memory"


class EngineClosed(EngineError):
    """The engine was shut down; no new work is accepted."""

    code = "engine_closed"


class RuntimeUnavailable(EngineError):
    """The requested inference runtime cannot run here (unknown, not installed, no provider for
    the device, a configuration the device cannot run). Raised at start-up, never for one
    image."""

    code = "backend_unavailable"  # the API's stable code (contracts.outcomes)


class ExportError(EngineError):
    """A model could not be exported to ONNX, or its export does not verify. Start-up only."""

    code = "export_failed"
