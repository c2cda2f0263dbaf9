"""Assertions shared by the backend tests."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def assert_concurrent_calls_match_serial(run: Callable[[np.ndarray], np.ndarray]) -> None:
    """Batches of 1–3 images through ``run`` from 6 threads at once give what they give one at
    a time (a backend shared by every calling thread, no lock)."""
    rng = np.random.default_rng(3)
    batches = [rng.random((1 + i % 3, 1, 256, 256), dtype=np.float32) for i in range(12)]
    alone = [run(b) for b in batches]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(run, batches))
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
