"""Capacity and cost planner: users × images × model mix × deadline → GPUs, time, GPU-hours, $.

    python -m ml_service.tools.plan --users 500 --images-per-user 6 \\
        --mix hrnet=0.5,unet=0.3,cbam_resunet=0.2 --deadline 1h [--catalogue gpus.json]

Throughput per device comes, in this order of trust, from:
1. a measured profile of that device in ``batch_sizes.json`` (``measured``): the best inference
   rate within memory, or the measured whole per-image path (decode → model → postprocess →
   result formats, ``pipeline_images_per_s``) when that is lower (``measured (whole path)``),
   times the service's measured efficiency on that device where recorded
   (``service_efficiency``: end to end ÷ whole path, ``scripts/efficiency.py --record``);
2. reference measurements of a lock-per-model service on an RTX A5000 (HRNet 17.3 img/s at batch 12,
   CBAM-ResUNet 5.1 img/s at batch 4, UNet 1.02 img/s at batch 8), scaled by the catalogue's
   relative speed (``estimate``).
A device serves every model of the mix; its throughput for the mix is the harmonic mean
``1 / Σ share_m / ips_m``. GPU-hours are counted per GPU: N GPUs for T hours are N × T GPU-hours
(not one container's wall time for several GPUs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from ml_service.profiles import ModelProfile, ProfileBook
from ml_service.runtimes.registry import runtime_names
from ml_service.serving.device import cpu_device_key
from ml_service.serving.runtime_choice import fastest, profile_rate
from ml_service.settings import DEFAULT_PROFILES
from ml_service.tools.cli_args import positive_int

# Reference RTX A5000 24 GB, full-size models: (img/s, batch size, peak MB of that batch).
REFERENCE_A5000 = {
    "hrnet": (17.3, 12, 435.0),
    "cbam_resunet": (5.1, 4, 354.0),
    "unet": (1.02, 8, 3100.0),
}
REFERENCE_A5000_RESIDENT_MB = 10_361.0


@dataclass(frozen=True)
class Device:
    """A catalogue entry. ``relative_speed`` is throughput relative to an RTX A5000."""

    name: str
    memory_gb: float
    price_per_hour: float
    relative_speed: float
    profile_key: str | None = None  # device key in batch_sizes.json, when measured
    price_source: str = ""


DEFAULT_CATALOGUE = (
    Device("RTX A5000 24GB", 24, 0.80, 1.0, "NVIDIA RTX A5000", "assumed market rate"),
    Device("A100 40GB", 40, 2.10, 2.2, "NVIDIA A100-SXM4-40GB", "cloud list price"),
    Device("A100 80GB", 80, 2.50, 2.4, "NVIDIA A100-SXM4-80GB", "cloud list price"),
    Device("H100 80GB", 80, 3.95, 3.6, "NVIDIA H100 80GB HBM3", "cloud list price"),
)


@dataclass(frozen=True)
class ModelRate:
    images_per_s: float
    batch_size: int
    source: str  # "measured" or "estimate (...)"


@dataclass
class DevicePlan:
    device: Device
    rates: dict[str, ModelRate]
    mix_images_per_s: float
    gpus: int
    wall_h: float
    gpu_hours: float
    cost: float
    fits: bool
    notes: list[str] = field(default_factory=list)

    @property
    def estimated(self) -> bool:
        return any(not r.source.startswith("measured") for r in self.rates.values())


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, share = part.partition("=")
        mix[name.strip()] = float(share)
    total = sum(mix.values())
    if total <= 0 or any(v < 0 for v in mix.values()):
        raise ValueError("mix shares must be ≥ 0 and not all 0")
    return {k: v / total for k, v in mix.items()}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``1h``, ``1.5h`` or plain seconds → seconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([smh]?)\s*", text)
    if not m:
        raise ValueError(f"bad duration {text!r}: use e.g. 90s, 30m, 1h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def auto_pick(profiles: list[ModelProfile]) -> ModelProfile:
    """The profile ``ML_BACKEND=auto`` runs (``runtime_choice.fastest``: the highest recorded
    rate at its best batch size), carrying the whole-path rate and service efficiency recorded
    on any of the model's profiles (``scripts.efficiency --record`` stores them on the runtime
    the service ran then)."""
    by_backend = {p.backend or "": p for p in profiles}
    chosen = by_backend[fastest({b: profile_rate(p) or 0.0 for b, p in by_backend.items()})]
    pipelines = [p.pipeline_images_per_s for p in profiles if p.pipeline_images_per_s]
    efficiencies = [p.service_efficiency for p in profiles if p.service_efficiency]
    return dataclasses.replace(
        chosen,
        pipeline_images_per_s=max(pipelines, default=chosen.pipeline_images_per_s),
        service_efficiency=max(efficiencies, default=chosen.service_efficiency),
    )


def measured_rate(profile: ModelProfile, budget_mb: float) -> ModelRate | None:
    """The best measured inference rate within ``budget_mb``, capped by the measured whole
    per-image path (decode, postprocess, result formats) where the profile has one: on a CPU
    those share the cores with the model and bound the service, not inference."""
    fitting = [p for p in profile.points if p.peak_mb <= budget_mb]
    if not fitting:
        return None
    best = max(fitting, key=lambda p: p.images_per_s)
    pipeline = profile.pipeline_images_per_s
    if pipeline is not None and pipeline < best.images_per_s:
        return ModelRate(pipeline, best.batch_size, "measured (whole path)")
    return ModelRate(best.images_per_s, best.batch_size, "measured")


def device_rates(
    device: Device, models: list[str], book: ProfileBook, variant: str, backend: str
) -> tuple[dict[str, ModelRate], list[str]]:
    notes: list[str] = []
    rates: dict[str, ModelRate] = {}
    # every model resident (10.4 GB measured for the three full models with the CUDA
    # context), 512 MB kept free; on a CPU the measured peaks are far below host memory
    resident = REFERENCE_A5000_RESIDENT_MB if device.relative_speed else 0.0
    budget_mb = device.memory_gb * 1024 - resident - 512
    for m in models:
        # the engine runs the fastest recorded runtime (ML_BACKEND=auto): so does the plan
        backends = (backend,) if backend != "auto" else tuple(runtime_names())
        profiles = [
            p
            for b in backends
            if device.profile_key
            and (p := book.get(device.profile_key, f"{m}/{variant}:{b}")) is not None
        ]
        if len(profiles) > 1:
            profiles = [auto_pick(profiles)]
        measured = [r for p in profiles if (r := measured_rate(p, budget_mb)) is not None]
        rate = max(measured, key=lambda r: r.images_per_s) if measured else None
        # the whole path was measured with the runtime the engine runs: it bounds every runtime
        pipelines = [p.pipeline_images_per_s for p in profiles if p.pipeline_images_per_s]
        if rate is not None and pipelines and max(pipelines) < rate.images_per_s:
            rate = ModelRate(max(pipelines), rate.batch_size, "measured (whole path)")
        # and the service keeps this share of it on this device (measured end to end)
        efficiency = [p.service_efficiency for p in profiles if p.service_efficiency]
        if rate is not None and efficiency:
            rate = ModelRate(
                rate.images_per_s * max(efficiency),
                rate.batch_size,
                f"{rate.source} × service efficiency {max(efficiency):.2f}",
            )
        if rate is None:
            if m not in REFERENCE_A5000:
                raise ValueError(f"no profile and no reference figure for model {m!r}")
            ips, batch, peak = REFERENCE_A5000[m]
            rate = ModelRate(
                ips * device.relative_speed,
                batch,
                f"estimate (reference A5000 × {device.relative_speed:g})",
            )
            if peak > budget_mb:
                notes.append(f"{m}: batch {batch} needs {peak:.0f} MB > {budget_mb:.0f} MB")
        rates[m] = rate
    return rates, notes


def plan_device(
    device: Device,
    images: dict[str, float],
    deadline_s: float,
    book: ProfileBook,
    variant: str,
    backend: str = "auto",
) -> DevicePlan:
    total = sum(images.values())
    rates, notes = device_rates(device, list(images), book, variant, backend)
    seconds_per_image = sum(images[m] / total / rates[m].images_per_s for m in images)
    mix_ips = 1.0 / seconds_per_image
    gpus = max(1, math.ceil(total / (mix_ips * deadline_s)))
    wall_s = total / (mix_ips * gpus)
    gpu_hours = gpus * wall_s / 3600  # per GPU: every GPU is billed for the wall time
    return DevicePlan(
        device,
        rates,
        mix_ips,
        gpus,
        wall_s / 3600,
        gpu_hours,
        gpu_hours * device.price_per_hour,
        fits=not notes,
        notes=notes,
    )


def load_catalogue(path: Path | None) -> list[Device]:
    if path is None:
        return list(DEFAULT_CATALOGUE)
    raw: list[dict[str, Any]] = json.loads(path.read_text())
    return [Device(**entry) for entry in raw]


def this_machine(book: ProfileBook) -> Device | None:
    key = cpu_device_key()
    if key not in book.devices:
        return None
    memory_gb = psutil.virtual_memory().total / 1024**3
    return Device(f"this CPU ({key}, small models)", memory_gb, 0.0, 0.0, key, "own hardware")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="GPUs, wall time and cost for a workload")
    parser.add_argument("--users", type=positive_int, required=True)
    parser.add_argument("--images-per-user", type=positive_int, required=True)
    parser.add_argument("--mix", default="hrnet=0.34,unet=0.33,cbam_resunet=0.33")
    parser.add_argument("--deadline", default="1h")
    parser.add_argument("--variant", default="full", help="model variant on GPUs")
    parser.add_argument("--catalogue", type=Path, help="JSON list of devices to use instead")
    parser.add_argument("--profiles", type=Path, default=DEFAULT_PROFILES)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    mix = parse_mix(args.mix)
    deadline_s = parse_duration(args.deadline)
    total = args.users * args.images_per_user
    images = {m: total * share for m, share in mix.items()}
    book = ProfileBook.load(args.profiles)
    plans = [
        plan_device(d, images, deadline_s, book, args.variant)
        for d in load_catalogue(args.catalogue)
    ]
    cpu = this_machine(book)
    if cpu is not None:
        cpu_plan = plan_device(cpu, images, deadline_s, book, "small")
        plans.append(cpu_plan)
    if args.json:
        print(json.dumps([plan_to_json(p) for p in plans], indent=2))
        return
    table = Table(
        title=f"{args.users} users × {args.images_per_user} images = {total} images, "
        f"deadline {args.deadline}, mix {args.mix}"
    )
    for col in (
        "device",
        "batch sizes",
        "img/s per device",
        "devices",
        "wall time",
        "GPU-hours",
        "cost",
        "basis",
    ):
        table.add_column(col, justify="right")
    for p in plans:
        table.add_row(
            p.device.name,
            " ".join(f"{m}:{r.batch_size}" for m, r in p.rates.items()),
            f"{p.mix_images_per_s:.2f}",
            str(p.gpus),
            f"{p.wall_h * 60:.1f} min",
            f"{p.gpu_hours:.2f}",
            f"${p.cost:.2f}",
            "measured" if not p.estimated else "estimate",
        )
    Console(width=160).print(table)
    for p in plans:
        for note in p.notes:
            Console().print(f"[yellow]{p.device.name}: {note}[/yellow]")


def plan_to_json(p: DevicePlan) -> dict[str, Any]:
    return {
        "device": p.device.name,
        "price_per_hour": p.device.price_per_hour,
        "rates": {
            m: {
                "images_per_s": round(r.images_per_s, 3),
                "batch_size": r.batch_size,
                "source": r.source,
            }
            for m, r in p.rates.items()
        },
        "mix_images_per_s": round(p.mix_images_per_s, 3),
        "devices": p.gpus,
        "wall_hours": round(p.wall_h, 4),
        "gpu_hours": round(p.gpu_hours, 4),
        "cost": round(p.cost, 2),
        "estimate": p.estimated,
        "notes": p.notes,
    }


if __name__ == "__main__":
    main()
