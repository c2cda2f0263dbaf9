"""NVML readings of ``cuda:0`` agree with torch's and follow an allocation; an out-of-memory on a
real allocation (the process capped by ``torch.cuda.set_per_process_memory_fraction``) splits
the batch and loses no image."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ml_service.serving.device import MB, CudaProbe, Nvml, nvml_gpus
from ml_service.serving.engine import Engine, SegmentationParams
from tests.gpu.conftest import cell_images, engine_settings


def test_nvml_reads_the_device_torch_sees() -> None:
    assert Nvml.available(), "nvidia-ml-py is installed and the driver answers"
    total = torch.cuda.get_device_properties(0).total_memory
    probe = CudaProbe(0)
    before = probe.read()
    assert abs(before.total - total) <= 0.05 * total
    assert 0 < before.free <= before.total
    assert probe.key == torch.cuda.get_device_name(0)
    assert any(g["name"] == probe.key for g in nvml_gpus())
    block = torch.empty(512 * MB, dtype=torch.uint8, device="cuda:0")
    try:
        torch.cuda.synchronize()
        after = probe.read()
        assert after.process >= before.process + 512 * MB  # torch's reserved bytes
        assert after.free <= before.free - 400 * MB  # NVML saw the allocation
    finally:
        del block
        torch.cuda.empty_cache()


def ooms(engine: Engine) -> int:
    value = engine.sizer.describe("unet")["oom_events"]
    assert isinstance(value, int)
    return value


def test_out_of_memory_on_a_real_allocation_splits_the_batch(tmp_path: Path) -> None:
    settings = engine_settings(
        tmp_path,
        models=("unet",),
        variant="full",
        allow_random_weights=True,
        max_batch_size=8,
        max_queue_delay_ms=2000,  # the 8 images below form one batch
        batch_concurrency=1,
    )
    images = cell_images(8, 1024, seed=2)
    params = SegmentationParams(0.5, 20)
    with Engine.from_settings(settings) as engine:
        backend = engine.pool.get("unet").backend
        size = engine.pool.get("unet").spec.input_size
        one = np.zeros((1, 1, size, size), np.float32)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(0)
        peaks = []
        for n in (1, 8):
            torch.cuda.reset_peak_memory_stats(0)
            backend.run(np.repeat(one, n, axis=0))
            peaks.append(torch.cuda.max_memory_allocated(0) - base)
        per_image = (peaks[1] - peaks[0]) / 7
        limit = base + peaks[0] + 2.5 * per_image  # room for one or two images, not four
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(limit / total, 0)
        try:
            oom_before = ooms(engine)
            with ThreadPoolExecutor(8) as callers:
                futures = [callers.submit(engine.segment, im, "unet", params) for im in images]
                results = [f.result(600) for f in futures]
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, 0)
            torch.cuda.empty_cache()
        assert len(results) == 8  # nothing lost
        assert ooms(engine) > oom_before
        assert engine.sizer.ceiling("unet") < 8
