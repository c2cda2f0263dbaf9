"""Each loaded model's runtime set up in an engine, through the runtime protocol
(``ml_service.runtimes.base``): configured from the model's profile at start-up (its
``apply_profile``: torch's fast path, OpenVINO's precision, ...), the process-wide switches
once every model is configured (``prepare_process``), the warm-up runs (every batch size the
sizer may pick where a runtime compiles per size), and the model's configuration in
``engine.describe()``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from ml_service.profiles import ModelProfile
from ml_service.runtimes.registry import RUNTIMES
from ml_service.serving.pool import LoadedModel, for_input_size
from ml_service.settings import EngineSettings

log = logging.getLogger(__name__)


def configure_model(
    model: LoadedModel, profile: ModelProfile | None, settings: EngineSettings
) -> None:
    """Run the configuration recorded in ``profile`` (measured by the profiler; ignored when
    it is for another input size), or the one the settings force; the reason goes to
    ``model.config_reason``."""
    reason = model.runtime.apply_profile(for_input_size(profile, model.spec), settings)
    model.config_reason = reason
    if reason:
        log.info("%s: %s (%s)", model.profile_key, model.runtime.label or "default", reason)


def prepare_process(models: Iterable[LoadedModel], device_kind: str) -> None:
    """Every registered runtime's process-wide switches, given the models configured."""
    built = [m.runtime for m in models]
    for runtime in RUNTIMES.values():
        runtime.prepare_process([r for r in built if r.name == runtime.name], device_kind)


def warm_up_model(model: LoadedModel, ceiling: int) -> None:
    """Run the runtime's ``warm_up_sizes`` on zeros, the path requests take (device threshold
    where the runtime has one), so no request pays for allocation, kernel selection or
    compilation."""
    size = model.spec.input_size
    runtime = model.runtime
    sizes, runs = runtime.warm_up_sizes(ceiling)
    for n in sizes:
        x = np.zeros((n, model.spec.in_channels, size, size), np.float32)
        for _ in range(runs):
            if runtime.returns_masks:
                runtime.run(x, np.full(n, 0.5, np.float32))
            else:
                runtime.run(x)


def describe(model: LoadedModel) -> dict[str, Any] | None:
    """A model's runtime configuration and why (``engine.describe()``); None when the runtime
    has nothing to configure."""
    described = model.runtime.describe()
    if described is None:
        return None
    return {**described, "reason": model.config_reason}
