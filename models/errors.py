"""Errors of the model layer (registry lookups and weight files)."""

from __future__ import annotations


class ModelError(Exception):
    """Base class of model-layer errors; ``code`` is stable and machine readable."""

    code = "model_error"


class UnknownModelSpec(ModelError, KeyError):
    """No registry entry for the requested (name, variant)."""

    code = "unknown_model"

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class WeightsError(ModelError):
    """A weight file is missing, corrupt, or made for another architecture."""

    code = "weights_error"
