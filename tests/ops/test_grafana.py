"""The Grafana dashboard (deploy/grafana/cellseg-dashboard.json): it loads, its layout
and datasource are sound, and every metric its PromQL names is one that the gateway or a worker
really exports. The exported names are taken from the real collectors rendered to Prometheus's
text format (the gateway's ``/metrics`` snapshot, the worker's registry over a stand-in engine),
not from the source text, so a renamed metric or a forgotten ``_total`` fails here."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_PATH = ROOT / "deploy" / "grafana" / "cellseg-dashboard.json"

# PromQL words that look like metric names: aggregation modifiers, binary operators, keywords
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "inf", "nan",
}  # fmt: skip
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (inside ``{}`` or ``by (...)``), durations or Grafana variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery selectors
    text = _LABEL_LISTS.sub(" ", text)
    names: set[str] = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word, start = match.group(), match.start()
        if start and (text[start - 1] in "$." or text[start - 1].isdigit()):
            continue  # a $variable, or the exponent of a number
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or aggregation
        if word.lower() not in _PROMQL_WORDS:
            names.add(word)
    return names


def _sample_names(registry: CollectorRegistry) -> set[str]:
    text = generate_latest(registry).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def _stand_in_engine() -> Any:
    """Just what ``workers.metrics`` reads from an engine, with one model."""
    return SimpleNamespace(
        batchers={"hrnet": SimpleNamespace(queue_depth=lambda: 1, in_flight=lambda: 2)},
        sizer=SimpleNamespace(describe=lambda name: {"oom_events": 1, "ceiling": 8}),
        probe=SimpleNamespace(
            key="cpu-2core",
            read=lambda: SimpleNamespace(total=8 * 2**30, free=4 * 2**30, process=2**30),
        ),
        ledger=SimpleNamespace(
            snapshot=lambda: {"capacity_mb": 4096.0, "reserved_mb": 100.0, "resident_mb": 50.0}
        ),
        stats=SimpleNamespace(listeners=[]),
    )


@lru_cache(maxsize=1)
def gateway_metric_names() -> frozenset[str]:
    """Sample names of the gateway's ``/metrics`` (every family, every label set filled)."""
    from backend.routes.metrics import _Snapshot

    registry = CollectorRegistry()
    registry.register(
        _Snapshot(
            by_status={"queued": 3, "dispatched": 2, "processing": 1, "done": 7},
            batches={"4": 2},
            images={"done": 7, "failed": 1},
            per_queue=[("gpu0", "dispatched", 2), ("gpu0", "processing", 1)],
            connections=1,
            leader=True,
        )
    )
    return frozenset(_sample_names(registry))


@lru_cache(maxsize=1)
def worker_metric_names() -> frozenset[str]:
    """Sample names of a worker's registry after one batch and one image."""
    from workers.metrics import WorkerMetrics

    metrics = WorkerMetrics(cast(Any, _stand_in_engine()))
    metrics.observe_batch("hrnet", 4, 0.05)
    metrics.observe_image("hrnet", "done", queue_ms=12.0)
    return frozenset(_sample_names(metrics.registry))


def exported_metric_names() -> set[str]:
    return set(gateway_metric_names() | worker_metric_names())


def load_dashboard() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(DASHBOARD_PATH.read_text()))


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels of a collapsed row
    return panels


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard) if p["type"] != "row"]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("max(cellseg_queue_depth) or vector(0)", {"cellseg_queue_depth"}),
        (
            'histogram_quantile(0.95, sum by (le, model) (rate(x_bucket{model=~"$model"}'
            "[$__rate_interval])))",
            {"x_bucket"},
        ),
        ('a{kind="total"} - ignoring(kind) b{kind="free"}', {"a", "b"}),
        ("sum(rate(a_sum[5m])) by (model) / on(model) group_left c", {"a_sum", "c"}),
        ("increase(cellseg_batches_total[1h]) > 1e3", {"cellseg_batches_total"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_exported_names_are_rendered_from_the_real_collectors() -> None:
    gateway, worker = gateway_metric_names(), worker_metric_names()
    assert {"cellseg_queue_depth", "cellseg_images_processed_total", "cellseg_batches_total"} <= (
        gateway
    )
    assert "cellseg_queue_in_flight" in gateway and "cellseg_socketio_connections" in gateway
    assert {
        "cellseg_batch_size_bucket",
        "cellseg_batch_size_sum",
        "cellseg_batch_size_count",
        "cellseg_worker_images_total",
        "cellseg_oom_retries_total",
        "cellseg_device_memory_bytes",
        "cellseg_sizer_memory_bytes",
    } <= worker
    assert "cellseg_batch_size" not in worker  # a histogram is only ever queried by suffix


def test_dashboard_loads_and_is_laid_out() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "cellseg-serve" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {
            (grid["y"] + dy, grid["x"] + dx) for dy in range(grid["h"]) for dx in range(grid["w"])
        }
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered


def test_every_panel_reads_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in query_panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


def test_every_query_uses_only_exported_metrics() -> None:
    dashboard = load_dashboard()
    exported = exported_metric_names()
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            names = promql_metric_names(target["expr"])
            assert names, f"{panel['title']}: no metric in {target['expr']!r}"
            unknown = names - exported
            assert not unknown, f"{panel['title']}: {sorted(unknown)} is exported by no process"
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query["query"])
            assert match, variable
            assert match.group(1) in exported


def test_dashboard_shows_what_ops_asked_for() -> None:
    """Queue depth, in flight per queue, processed rate by outcome, batch sizes, batch
    ceiling, device and sizer memory, OOM retries, Socket.IO connections, worker latency."""
    targets = [t for p in query_panels(load_dashboard()) for t in p["targets"]]
    used = set().union(*(promql_metric_names(t["expr"]) for t in targets))
    assert {
        "cellseg_queue_depth",
        "cellseg_queue_in_flight",
        "cellseg_images_processed_total",
        "cellseg_worker_images_total",
        "cellseg_batch_size_bucket",
        "cellseg_batches_total",
        "cellseg_batch_ceiling",
        "cellseg_device_memory_bytes",
        "cellseg_sizer_memory_bytes",
        "cellseg_oom_retries_total",
        "cellseg_socketio_connections",
        "cellseg_inference_seconds_bucket",
        "cellseg_queue_wait_seconds_bucket",
        "cellseg_engine_queue_depth",
        "cellseg_engine_in_flight",
    } <= used


def test_replicated_gateway_gauges_are_not_summed() -> None:
    """Every gateway replica reports the same PostgreSQL-derived values: summing them over
    replicas would multiply the backlog by the replica count."""
    for panel in query_panels(load_dashboard()):
        for target in panel["targets"]:
            for name in ("cellseg_queue_depth", "cellseg_images", "cellseg_queue_in_flight"):
                assert not re.search(rf"sum\s*(by\s*\([^)]*\)\s*)?\(\s*{name}\b", target["expr"])
