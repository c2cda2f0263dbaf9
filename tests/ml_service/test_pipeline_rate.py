"""The whole-path rate the profiler records: real engine, real result formats."""

from __future__ import annotations

import pytest

from ml_service.profiles import ProfileBook
from ml_service.serving.engine import Engine
from ml_service.settings import EngineSettings
from ml_service.tools.pipeline_rate import measure_pipeline, record_pipeline_rates, sample_pngs

pytestmark = pytest.mark.slow  # loads, compiles or measures real models


def test_sample_pngs_are_deterministic_pngs() -> None:
    a, b = sample_pngs(64, 2), sample_pngs(64, 2)
    assert a == b and all(p.startswith(b"\x89PNG") for p in a)
    mixed = sample_pngs(64, 3, seed=20_000, kind=None)  # the bench's: a random kind each
    assert mixed == sample_pngs(64, 3, seed=20_000, kind=None) and mixed[:2] != a


def test_measure_pipeline_runs_the_engine(settings: EngineSettings) -> None:
    with Engine.from_settings(settings.model_copy(update={"models": ("unet",)})) as engine:
        rate = measure_pipeline(engine, "unet", size=128, images=4, callers=2)
        assert rate > 0
        assert engine.stats.images_done >= 4 + 2  # warm-up pass and the measured pass


def test_record_pipeline_rates_writes_the_backend_in_use(settings: EngineSettings) -> None:
    s = settings.model_copy(update={"models": ("hrnet",), "backend": "torch"})
    book = ProfileBook.load(s.profiles_path)
    with Engine.from_settings(s) as engine:  # calibrates: puts a profile for this device
        device = engine.probe.key
        key = engine.pool.models["hrnet"].profile_key
        book.put(device, key, engine.sizer.profile("hrnet"))
    rates = record_pipeline_rates(book, s, device, images=4)
    assert rates["hrnet"] > 0
    stored = book.get(device, key)
    assert stored is not None and stored.pipeline_images_per_s == rates["hrnet"]
