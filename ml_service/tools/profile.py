"""Profile the models on this device and write ``batch_sizes.json``.

    python -m ml_service.tools.profile [--models unet,hrnet] [--runtimes torch,onnxruntime,openvino]
                                 [--max-batch 16] [--repeats 5] [--block 5]
                                 [--compile auto|on|off] [--fast-batch N] [--no-fastpath]

For each model, runtime (every registered one that runs on this device by default; the profile
key says which: ``unet/small:torch``, ``unet/small:openvino``; ``--backends`` is the same
option) and batch size (1, 2, 4, ...) it measures peak memory (see ``ml_service.serving.measure``
for how) and latency (median of ``--repeats`` rounds, each timing ``--block`` calls of one
runtime in a row, the runtimes taking turns), fits ``peak = intercept + slope × n``, picks the
best-throughput batch size that fits the device's budget, and writes the device's entry, keeping
other devices' entries. The engine calibrates at warm-up a device that has no entry
(``ml_service.serving.calibration``), and ``ML_BACKEND=auto`` picks per model the runtime with
the higher recorded throughput.

A runtime with a tuner (``ml_service.tools.tuning``) is first configured by measurement:

- OpenVINO (``ml_service.tools.openvino_choice``): fp32, and where the CPU has bf16
  instructions bf16 with the stem in fp32 or bf16 only at some resolutions (``bf16@4``), gated
  on the same masks and recorded the same way as torch's fast path below.
- Torch fast path (``ml_service.runtimes.torch.fastpath``, ``ml_service.tools.fastpath_choice``):
  every precision valid on the device (fp32, bf16 on the CPU, and fp16 where oneDNN has fp16
  kernels; fp32, tf32, bf16, fp16 on GPUs that have them) with and without channels_last, and
  with ``--compile`` (on by default: ``default``, and on CUDA ``reduce-overhead`` = CUDA graphs;
  each compiled candidate takes 10–40 s to compile on a 2-core CPU; ``--compile off`` skips
  them) the compiled variants, run ``--fast-batch`` probe images (default 1 on the CPU, 8 on a
  GPU).

The fastest candidate whose masks agree with fp32 is chosen, the batch-size sweep runs with it
(so the memory line is the chosen configuration's), and the profile records the choice and
every candidate.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging

from rich.console import Console
from rich.table import Table

from ml_service.errors import RuntimeUnavailable
from ml_service.profiles import FastPathRecord, ModelProfile, ProfileBook
from ml_service.runtimes.registry import get_runtime, runtime_names
from ml_service.runtimes.torch.fastpath import allow_many_compiled_copies
from ml_service.serving.calibration import budget_mb, measure_runtimes, profile_from_points
from ml_service.serving.device import DeviceProbe, make_probe
from ml_service.serving.measure import DEFAULT_BLOCK, batch_sizes_up_to
from ml_service.serving.pool import LoadedModel, build_module, build_runtime
from ml_service.serving.threads import apply_torch_threads, thread_plan
from ml_service.settings import EngineSettings, load_settings
from ml_service.tools.cli_args import positive_int
from ml_service.tools.tuning import TUNERS, FastPathOptions, fastpath_options
from models.registry import ModelSpec, get_spec

log = logging.getLogger(__name__)


def keep_service_efficiency(old: ModelProfile | None, new: ModelProfile) -> ModelProfile:
    """``new``, carrying ``old``'s ``service_efficiency``: it is measured against a running
    service (``scripts.efficiency --record``), not by the profiler, and the planner multiplies
    by it; dropping it on a re-profile would make the plan silently optimistic. It was measured
    against the old whole path, so re-run ``scripts.efficiency --record`` to refresh it."""
    if old is None or old.service_efficiency is None or new.service_efficiency is not None:
        return new
    log.warning(
        "%s: keeping service_efficiency %.3f measured before this profile; re-run "
        "scripts.efficiency --record to measure it against the new figures",
        new.backend,
        old.service_efficiency,
    )
    return dataclasses.replace(new, service_efficiency=old.service_efficiency)


def profile_runtimes(
    spec: ModelSpec,
    settings: EngineSettings,
    probe: DeviceProbe,
    runtimes: list[str],
    *,
    batch_sizes: list[int],
    repeats: int,
    fast: FastPathOptions | None = None,
    block: int = DEFAULT_BLOCK,
) -> dict[str, ModelProfile]:
    """Measure ``spec`` behind each runtime from the same weights (each on its own copy: a
    runtime may convert the module in place), interleaved; a runtime with a tuner
    (``ml_service.tools.tuning``) is first configured by measurement when ``fast`` is given."""
    module, weights = build_module(spec, settings)
    device = probe.torch_device
    records: dict[str, FastPathRecord | None] = {}
    models = {}
    for kind in runtimes:
        runtime = build_runtime(kind, spec, copy.deepcopy(module), weights, settings, device)
        tuner = TUNERS.get(kind)
        if tuner is not None and fast is not None:
            records[kind] = tuner.tune(module, spec, runtime, fast)
        models[kind] = LoadedModel(spec, runtime, weights)
    budgets = {k: budget_mb(probe, settings, m.runtime.resident_bytes) for k, m in models.items()}
    measured = measure_runtimes(
        models, batch_sizes, repeats=repeats, budget_mb=budgets, block=block
    )
    return {
        kind: profile_from_points(
            models[kind],
            points,
            budgets[kind],
            method,
            source="measured",
            fastpath=records.get(kind),
        )
        for kind, (points, method) in measured.items()
    }


def _runtimes_here(wanted: list[str], probe: DeviceProbe) -> list[str]:
    here = []
    for kind in wanted:
        try:
            problem = get_runtime(kind).available(probe.torch_device)
        except RuntimeUnavailable as exc:
            raise SystemExit(str(exc)) from None
        if problem is None:
            here.append(kind)
        else:
            log.warning("not profiling %s: %s", kind, problem)
    return here


def _print_fastpath(book: ProfileBook, device_key: str, settings: EngineSettings) -> None:
    table = Table(title=f"{device_key}: {' and '.join(TUNERS)} candidates (probe batch)")
    for col in ("model", "candidate", "batch", "ms/batch", "img/s", "peak MB", "mask IoU", "note"):
        table.add_column(col, justify="right")
    keys = [
        (f"{get_spec(name, settings.variant).key}:{kind}", tuner)
        for name in settings.models
        for kind, tuner in TUNERS.items()
    ]
    for key, tuner in keys:
        profile = book.get(device_key, key)
        if profile is None or profile.fastpath is None:
            continue
        chosen = profile.fastpath.chosen
        for c in profile.fastpath.candidates:
            is_chosen = (c.precision, c.channels_last, c.compile) == (
                chosen["precision"],
                chosen["channels_last"],
                chosen["compile"],
            )
            table.add_row(
                key,
                tuner.label(c) + (" *" if is_chosen else ""),
                str(c.batch_size),
                f"{c.latency_ms:.1f}",
                f"{c.images_per_s:.1f}",
                f"{c.peak_mb:.1f}",
                f"{c.mask_iou:.4f}",
                c.rejected or (f"compile {c.compile_s:.0f} s" if c.compile_s else ""),
            )
    Console(width=140).print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Profile models; write batch_sizes.json")
    parser.add_argument("--models", help="comma-separated (default: ML_MODELS)")
    parser.add_argument(
        "--runtimes",
        "--backends",
        dest="runtimes",
        default=",".join(runtime_names()),
        help="runtimes, comma-separated (default: every one that runs on this device)",
    )
    parser.add_argument("--max-batch", type=positive_int, default=16)
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument(
        "--block",
        type=positive_int,
        default=DEFAULT_BLOCK,
        help="calls of one runtime timed in a row per round of the batch-size sweep",
    )
    parser.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="measure torch.compile candidates (auto and on: yes; off: no)",
    )
    parser.add_argument(
        "--fast-batch", type=positive_int, help="probe batch of the fast-path candidates"
    )
    parser.add_argument("--no-fastpath", action="store_true", help="torch in fp32 only")
    parser.add_argument(
        "--no-pipeline",
        action="store_true",
        help="skip the whole-path rate per model (decode → model → postprocess → formats)",
    )
    parser.add_argument(
        "--pipeline-only",
        action="store_true",
        help="only (re)measure the whole-path rate of the recorded profiles",
    )
    parser.add_argument("--dry-run", action="store_true", help="print, do not write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    allow_many_compiled_copies()  # every candidate is a compiled copy
    if args.models:
        settings = settings.model_copy(update={"models": tuple(args.models.split(","))})
    probe = make_probe(settings.device)
    threads = thread_plan(settings, probe.kind)
    apply_torch_threads(threads)
    runtimes = _runtimes_here(args.runtimes.split(","), probe)
    sizes = batch_sizes_up_to(args.max_batch)
    book = ProfileBook.load(settings.profiles_path)
    if args.pipeline_only:
        _record_pipeline(book, settings, probe.key)
        if not args.dry_run:
            book.save(settings.profiles_path)
        return
    fast = None
    if not args.no_fastpath:
        fast = fastpath_options(probe, args.compile, args.fast_batch, args.max_batch, args.repeats)
    title = f"{probe.key}: threads torch {threads.torch}, onnxruntime/openvino {threads.onnx}"
    table = Table(title=title)
    for col in ("model", "batch", "peak MB", "ms/batch", "img/s"):
        table.add_column(col, justify="right")
    for name in settings.models:
        spec = get_spec(name, settings.variant)
        profiles = profile_runtimes(
            spec,
            settings,
            probe,
            runtimes,
            batch_sizes=sizes,
            repeats=args.repeats,
            fast=fast,
            block=args.block,
        )
        for kind, profile in sorted(profiles.items()):
            profile = keep_service_efficiency(book.get(probe.key, f"{spec.key}:{kind}"), profile)
            book.put(probe.key, f"{spec.key}:{kind}", profile)
            for p in profile.points:
                star = " *" if p.batch_size == profile.best_batch_size else ""
                layout = profile.fastpath and profile.fastpath.chosen["channels_last"]
                table.add_row(
                    f"{spec.key}:{kind} {profile.dtype}" + ("+cl" if layout else ""),
                    f"{p.batch_size}{star}",
                    f"{p.peak_mb:.1f}",
                    f"{p.latency_ms:.1f}",
                    f"{p.images_per_s:.2f}",
                )
    Console(width=140).print(table)
    _print_fastpath(book, probe.key, settings)
    if not args.no_pipeline:
        _record_pipeline(book, settings, probe.key)
    if not args.dry_run:
        book.save(settings.profiles_path)
        log.info("wrote %s (device %s)", settings.profiles_path, probe.key)


def _record_pipeline(book: ProfileBook, settings: EngineSettings, device_key: str) -> None:
    # imported here: the engine imports this module (calibration at start-up)
    from ml_service.tools.pipeline_rate import record_pipeline_rates

    for name, rate in record_pipeline_rates(book, settings, device_key).items():
        log.info("%s: whole per-image path %.1f img/s (8 concurrent callers)", name, rate)


if __name__ == "__main__":
    main()
