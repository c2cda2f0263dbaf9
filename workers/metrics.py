"""Prometheus metrics and health of one worker process, served on ``WORKER_METRICS_PORT``.

Paths (:data:`HEALTH_PATHS`): ``/metrics``; ``/healthz`` (the process answers); ``/readyz``
(200 while the engine is loaded and the worker takes work; 503 once it drains after SIGTERM).

Observed, not estimated: images by model and outcome, batch sizes and inference time per batch
(from the engine's batch listener), queue wait per image (from each result's timings), and,
read at scrape time from the engine, out-of-memory retries, batcher queue depth and in-flight
images per model, device memory in use, the ledger's budget and what batches have reserved.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from prometheus_client.registry import Collector

from ml_service.serving.device import MB
from ml_service.serving.engine import Engine

HEALTH_PATHS = ("/healthz", "/readyz", "/metrics")
"""What the worker's HTTP port answers (probes of deploy/k8s use them)."""

BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class EngineCollector(Collector):
    """Values read from the engine when Prometheus scrapes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        ooms = CounterMetricFamily(
            "cellseg_oom_retries",
            "Batches split after a device out-of-memory error",
            labels=["model"],
        )
        depth = GaugeMetricFamily(
            "cellseg_engine_queue_depth", "Inputs waiting in the model's batcher", labels=["model"]
        )
        in_flight = GaugeMetricFamily(
            "cellseg_engine_in_flight", "Inputs in batches running now", labels=["model"]
        )
        ceiling = GaugeMetricFamily(
            "cellseg_batch_ceiling", "The sizer's current batch ceiling", labels=["model"]
        )
        for name, batcher in engine.batchers.items():
            info = engine.sizer.describe(name)
            ooms.add_metric([name], float(str(info["oom_events"])))
            depth.add_metric([name], batcher.queue_depth())
            in_flight.add_metric([name], batcher.in_flight())
            ceiling.add_metric([name], float(str(info["ceiling"])))
        yield from (ooms, depth, in_flight, ceiling)
        reading = engine.probe.read()
        device = GaugeMetricFamily(
            "cellseg_device_memory_bytes", "Device memory", labels=["device", "kind"]
        )
        device.add_metric([engine.probe.key, "total"], reading.total)
        device.add_metric([engine.probe.key, "free"], reading.free)
        device.add_metric([engine.probe.key, "process"], reading.process)
        yield device
        ledger = engine.ledger.snapshot()
        budget = GaugeMetricFamily(
            "cellseg_sizer_memory_bytes", "The batch sizer's ledger", labels=["kind"]
        )
        for kind in ("capacity", "reserved", "resident"):
            budget.add_metric([kind], ledger[f"{kind}_mb"] * MB)
        yield budget


class WorkerMetrics:
    """The worker's registry; ``observe_batch`` is the engine's batch listener."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.images = Counter(
            "cellseg_worker_images",
            "Images processed by this worker",
            ["model", "status"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "cellseg_batch_size",
            "Images per batch",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "cellseg_inference_seconds",
            "Wall time of one batch on the device",
            ["model"],
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "cellseg_queue_wait_seconds",
            "Time an image waited in its batcher",
            ["model"],
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(EngineCollector(engine))
        engine.stats.listeners.append(self.observe_batch)

    def observe_batch(self, model: str, size: int, seconds: float) -> None:
        self.batch_size.labels(model).observe(size)
        self.inference.labels(model).observe(seconds)

    def observe_image(self, model: str, status: str, queue_ms: float | None = None) -> None:
        self.images.labels(model, status).inc()
        if queue_ms is not None:
            self.queue_wait.labels(model).observe(queue_ms / 1000)

    def serve(self, port: int, ready: Callable[[], str | None], host: str = "0.0.0.0") -> None:
        """Serve :data:`HEALTH_PATHS` on ``port`` from a daemon thread.

        ``ready()`` returns None when the worker is ready, else why it is not.
        """
        app = health_app(make_wsgi_app(self.registry), ready)
        self.server = make_server(host, port, app, ThreadingWSGIServer, _SilentHandler)
        threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True).start()


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def health_app(metrics: WsgiApp, ready: Callable[[], str | None]) -> WsgiApp:
    """A WSGI app answering ``/healthz`` and ``/readyz`` itself and the rest from ``metrics``."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _json(start_response, "200 OK", {"status": "ok"})
        if path == "/readyz":
            reason = ready()
            if reason is None:
                return _json(start_response, "200 OK", {"status": "ready"})
            body = {"error": {"code": "not_ready", "message": reason}}
            return _json(start_response, "503 Service Unavailable", body)
        return metrics(environ, start_response)

    return app


def _json(start_response: Callable[..., Any], status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]
