"""The bench's report printed as tables (``python -m ml_service.tools.bench``)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_report(report: dict[str, Any]) -> None:
    console = Console(width=140)
    head = (
        f"{report['device']}, torch {report['torch']}, onnxruntime {report['onnxruntime']}, "
        f"openvino {report['openvino']}"
    )
    table = Table(title=f"{head}: eager PyTorch vs chosen backend")
    cols = (
        "model",
        "backend",
        "eager ms/img b1",
        "chosen ms/img b1",
        "speedup b1",
        "served batch",
        "eager best ms/img (batch)",
        "chosen ms/img",
        "speedup served",
        "eager engine img/s",
        "chosen engine img/s",
        "ratio",
    )
    for col in cols:
        table.add_column(col, justify="right")
    for r in report["backends"]:
        table.add_row(
            r["model"],
            f"{r['backend']} {r.get('backend_config', '')}".strip(),
            f"{r['eager_ms_per_img']:.1f}",
            f"{r['chosen_ms_per_img']:.1f}",
            f"{r['speedup']:.2f}x",
            str(r["served_batch"]),
            f"{r['eager_best_ms_per_img']:.1f} ({r['eager_best_batch']})",
            f"{r['chosen_ms_per_img_served_batch']:.1f}",
            f"{r['served_speedup']:.2f}x",
            f"{r['eager_engine_img_s']:.2f}",
            f"{r['chosen_engine_img_s']:.2f}",
            f"{r['engine_ratio']:.2f}x",
        )
    if report["backends"]:
        console.print(table)
    table = Table(title=f"{report['callers']} callers, {report['images']} images: lock vs batcher")
    for col in (
        "model",
        "backend",
        "ceiling",
        "mean batch",
        "locked b=1 img/s",
        "batcher img/s",
        "ratio",
    ):
        table.add_column(col, justify="right")
    for r in report["results"]:
        table.add_row(
            r["model"],
            r["backend"],
            str(r["ceiling"]),
            f"{r['mean_batch']:.2f}",
            f"{r['baseline_img_s']:.2f}",
            f"{r['batcher_img_s']:.2f}",
            f"{r['ratio']:.2f}x",
        )
    if report["results"]:
        console.print(table)
    if report["fastpath"]:
        _print_fastpath(Console(width=200), report)


def _print_fastpath(console: Console, report: dict[str, Any]) -> None:
    table = Table(title=f"{report['device']}: torch fast path ({report['callers']} callers)")
    cols = (
        "model",
        "fast config",
        "seed lock b1 fp32 img/s",
        "batcher fp32 img/s",
        "batcher fast img/s",
        "fast / seed",
        "e2e fast img/s",
        "e2e / engine",
        "ms decode · pre · H2D · compute · D2H · post",
    )
    for col in cols:
        table.add_column(col, justify="right")

    def ms(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f}"

    stages = ("decode", "preprocess", "h2d", "compute", "d2h", "postprocess")
    for r in report["fastpath"]:
        table.add_row(
            r["model"],
            r["fast_config"],
            f"{r['seed_lock_b1_fp32_img_s']:.2f}",
            f"{r['batcher_fp32_img_s']:.2f}",
            f"{r['batcher_fast_img_s']:.2f}",
            f"{r['fast_over_seed']:.2f}x",
            f"{r['end_to_end_fast_img_s']:.2f}",
            f"{r['e2e_over_engine']:.2f}",
            " · ".join(ms(r["stage_ms"][k]) for k in stages),
        )
    console.print(table)
