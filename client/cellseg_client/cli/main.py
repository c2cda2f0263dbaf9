"""``cellseg``: the command line of CellSeg Serve.

Exit codes (:class:`Exit`): 0 everything asked for is done; 1 some images failed, were
cancelled or refused (``segment``), or the service is not ready (``health``); 2 usage error
(bad arguments, no URL or key, no images, ``OUT`` holds another run); 3 the service refused the
request (bad key, unknown job or model, invalid parameter); 4 the service could not be reached
or stayed unavailable through the retries; 130 interrupted (re-run the same ``segment``
command to resume).
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cellseg_client.async_client import AsyncClient
from cellseg_client.cli.jobref import UnknownJob, resolve_job_id
from cellseg_client.cli.manifest import ManifestError
from cellseg_client.cli.outputs import FORMATS
from cellseg_client.cli.progress import Display, RichDisplay, make_display
from cellseg_client.cli.segment import SegmentOptions, SegmentRun, UsageError
from cellseg_client.errors import (
    ApiError,
    CellsegError,
    RateLimited,
    ServerError,
    ServiceUnavailable,
)
from cellseg_client.retry import RetryPolicy

log = logging.getLogger(__name__)


class Exit(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    REFUSED = 3
    UNAVAILABLE = 4
    INTERRUPTED = 130


EPILOG = """\
exit codes: 0 all done; 1 some images failed (segment) or not ready (health); 2 usage error;
3 refused by the service (key, job, parameters); 4 service unreachable or unavailable;
130 interrupted (re-run the same segment command to resume).
environment: CELLSEG_URL, CELLSEG_API_KEY (instead of --url, --api-key).
"""

SEGMENT_HELP = """\
Upload images, follow their progress, and write per image OUT/<name>.json, .geojson,
.coco.json or .mask.png (as --format asks), plus OUT/objects.csv and OUT/summary.json.
<name> is the image's path relative to the folder given, without its suffix.

objects.csv has one row per object, lengths in pixels:
  image, object_id, area, perimeter, circularity, equivalent_diameter,
  feret_max, feret_min, solidity, eccentricity, centroid_x, centroid_y

OUT/cellseg-manifest.jsonl records what was uploaded (by content hash) and which job holds
it: after a crash, Ctrl-C or a lost connection, re-run the same command to re-attach to the
running jobs, download what finished and upload only what never reached the server.
"""


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="gateway URL ($CELLSEG_URL)")
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="API key ($CELLSEG_API_KEY)")
    common.add_argument(
        "--retry-for",
        type=float,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help="keep retrying an unreachable or unavailable service this long (default 300)",
    )
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output"
    )
    return common


def _formats(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}"
        )
    return names


def _diameter(value: str) -> float | str:
    """``--diameter``: ``auto`` or a number of pixels (the server checks its range)."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"diameter must be 'auto' or a number of pixels, got {value!r}"
        ) from None


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="cellseg",
        description="Command line of CellSeg Serve (cell segmentation service).",
        epilog=EPILOG,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seg = sub.add_parser(
        "segment",
        parents=[common],
        help="segment a folder of images (resumable)",
        description=SEGMENT_HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    seg.add_argument("inputs", nargs="+", type=Path, metavar="DIR_OR_FILE")
    seg.add_argument("--model", required=True, help="hrnet, cbam_resunet or unet")
    seg.add_argument("--threshold", type=float, default=0.5, help="0.05-0.95 (default 0.5)")
    seg.add_argument("--min-area", type=int, default=50, help="pixels (default 50)")
    seg.add_argument("--no-split", action="store_true", help="keep touching objects as one object")
    seg.add_argument(
        "--diameter",
        type=_diameter,
        default=None,
        help="typical object diameter in pixels (5-2000), or auto (default: as trained)",
    )
    seg.add_argument(
        "--plane", type=int, default=None, help="the plane of TIFF stacks to segment (from 0)"
    )
    seg.add_argument(
        "--channel",
        type=int,
        default=None,
        help="the channel of multichannel TIFFs, or colour of RGB images (from 0)",
    )
    seg.add_argument("--out", type=Path, required=True, help="output folder")
    seg.add_argument(
        "--format",
        type=_formats,
        default=("json", "geojson"),
        help=f"comma-separated, of {', '.join(FORMATS)} (default json,geojson)",
    )
    seg.add_argument(
        "--concurrency", type=_positive_int, default=4, help="uploads/downloads at once"
    )
    seg.add_argument(
        "--max-files-per-job",
        type=_positive_int,
        default=None,
        help="cap jobs below the server's MAX_FILES_PER_JOB (smaller jobs start sooner)",
    )
    seg.add_argument(
        "--poll-interval",
        type=float,
        default=2.0,
        help="seconds between status reads when live progress (Socket.IO) is unavailable",
    )
    seg.add_argument("--no-socket", action="store_true", help="poll instead of Socket.IO")
    seg.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    common_json = argparse.ArgumentParser(add_help=False, parents=[common])
    common_json.add_argument("--json", action="store_true", help="print the JSON answer")
    sub.add_parser("models", parents=[common_json], help="models, their workers, upload limits")
    jobs = sub.add_parser("jobs", parents=[common_json], help="your jobs, newest first")
    jobs.add_argument("--limit", type=_positive_int, default=20, help="at most 100")
    jobs.add_argument("--offset", type=int, default=0)
    status = sub.add_parser("status", parents=[common_json], help="one job's status, failures")
    status.add_argument("job_id", metavar="JOB")
    cancel = sub.add_parser("cancel", parents=[common_json], help="cancel a job's waiting images")
    cancel.add_argument("job_id", metavar="JOB")
    sub.add_parser("health", parents=[common_json], help="is the service alive and ready")
    return parser


# --- commands ----------------------------------------------------------------------------------


def _print(text: str = "") -> None:
    sys.stdout.write(text + "\n")


async def cmd_models(client: AsyncClient, args: argparse.Namespace) -> Exit:
    models = await client.models()
    limits = await client.limits()  # read with the models
    if args.json:
        _print(json.dumps({"models": [vars(m) for m in models], "limits": vars(limits)}, indent=1))
        return Exit.OK
    for m in models:
        workers = ", ".join(str(w.get("worker")) for w in m.workers) or "no live worker"
        _print(f"{m.name:14} {m.variant or '-':6} input {m.input_size or '-'}  {workers}")
    _print(
        f"limits: {limits.max_files_per_job} files and {limits.max_upload_mb} MB per job, "
        f"{limits.max_image_pixels} pixels per image"
    )
    return Exit.OK


async def cmd_jobs(client: AsyncClient, args: argparse.Namespace) -> Exit:
    page = await client.jobs(limit=min(args.limit, 100), offset=args.offset)
    if args.json:
        _print(json.dumps([j.raw for j in page.items], indent=1))
        return Exit.OK
    for j in page.items:
        c = j.counts
        progress = f"{c.done}/{c.total} done, {c.failed} failed" if c else ""
        _print(f"{j.id}  {j.status:9} {j.model:12} {progress:24} {j.created_at or ''}")
    _print(f"{len(page.items)} of {page.total} job(s)")
    return Exit.OK


async def cmd_status(client: AsyncClient, args: argparse.Namespace) -> Exit:
    job = await client.job(await resolve_job_id(client, args.job_id))
    if args.json:
        _print(json.dumps(job.raw, indent=1))
        return Exit.OK
    c = job.counts
    _print(
        f"job {job.id}: {job.status} ({job.model}, threshold {job.threshold:g}, "
        f"min_area {job.min_area})"
    )
    if c is not None:
        _print(
            f"  {c.total} images: {c.queued} queued, {c.processing} processing, {c.done} done, "
            f"{c.failed} failed, {c.cancelled} cancelled"
        )
    for im in job.images:
        if im.error is not None:
            _print(f"  {im.filename}: {im.status} - {im.error.code}: {im.error.message}")
    return Exit.OK


async def cmd_cancel(client: AsyncClient, args: argparse.Namespace) -> Exit:
    body = await client.cancel(await resolve_job_id(client, args.job_id))
    if args.json:
        _print(json.dumps(body, indent=1))
        return Exit.OK
    _print(
        f"job {body.get('id')}: {body.get('status')}; {body.get('cancelled', 0)} cancelled, "
        f"{body.get('running', 0)} still running, {body.get('done', 0)} done"
    )
    return Exit.OK


async def cmd_health(client: AsyncClient, args: argparse.Namespace) -> Exit:
    health = await client.health()
    if args.json:
        _print(json.dumps(vars(health), indent=1))
    else:
        _print(
            f"{client.url}: {'alive' if health.alive else 'not alive'}, "
            f"{'ready' if health.ready else 'not ready'}"
        )
        for name, check in health.checks.items():
            ok = check.get("ok") if isinstance(check, dict) else None
            detail = check.get("detail") if isinstance(check, dict) else check
            _print(f"  {name}: {'ok' if ok else 'FAILED'} - {detail}")
    return Exit.OK if health.ready else Exit.FAILED


async def cmd_segment(client: AsyncClient, args: argparse.Namespace, display: Display) -> Exit:
    opts = SegmentOptions(
        inputs=args.inputs,
        model=args.model,
        out=args.out,
        threshold=args.threshold,
        min_area=args.min_area,
        split=not args.no_split,
        diameter=args.diameter,
        plane=args.plane,
        channel=args.channel,
        formats=args.format,
        concurrency=args.concurrency,
        max_files_per_job=args.max_files_per_job,
        poll_interval=args.poll_interval,
        use_socket=not args.no_socket,
    )
    report = await SegmentRun(client, opts, display).run()
    if report.ok:
        _print(f"{report.done} of {report.images} images done; results in {args.out}")
        return Exit.OK
    reasons: dict[str, int] = {}
    for _, code, message in report.failures:
        key = f"{code}: {message}" if message else code
        reasons[key] = reasons.get(key, 0) + 1
    listed = "; ".join(f"{n} x {reason}" for reason, n in sorted(reasons.items()))
    _print(
        f"{report.done} of {report.images} images done, {len(report.failures)} failed ({listed})"
    )
    return Exit.FAILED


# --- entry point -------------------------------------------------------------------------------


def _setup_logging(verbose: int, display: Display) -> None:
    """Log records of this package to stderr (above the bar on a terminal)."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler: logging.Handler
    if isinstance(display, RichDisplay):
        handler = display.log_handler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("cellseg: %(levelname)s: %(message)s"))
    package = logging.getLogger("cellseg_client")
    package.handlers[:] = [handler]
    package.setLevel(level)


async def _dispatch(args: argparse.Namespace, url: str, key: str, display: Display) -> Exit:
    retry = RetryPolicy(max_attempts=1000, max_elapsed_s=getattr(args, "retry_for", 300.0))
    concurrency = getattr(args, "concurrency", 4)
    async with AsyncClient(url, key, max_concurrency=concurrency, retry=retry) as client:
        if args.command == "segment":
            return await cmd_segment(client, args, display)
        command = {
            "models": cmd_models,
            "jobs": cmd_jobs,
            "status": cmd_status,
            "cancel": cmd_cancel,
            "health": cmd_health,
        }[args.command]
        return await command(client, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cellseg`` with ``argv`` (default: the process's arguments); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    display = make_display(quiet=getattr(args, "quiet", False) or args.command != "segment")
    _setup_logging(getattr(args, "verbose", 0), display)
    url = getattr(args, "url", None) or os.environ.get("CELLSEG_URL")
    key = getattr(args, "api_key", None) or os.environ.get("CELLSEG_API_KEY")
    if not url:
        parser.error("no service URL: give --url or set CELLSEG_URL")
    if not key and args.command != "health":
        parser.error("no API key: give --api-key or set CELLSEG_API_KEY")
    try:
        code = int(asyncio.run(_dispatch(args, url, key or "", display)))
        sys.stdout.flush()  # a reader that left shows here, not at the interpreter's exit
        return code
    except BrokenPipeError:
        return _reader_left()
    except KeyboardInterrupt:
        log.error("interrupted; re-run the same command to resume")
        return Exit.INTERRUPTED
    except (UsageError, ManifestError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return Exit.USAGE
    except (ServiceUnavailable, ServerError, RateLimited) as exc:
        log.error("the service is unavailable: %s", exc)
        return Exit.UNAVAILABLE
    except ApiError as exc:
        log.error("the service refused: %s", exc)
        return Exit.REFUSED
    except UnknownJob as exc:
        log.error("%s", exc)
        return Exit.REFUSED
    except CellsegError as exc:  # TransportError and the like: no answer
        log.error("cannot reach the service: %s", exc)
        return Exit.UNAVAILABLE


def _reader_left() -> int:
    """The process reading our output stopped (``cellseg jobs | head``): end quietly.

    Standard output is pointed at /dev/null so the interpreter's final flush raises nothing;
    the exit code is 0, as for a command whose reader simply had enough.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return Exit.OK
