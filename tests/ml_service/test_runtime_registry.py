"""The runtime registry: a runtime is one class and one registry line.

``NothingRuntime`` is the smallest runtime there is: it runs no network and answers "no
foreground" for every pixel. Registered with one line, an engine built from the settings
(``ML_BACKEND=nothing``) loads, calibrates, warms up and segments an image through it, and the
profile key and ``engine.describe()`` name it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from ml_service.errors import RuntimeUnavailable
from ml_service.profiles import ProfileBook
from ml_service.runtimes.base import BuildRequest, RuntimeBase
from ml_service.runtimes.registry import RUNTIMES, get_runtime
from ml_service.serving.device import CpuProbe
from ml_service.serving.engine import Engine
from ml_service.serving.runtime_choice import load_models
from ml_service.settings import EngineSettings


class NothingRuntime(RuntimeBase):
    """A do-nothing runtime: probability 0 everywhere."""

    name = "nothing"

    def __init__(self, request: BuildRequest) -> None:
        self.device = request.device
        self.resident_bytes = 0
        self.calls: list[int] = []

    @classmethod
    def build(cls, request: BuildRequest) -> NothingRuntime:
        return cls(request)

    def run(self, batch: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        self.calls.append(len(batch))
        return np.zeros((len(batch), *batch.shape[2:]), np.float32)


@pytest.fixture()
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(RUNTIMES, "nothing", NothingRuntime)  # the one registry line
    yield


def test_an_engine_serves_a_registered_runtime_end_to_end(
    settings: EngineSettings, registered: None
) -> None:
    s = settings.model_copy(update={"backend": "nothing", "models": ("hrnet",)})
    with Engine.from_settings(s) as engine:
        model = engine.pool.get("hrnet")
        assert isinstance(model.runtime, NothingRuntime)
        assert model.profile_key == "hrnet/small:nothing"
        (described,) = engine.describe()["models"]
        assert described["backend"] == "nothing"
        assert described["backend_reason"] == "ML_BACKEND=nothing"
        assert described["fastpath"] is None  # nothing to configure
        image = np.full((300, 200), 128, np.uint8)
        result = engine.segment(image, "hrnet")
        assert result.labels.shape == (300, 200) and result.labels.max() == 0
        assert model.runtime.calls  # warm-up, calibration and the image all went through it


def test_auto_considers_every_registered_runtime(
    settings: EngineSettings, registered: None
) -> None:
    """Under ``auto`` the new runtime competes with the others: measured at warm-up (it is the
    fastest by far), recorded in the in-memory book under its own key."""
    book = ProfileBook()
    s = settings.model_copy(update={"backend": "auto", "models": ("hrnet",)})
    (model,) = load_models(s, CpuProbe(), book).values()
    assert book.get(CpuProbe().key, "hrnet/small:nothing") is not None
    assert model.runtime.name == "nothing"


def test_unknown_names_list_the_valid_ones(settings: EngineSettings) -> None:
    with pytest.raises(RuntimeUnavailable, match="unknown runtime 'tensorrt'; valid: torch, "):
        get_runtime("tensorrt")
    s = settings.model_copy(update={"backend": "tensorrt"})
    with pytest.raises(RuntimeUnavailable, match="ML_BACKEND='tensorrt' names no runtime; valid"):
        load_models(s, CpuProbe(), ProfileBook())


def test_an_unavailable_runtime_is_refused_with_its_reason(
    settings: EngineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Elsewhere(NothingRuntime):
        name = "elsewhere"

        @classmethod
        def available(cls, device: torch.device) -> str | None:
            return f"needs an accelerator, not {device}"

    monkeypatch.setitem(RUNTIMES, "elsewhere", Elsewhere)
    s = settings.model_copy(update={"backend": "elsewhere", "models": ("hrnet",)})
    with pytest.raises(RuntimeUnavailable, match="ML_BACKEND=elsewhere but needs an accel"):
        load_models(s, CpuProbe(), ProfileBook())
