"""The engine's CPU stages, as pure functions a process pool can run: decode + preprocess
before the model (or decode + plan, when preprocessing runs on the device), restore + threshold
+ contours + metrics after it.

With ``ML_CPU_WORKERS`` > 0 they run in a ``ProcessPoolExecutor`` of that many processes, so a
GPU is not starved by one Python process's decoding and postprocessing (the GIL and two CPU
threads); with 0 they run in the calling thread, as before. The processes are spawned (fresh
interpreters), never forked from the engine's process, which holds torch's threads; they ignore
SIGTERM/SIGINT sent to the process group, so a draining worker can finish through them. This
module imports no torch, so the workers stay small. Results are identical either way
(``tests/ml_service/test_cpu_stages.py``).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ml_service.errors import InvalidImage
from ml_service.imaging.imageio import decode_image
from ml_service.imaging.postprocess import SegmentedObject, extract_objects
from ml_service.imaging.preprocess import Letterbox, Restore, check_image, plan_restore, prepare
from ml_service.imaging.rescale import rescale_image, resize_map

log = logging.getLogger(__name__)

T = TypeVar("T")


def default_cpu_workers(cores: int) -> int:
    """``ML_CPU_WORKERS`` default: one process per core but one (at most 8), and none on a
    single core. Postprocessing is per-object Python that holds the GIL; in a process of its own
    it runs beside the model instead of taking turns with the task threads (on 2 cores: the
    service end to end 33.5–36.0 → 43.7–51.4 img/s for hrnet/small at 8 users,
    docs/benchmarks.md, "Load test")."""
    return 0 if cores <= 1 else min(cores - 1, 8)


@dataclass(frozen=True)
class Prepared:
    """An image ready for the model: ``inputs`` ``(N, size, size)`` float32, the ``Restore``
    that maps outputs back, the original size, and the time each stage took."""

    inputs: np.ndarray
    restore: Restore
    width: int
    height: int
    decode_ms: float
    preprocess_ms: float


def decode_and_prepare(
    image: np.ndarray | bytes, max_pixels: int, size: int, overlap: int, scale: float = 1.0
) -> Prepared:
    """Decode (bytes) or check (array) an image, rescale it by ``scale`` (object size, see
    ``ml_service.imaging.rescale``), then normalise and letterbox or tile it. ``width`` and
    ``height`` are the original image's; the ``Restore`` maps outputs to the rescaled frame.

    Raises:
        InvalidImage: undecodable, not 2-D/3-D, or more than ``max_pixels`` pixels (the
            subclasses of ``ml_service.imaging.imageio.decode_image`` for bytes).
        InvalidParameters: the rescaled image would hold more than ``max_pixels`` pixels.
    """
    t0 = time.perf_counter()
    image = _decoded(image, max_pixels)
    height, width = image.shape[:2]
    t1 = time.perf_counter()
    inputs, restore = prepare(rescale_image(image, scale, max_pixels), size, overlap)
    t2 = time.perf_counter()
    return Prepared(inputs, restore, width, height, 1000 * (t1 - t0), 1000 * (t2 - t1))


@dataclass(frozen=True)
class Planned:
    """An image to preprocess on the device (``ml_service.imaging.device_preprocess``): the decoded
    ``pixels`` as they are (e.g. uint8 ``(H, W)`` or ``(H, W, 3)``), the ``Restore`` its model
    inputs will need, the original size and the decoding time."""

    pixels: np.ndarray
    restore: Restore
    width: int
    height: int
    decode_ms: float


def decode_and_plan(
    image: np.ndarray | bytes, max_pixels: int, size: int, overlap: int, scale: float = 1.0
) -> Planned:
    """``decode_and_prepare`` without the preprocessing: decode or check, rescale, then only
    plan the letterbox or tiles from the image's shape (same errors, and ``check_image``'s)."""
    t0 = time.perf_counter()
    image = _decoded(image, max_pixels)
    check_image(image)
    height, width = image.shape[:2]
    image = rescale_image(image, scale, max_pixels)
    restore = plan_restore((image.shape[0], image.shape[1]), size, overlap)
    return Planned(image, restore, width, height, 1000 * (time.perf_counter() - t0))


def _decoded(image: np.ndarray | bytes, max_pixels: int) -> np.ndarray:
    if isinstance(image, bytes | bytearray | memoryview):
        image = decode_image(bytes(image), max_pixels)
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise InvalidImage("image must be a 2-D (grey) or 3-D (colour) array")
    height, width = image.shape[:2]
    if height * width > max_pixels:
        raise InvalidImage(f"image has {height * width} pixels, over MAX_IMAGE_PIXELS")
    if image.dtype.kind == "f" and not np.isfinite(image).all():  # decoded TIFFs are checked
        raise InvalidImage("image contains NaN or infinite pixel values")
    return image


def pixel_exact(restore: Restore) -> bool:
    """True when ``restore`` only crops and copies pixels (tiles, or a letterbox at scale 1):
    thresholding before it gives exactly the mask thresholding after it would, so the model
    output can come back from the device as a uint8 mask."""
    transform = restore.transform
    return not isinstance(transform, Letterbox) or transform.scale == 1.0


def postprocess_outputs(
    outputs: list[np.ndarray],
    restore: Restore,
    threshold: float,
    min_area: int,
    split: bool = False,
    shape: tuple[int, int] | None = None,
    size_scale: float = 1.0,
) -> tuple[np.ndarray, list[SegmentedObject], float]:
    """Model outputs of one image → ``(labels, objects, milliseconds)``.

    The full-size map is assembled first (tiles stitched, letterbox undone), then thresholded
    and, with ``split``, separated into instances, so an object across a tile seam is one
    object, found once.

    Args:
        outputs: one ``(size, size)`` map per model input: float32 probabilities, or uint8
            masks already thresholded at ``threshold`` (only where ``pixel_exact(restore)``).
        restore: what ``decode_and_prepare`` returned with the inputs.
        threshold: probability threshold; min_area: smallest object kept (pixels).
        split: separate touching objects (``ml_service.imaging.instances``).
        shape: ``(H, W)`` of the original image when the model saw it rescaled: the map is
            resized back to it (bilinear) before thresholding, so everything returned is in the
            original pixel frame.
        size_scale: objects' size relative to the training frame (for ``split``).
    """
    t0 = time.perf_counter()
    if any(o.dtype == np.uint8 for o in outputs):
        limit = np.float32(threshold)
        masks = [o if o.dtype == np.uint8 else (o > limit).astype(np.uint8) for o in outputs]
        prob = restore.restore(np.stack(masks))  # 0/1 float32, pixels copied
        threshold = 0.5
    else:
        prob = restore.restore(np.stack(outputs))
    if shape is not None:
        prob = resize_map(prob, shape)
    labels, objects = extract_objects(prob, threshold, min_area, split=split, size_scale=size_scale)
    return labels, objects, 1000 * (time.perf_counter() - t0)


def _ready() -> bool:
    return True


def _ignore_stop_signals() -> None:
    """Pool processes leave stopping to their parent. SIGTERM or SIGINT sent to the whole
    process group (a terminal's Ctrl-C, ``kill -- -PGID``, systemd's control-group kill) must not
    end them while the parent drains the work in flight through them; they exit when the parent
    shuts the pool down, or when its end of their pipe closes."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class CpuStages:
    """Runs the CPU stages in this thread (``workers == 0``) or in a pool of processes.

    A pool whose process died (the OOM killer, a stray signal) is replaced and the call retried
    once, so one lost process costs a restart, not the images in flight."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = self._new_pool() if workers > 0 else None

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork (the engine's process holds torch's threads) nor forkserver (its
        # server process would die with a process-group SIGTERM and take the pool with it)
        ctx = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_ignore_stop_signals)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, in a worker process when there is a pool (blocks until done)."""
        pool = self._pool
        if pool is None:
            return fn(*args)
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            log.warning("a CPU-stage process died; starting a new pool and retrying")
            return self._replace(pool).submit(fn, *args).result()

    def _replace(self, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is broken:  # the first caller to notice replaces it
                broken.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            assert self._pool is not None
            return self._pool

    def start(self) -> list[Future[bool]]:
        """Start every worker process now, so no request waits for one to start; returns at
        once (the processes import in the background), :meth:`wait_started` waits for them."""
        if self._pool is None:
            return []
        return [self._pool.submit(_ready) for _ in range(self.workers)]

    @staticmethod
    def wait_started(started: list[Future[bool]]) -> None:
        """Wait until the processes :meth:`start` started answer (raises if one failed)."""
        for future in started:
            future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)
