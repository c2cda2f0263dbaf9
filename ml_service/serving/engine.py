"""The engine's face for callers: submit an image for a model, get a future of its result.

    engine = Engine.from_settings()            # load, verify, warm up, calibrate
    future = engine.submit(image, "hrnet", SegmentationParams(threshold=0.5, min_area=50))
    result = future.result()                   # SegmentationResult
    engine.describe()                          # models, batch profiles, memory, GPUs
    engine.close()

Work flows: decode and preprocess on a CPU thread (in a worker process when
``ML_CPU_WORKERS`` > 0, see ``ml_service.serving.cpu_stages``) → each model input (one, or several
tiles) to the model's ``DynamicBatcher`` (batched with other callers' inputs, no lock; with the
request's threshold where thresholding before stitching is exact, so the device returns uint8
masks, not probabilities) → when every tile is back, stitch and postprocess (again in a worker
process when there is a pool) → the result future resolves. Torch models run the fast-path
configuration recorded for the device or forced by ``ML_PRECISION``/``ML_COMPILE``
(``ml_service.runtimes.torch.fastpath``, wired in by ``ml_service.serving.runtime_setup``); with
``ML_DEVICE_PREPROCESS`` the CPU stage only decodes and preprocessing runs on the device
(``ml_service.imaging.device_preprocess``). The engine knows nothing of Celery, HTTP or databases.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ml_service.errors import EngineClosed, EngineError, InvalidParameters
from ml_service.imaging.device_preprocess import prepare_on_device, use_device_preprocess
from ml_service.profiles import ProfileBook, default_profile
from ml_service.results import AUTO, SegmentationParams, SegmentationResult
from ml_service.serving import runtime_setup
from ml_service.serving.batcher import BatchOutput, DynamicBatcher, Item, busy_ms
from ml_service.serving.calibration import budget_mb, calibrate
from ml_service.serving.cpu_stages import (
    CpuStages,
    Planned,
    Prepared,
    decode_and_plan,
    decode_and_prepare,
    default_cpu_workers,
    pixel_exact,
    postprocess_outputs,
)
from ml_service.serving.device import MB, CachedProbe, DeviceProbe, make_probe, nvml_gpus
from ml_service.serving.diameter import estimate_diameter, train_diameter
from ml_service.serving.pool import LoadedModel, ModelPool
from ml_service.serving.runtime_choice import load_models
from ml_service.serving.sizer import BatchSizer, MemoryLedger
from ml_service.serving.threads import apply_torch_threads, available_cores, thread_plan
from ml_service.settings import EngineSettings, get_settings

__all__ = ["Engine", "EngineStats", "SegmentationParams", "SegmentationResult"]

log = logging.getLogger(__name__)


class _Gather:
    """Calls ``done(outputs)`` once every future succeeded, or ``failed(exc)`` on the first
    failure; never both."""

    def __init__(
        self,
        futures: list[Future[BatchOutput]],
        done: Callable[[list[BatchOutput]], None],
        failed: Callable[[BaseException], None],
    ) -> None:
        self._futures = futures
        self._left = len(futures)
        self._fired = False
        self._lock = threading.Lock()
        self._done, self._failed = done, failed
        for f in futures:
            f.add_done_callback(self._one)

    def _one(self, future: Future[BatchOutput]) -> None:
        exc = future.exception() if not future.cancelled() else EngineClosed("cancelled")
        with self._lock:
            if self._fired:
                return
            self._left -= 1
            if exc is None and self._left:
                return
            self._fired = True
        if exc is not None:
            self._failed(exc)
        else:
            self._done([f.result() for f in self._futures])


class EngineStats:
    """Counters for metrics; listeners get every batch as (model, size, seconds)."""

    def __init__(self) -> None:
        self.images_done = 0
        self.images_failed = 0
        self.batches: dict[int, int] = {}
        self.listeners: list[Callable[[str, int, float], None]] = []
        self._lock = threading.Lock()

    def on_batch(self, model: str, size: int, seconds: float) -> None:
        with self._lock:
            self.batches[size] = self.batches.get(size, 0) + 1
        for listener in self.listeners:
            listener(model, size, seconds)

    def count(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self.images_done += 1
            else:
                self.images_failed += 1


class Engine:
    """Models on one device, a batcher per model, a shared memory ledger."""

    def __init__(
        self,
        settings: EngineSettings,
        models: dict[str, LoadedModel],
        probe: DeviceProbe,
        *,
        profiles: ProfileBook | None = None,
        calibrate_missing: bool = True,
    ) -> None:
        self.settings = settings
        self.pool = ModelPool(models)
        self.probe = CachedProbe(probe)
        limit = int(settings.memory_limit_gb * 1024**3) if settings.memory_limit_gb else None
        self.ledger = MemoryLedger(
            self.probe, limit_bytes=limit, safety_bytes=settings.memory_safety_mb * MB
        )
        self.ledger.add_resident(self.pool.resident_bytes())
        self.sizer = BatchSizer(self.ledger)
        self.stats = EngineStats()
        concurrency = settings.batch_concurrency or (2 if probe.kind == "cuda" else 1)
        self.batch_concurrency = concurrency  # batches that may run on the device at once
        self._slots = threading.Semaphore(concurrency)
        self._device_pool = ThreadPoolExecutor(concurrency, thread_name_prefix="engine-device")
        workers = settings.cpu_workers
        self.cpu_workers = default_cpu_workers(available_cores()) if workers is None else workers
        # with a process pool each CPU thread mostly waits for a worker process: one per worker
        self._cpu = ThreadPoolExecutor(
            settings.cpu_threads + self.cpu_workers, thread_name_prefix="engine-cpu"
        )
        self._stages = CpuStages(self.cpu_workers)
        self._closed = False
        self.startup_s: dict[str, float] = {}
        book = profiles or ProfileBook()
        budget = budget_mb(probe, settings, self.pool.resident_bytes())
        self.batchers: dict[str, DynamicBatcher] = {}
        self.device_preprocess = {
            name: use_device_preprocess(
                settings.device_preprocess,
                m.runtime.name,
                m.runtime.device,
                m.runtime.accepts_device_tensors,
            )
            for name, m in models.items()
        }
        for name, model in models.items():
            profile = book.get(probe.key, model.profile_key)
            runtime_setup.configure_model(model, profile, settings)  # before calibrating it
            if profile is None or profile.input_size != (model.spec.input_size,) * 2:
                if calibrate_missing:
                    log.info("%s: no profile for %s; calibrating", model.profile_key, probe.key)
                    profile = calibrate(model, probe, budget)
                else:
                    profile = default_profile(model.spec.input_size, probe.kind)
            self.sizer.register(name, profile, settings.max_batch_size)
            size = model.spec.input_size
            self.batchers[name] = DynamicBatcher(
                name,
                model.runtime,
                self.sizer,
                self._device_pool,
                self._slots,
                item_shape=(model.spec.in_channels, size, size),
                max_queue_delay_s=settings.max_queue_delay_ms / 1000,
                on_batch=self.stats.on_batch,
            )
        runtime_setup.prepare_process(models.values(), probe.kind)

    @classmethod
    def from_settings(cls, settings: EngineSettings | None = None) -> Engine:
        """Load every model in ``ML_MODELS`` on ``ML_DEVICE`` behind the runtime ``ML_BACKEND``
        chooses for it, verify weights, warm up."""
        settings = settings or get_settings()
        started = time.monotonic()
        probe = make_probe(settings.device)
        apply_torch_threads(thread_plan(settings, probe.kind))
        book = ProfileBook.load(settings.profiles_path)
        models = load_models(settings, probe, book)  # ML_BACKEND resolved per model
        loaded = time.monotonic()
        engine = cls(settings, models, probe, profiles=book)
        engine.warm_up()
        engine.startup_s = {
            "load": round(loaded - started, 3),
            "calibrate_and_warm_up": round(time.monotonic() - loaded, 3),
        }
        log.info("engine ready: %s", engine.startup_s)
        return engine

    # ---- public API --------------------------------------------------------------------

    def warm_up(self) -> None:
        """Run batch sizes 1 and the ceiling once (allocator, kernels, autotuning); a compiled
        torch model runs every size the sizer may pick (1 … ceiling; three times with CUDA
        graphs, recorded on a later run than the first), so no request pays for compilation
        (``runtime_setup.warm_up_model``). Starts the CPU worker processes meanwhile (they
        import on the other cores while the models compile) and waits for them."""
        started = self._stages.start()
        for name, model in self.pool.models.items():
            runtime_setup.warm_up_model(model, self.sizer.ceiling(name))
        self._stages.wait_started(started)

    def submit(
        self,
        image: np.ndarray | bytes,
        model: str,
        params: SegmentationParams | None = None,
    ) -> Future[SegmentationResult]:
        """Segment one image (decoded array, or encoded PNG/JPEG/TIFF bytes) with ``model``.

        Raises ``UnknownModel``/``InvalidParameters``/``EngineClosed`` at once; problems with the
        image itself resolve the future with an ``EngineError``.
        """
        if self._closed:
            raise EngineClosed("engine is closed")
        loaded = self.pool.get(model)
        params = (params or SegmentationParams()).validate()
        if params.diameter is not None and train_diameter(loaded) is None:
            raise InvalidParameters(
                f"diameter cannot be used with {model}: its weights' sidecar records no "
                "train_diameter_px"
            )
        result: Future[SegmentationResult] = Future()
        result.set_running_or_notify_cancel()
        self._cpu.submit(self._start, image, loaded, params, result, time.monotonic())
        return result

    def segment(
        self, image: np.ndarray | bytes, model: str, params: SegmentationParams | None = None
    ) -> SegmentationResult:
        """Blocking convenience around ``submit``."""
        return self.submit(image, model, params).result()

    def describe(self) -> dict[str, Any]:
        """Models (spec, weights, batch profile), device, memory ledger and NVML readings."""
        return {
            "device": self.probe.key,
            "device_kind": self.probe.kind,
            "models": [
                {
                    **m.spec.describe(),
                    "backend": m.runtime.name,
                    "backend_reason": m.runtime_reason,
                    "fastpath": runtime_setup.describe(m),
                    "device_preprocess": dict(
                        zip(("on", "reason"), self.device_preprocess[name], strict=True)
                    ),
                    "weights": m.describe_weights(),
                    "batching": {
                        **self.sizer.describe(name),
                        "queue_depth": self.batchers[name].queue_depth(),
                        "in_flight": self.batchers[name].in_flight(),
                    },
                }
                for name, m in self.pool.models.items()
            ],
            "memory": self.ledger.snapshot(),
            "cpu_workers": self.cpu_workers,
            "batch_concurrency": self.batch_concurrency,
            "gpus": nvml_gpus(),
        }

    def queue_depth(self) -> int:
        return sum(b.queue_depth() for b in self.batchers.values())

    def close(self) -> None:
        """Finish queued work, then stop threads."""
        if self._closed:
            return
        self._closed = True
        for b in self.batchers.values():
            b.close()
        self._device_pool.shutdown(wait=True)
        self._cpu.shutdown(wait=True)
        self._stages.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- pipeline ----------------------------------------------------------------------

    def _start(
        self,
        image: np.ndarray | bytes,
        model: LoadedModel,
        params: SegmentationParams,
        result: Future[SegmentationResult],
        t0: float,
        diameter: float | None = None,
    ) -> None:
        """One pass: at the request's diameter, or at ``diameter`` (a second pass of
        ``diameter="auto"``); None segments the image as it is."""
        if isinstance(params.diameter, int | float):
            diameter = float(params.diameter)
        trained = train_diameter(model)
        scale = trained / diameter if diameter is not None and trained is not None else 1.0
        try:
            prepared, items = self._prepare(image, model, scale)
            t_pre = time.monotonic()
            batcher = self.batchers[model.spec.name]
            exact = pixel_exact(prepared.restore) and scale == 1.0
            threshold = params.threshold if exact else None
            futures = [batcher.submit(item, threshold) for item in items]
        except Exception as exc:
            self._fail(result, exc)
            return

        def done(outputs: list[BatchOutput]) -> None:
            self._cpu.submit(
                self._finish, outputs, prepared, model, params, result, t0, t_pre, image, diameter
            )

        _Gather(futures, done, lambda exc: self._fail(result, exc))

    def _prepare(
        self, image: np.ndarray | bytes, model: LoadedModel, scale: float
    ) -> tuple[Prepared | Planned, list[Item]]:
        """Decode and rescale, then preprocess in the CPU stage, or (``ML_DEVICE_PREPROCESS``)
        only plan there and preprocess on the model's device; one model input per tile."""
        size, overlap = model.spec.input_size, self.settings.tile_overlap
        limit = self.settings.max_image_pixels
        if self.device_preprocess[model.spec.name][0]:
            planned = self._stages.call(decode_and_plan, image, limit, size, overlap, scale)
            inputs = prepare_on_device(planned.pixels, planned.restore, model.runtime.device)
            return planned, [inputs[i : i + 1] for i in range(len(inputs))]
        prepared = self._stages.call(decode_and_prepare, image, limit, size, overlap, scale)
        return prepared, [np.ascontiguousarray(t[None]) for t in prepared.inputs]

    def _finish(
        self,
        outputs: list[BatchOutput],
        prepared: Prepared | Planned,
        model: LoadedModel,
        params: SegmentationParams,
        result: Future[SegmentationResult],
        t0: float,
        t_pre: float,
        image: np.ndarray | bytes,
        diameter: float | None,
    ) -> None:
        try:
            t_post = time.monotonic()
            trained = train_diameter(model)
            size_scale = diameter / trained if diameter is not None and trained else 1.0
            labels, objects, _ = self._stages.call(
                postprocess_outputs,
                [o.prob for o in outputs],
                prepared.restore,
                params.threshold,
                params.min_area,
                params.split,
                (prepared.height, prepared.width),
                size_scale,
            )
            if params.diameter == AUTO and diameter is None and trained is not None:
                found = estimate_diameter(objects, trained, (prepared.height, prepared.width))
                if found != trained:  # rescale and run again
                    self._cpu.submit(self._start, image, model, params, result, t0, found)
                    return
                diameter = found
            end = time.monotonic()
            timings = {
                "preprocess": 1000 * (t_pre - t0),
                "queue": max(o.queued_ms for o in outputs),
                "inference": busy_ms(outputs),
                "postprocess": 1000 * (end - t_post),
                "total": 1000 * (end - t0),
            }
            result.set_result(
                SegmentationResult(
                    model=model.spec.name,
                    variant=model.spec.variant,
                    width=prepared.width,
                    height=prepared.height,
                    params=params,
                    labels=labels,
                    objects=objects,
                    timings_ms={k: round(v, 2) for k, v in timings.items()},
                    tiles=len(outputs),
                    batch_sizes=[o.batch_size for o in outputs],
                    diameter_px=None if diameter is None else round(diameter, 2),
                )
            )
            self.stats.count(ok=True)
        except Exception as exc:
            self._fail(result, exc)

    def _fail(self, result: Future[SegmentationResult], exc: BaseException) -> None:
        self.stats.count(ok=False)
        if not isinstance(exc, EngineError):
            log.exception("unexpected error in the engine pipeline", exc_info=exc)
            exc = EngineError(f"processing failed: {exc}")
        if not result.done():
            result.set_exception(exc)
