"""The worker's Prometheus registry reports what the engine really did, OOM retries included."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from prometheus_client import generate_latest

from ml_service.profiles import ModelProfile, ProfileBook
from ml_service.serving.device import CpuProbe
from ml_service.serving.engine import Engine
from ml_service.serving.pool import ModelPool
from ml_service.settings import EngineSettings
from tests.ml_service.fakes import RecordingRuntime
from workers.metrics import WorkerMetrics

pytestmark = pytest.mark.slow  # loads, compiles or measures real models


def test_registry_counts_batches_images_and_oom_retries(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = EngineSettings(
        device="cpu", models=("hrnet",), profiles_path=tmp_path / "p.json", max_queue_delay_ms=50
    )
    pool = ModelPool.load(settings, CpuProbe().torch_device)
    injected = RecordingRuntime(oom_above=2)
    injected.module = pool.get("hrnet").runtime.module  # the real model, OOM above batch 2
    pool.models["hrnet"].runtime = injected
    book = ProfileBook()
    book.put(CpuProbe().key, "hrnet/small:torch", ModelProfile(0, 1, 8, 8, input_size=(256, 256)))
    with Engine(settings, pool.models, CpuProbe(), profiles=book) as engine:
        metrics = WorkerMetrics(engine)
        image = np.zeros((256, 256), np.uint8)
        with ThreadPoolExecutor(8) as callers:
            results = list(callers.map(lambda _: engine.segment(image, "hrnet"), range(8)))
        for r in results:
            metrics.observe_image("hrnet", "done", r.timings_ms["queue"])
        text = generate_latest(metrics.registry).decode()
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values['cellseg_worker_images_total{model="hrnet",status="done"}'] == 8
    assert values['cellseg_oom_retries_total{model="hrnet"}'] >= 1
    assert values['cellseg_batch_ceiling{model="hrnet"}'] <= 2
    assert values['cellseg_batch_size_count{model="hrnet"}'] >= 4  # successful batches only
    assert values['cellseg_queue_wait_seconds_count{model="hrnet"}'] == 8
    assert values['cellseg_sizer_memory_bytes{kind="capacity"}'] > 0
