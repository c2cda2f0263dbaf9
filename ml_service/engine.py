"""The engine's face for callers: submit an image for a model, get a future of its result.

    engine = Engine.from_settings()            # load, verify, warm up, calibrate
    future = engine.submit(image, "hrnet", SegmentationParams(threshold=0.5, min_area=50))
    result = future.result()                   # SegmentationResult
    engine.describe()                          # models, batch profiles, memory, GPUs
    engine.close()

Work flows: decode and preprocess on a CPU thread → each model input (one, or several tiles)
to the model's ``DynamicBatcher`` (batched with other callers' inputs, no lock) → when every
tile is back, stitch and postprocess on a CPU thread → the result future resolves. The engine
knows nothing of Celery, HTTP or databases.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_service.backend_choice import load_models
from ml_service.batcher import BatchOutput, DynamicBatcher
from ml_service.device import MB, CachedProbe, DeviceProbe, make_probe, nvml_gpus
from ml_service.errors import EngineClosed, EngineError, InvalidImage, InvalidParameters
from ml_service.formats import label_mask_png, objects_to_coco, objects_to_geojson, objects_to_json
from ml_service.imageio import decode_image
from ml_service.pool import LoadedModel, ModelPool
from ml_service.postprocess import SegmentedObject, extract_objects
from ml_service.preprocess import prepare
from ml_service.profile import budget_mb, calibrate
from ml_service.profiles import ProfileBook, default_profile
from ml_service.settings import EngineSettings, get_settings
from ml_service.sizer import BatchSizer, MemoryLedger
from ml_service.threads import apply_torch_threads, thread_plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentationParams:
    """User-set postprocessing: probability threshold and minimum object area in pixels."""

    threshold: float = 0.5
    min_area: int = 50

    def validate(self) -> SegmentationParams:
        if not 0.05 <= self.threshold <= 0.95:
            raise InvalidParameters(f"threshold must be within 0.05–0.95, got {self.threshold}")
        if not 0 <= self.min_area <= 10_000_000:
            raise InvalidParameters(f"min_area must be within 0–10000000, got {self.min_area}")
        return self


@dataclass(frozen=True)
class SegmentationResult:
    """Objects found in one image, in original pixel coordinates."""

    model: str
    variant: str
    width: int
    height: int
    params: SegmentationParams
    labels: np.ndarray = field(repr=False)  # (H, W) uint16, 0 = background
    objects: list[SegmentedObject] = field(repr=False)
    timings_ms: dict[str, float]
    tiles: int
    batch_sizes: list[int]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "variant": self.variant,
            "threshold": self.params.threshold,
            "min_area": self.params.min_area,
            "tiles": self.tiles,
            "batch_sizes": self.batch_sizes,
            "timings_ms": self.timings_ms,
            **objects_to_json(self.objects, self.width, self.height),
        }

    def to_geojson(self) -> dict[str, Any]:
        return objects_to_geojson(self.objects, {"model": self.model})

    def to_coco(self, image_id: int = 1, file_name: str = "image") -> dict[str, Any]:
        return objects_to_coco(
            self.labels, self.objects, image_id, file_name, self.width, self.height
        )

    def mask_png(self) -> bytes:
        return label_mask_png(self.labels)


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
        self._slots = threading.Semaphore(concurrency)
        self._device_pool = ThreadPoolExecutor(concurrency, thread_name_prefix="engine-device")
        self._cpu = ThreadPoolExecutor(settings.cpu_threads, thread_name_prefix="engine-cpu")
        self._closed = False
        self.startup_s: dict[str, float] = {}
        book = profiles or ProfileBook()
        budget = budget_mb(probe, settings, self.pool.resident_bytes())
        self.batchers: dict[str, DynamicBatcher] = {}
        for name, model in models.items():
            profile = book.get(probe.key, model.profile_key)
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
                model.backend,
                self.sizer,
                self._device_pool,
                self._slots,
                item_shape=(model.spec.in_channels, size, size),
                max_queue_delay_s=settings.max_queue_delay_ms / 1000,
                on_batch=self.stats.on_batch,
            )

    @classmethod
    def from_settings(cls, settings: EngineSettings | None = None) -> Engine:
        """Load every model in ``ML_MODELS`` on ``ML_DEVICE`` behind the backend ``ML_BACKEND``
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
        """Run every batch size a model may use once (allocator, kernels, autotuning)."""
        for name, model in self.pool.models.items():
            size = model.spec.input_size
            for n in sorted({1, self.sizer.ceiling(name)}):
                model.backend.run(np.zeros((n, model.spec.in_channels, size, size), np.float32))

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
                    "backend": m.backend.name,
                    "backend_reason": m.backend_reason,
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
    ) -> None:
        try:
            if isinstance(image, bytes | bytearray | memoryview):
                image = decode_image(bytes(image), self.settings.max_image_pixels)
            if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
                raise InvalidImage("image must be a 2-D (grey) or 3-D (colour) array")
            height, width = image.shape[:2]
            if height * width > self.settings.max_image_pixels:
                raise InvalidImage(f"image has {height * width} pixels, over MAX_IMAGE_PIXELS")
            inputs, restore = prepare(image, model.spec.input_size, self.settings.tile_overlap)
            t_pre = time.monotonic()
            batcher = self.batchers[model.spec.name]
            futures = [batcher.submit(np.ascontiguousarray(t[None])) for t in inputs]
        except Exception as exc:
            self._fail(result, exc)
            return

        def done(outputs: list[BatchOutput]) -> None:
            self._cpu.submit(
                self._finish, outputs, restore, model, params, (width, height), result, t0, t_pre
            )

        _Gather(futures, done, lambda exc: self._fail(result, exc))

    def _finish(
        self,
        outputs: list[BatchOutput],
        restore: Any,
        model: LoadedModel,
        params: SegmentationParams,
        size: tuple[int, int],
        result: Future[SegmentationResult],
        t0: float,
        t_pre: float,
    ) -> None:
        try:
            t_post = time.monotonic()
            prob = restore.restore(np.stack([o.prob for o in outputs]))
            labels, objects = extract_objects(prob, params.threshold, params.min_area)
            end = time.monotonic()
            timings = {
                "preprocess": 1000 * (t_pre - t0),
                "queue": max(o.queued_ms for o in outputs),
                "inference": sum(o.inference_ms for o in outputs),
                "postprocess": 1000 * (end - t_post),
                "total": 1000 * (end - t0),
            }
            result.set_result(
                SegmentationResult(
                    model=model.spec.name,
                    variant=model.spec.variant,
                    width=size[0],
                    height=size[1],
                    params=params,
                    labels=labels,
                    objects=objects,
                    timings_ms={k: round(v, 2) for k, v in timings.items()},
                    tiles=len(outputs),
                    batch_sizes=[o.batch_size for o in outputs],
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
