"""``scripts/gpu_check``: check a GPU host in one command and write one report.

Steps, each a child process with a time limit, all within ``--budget-s`` (default 450 s):

1. install what the host lacks from ``wheels/gpu/`` (``make gpu-wheels`` fetched them) into
   ``OUT/site`` with ``pip --no-index`` (nothing of the host's Python is changed);
2. the GPU tests (``tests/gpu/``: streams and pinned copies, CUDA graphs, device
   preprocessing, NVML, out-of-memory split);
3. the profiler on the ``full`` variants (random weights; torch, every precision eager, no
   compile candidates) into a copy of ``batch_sizes.json`` in ``OUT``;
4. the bench on the ``full`` variants against that profile;
5. where Redis and PostgreSQL answer on this host (or can be started), the whole service
   (``scripts.run_local`` on its own ports, database and queue) and a short load test.

The report is ``OUT/gpu_check.md`` and ``OUT/gpu_check.json``; ``OUT`` is ``--out``, else
``$OUT``, else ``var/gpu_check``. Exit code 0 when every step that ran passed. Without CUDA it
writes a report saying so and exits 0. Standard library at the top: it runs before anything
is installed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / "wheels" / "gpu"


@dataclass
class Step:
    name: str
    status: str  # passed, failed, timed out, skipped
    seconds: float = 0.0
    command: str = ""
    summary: str = ""
    tail: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def cuda_device() -> dict[str, Any] | None:
    """The GPU torch sees, or None (no torch, or no CUDA)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": torch.cuda.get_device_name(0),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "count": torch.cuda.device_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "driver": _driver(),
    }


def _driver() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else None


class Runner:
    """Runs the steps as child processes within one time budget."""

    def __init__(
        self, out: Path, budget_s: float, env: dict[str, str], min_step_s: float = 20.0
    ) -> None:
        self.out = out
        self.min_step_s = min_step_s  # a step with less time left than this is skipped
        self.deadline = time.monotonic() + budget_s
        self.env = env
        self.steps: list[Step] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(
        self, name: str, cmd: list[str], limit_s: float, env: dict[str, str] | None = None
    ) -> Step:
        limit = min(limit_s, self.left())
        shown = " ".join(cmd[1:] if cmd[0] == sys.executable else cmd)
        if limit < self.min_step_s:
            return self.add(Step(name, "skipped", command=shown, summary="no time left"))
        slug = re.sub(r"\W+", "-", name)
        log = self.out / f"{slug}.log"
        started = time.monotonic()
        with log.open("w") as sink:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                code: int | None = proc.wait(limit)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                code = None
        text = log.read_text(errors="replace")
        status = "timed out" if code is None else "passed" if code == 0 else "failed"
        step = Step(name, status, round(time.monotonic() - started, 1), shown)
        step.tail = "\n".join(text.splitlines()[-25:])
        step.summary = f"exit {code}" if code is not None else f"killed after {limit:.0f} s"
        step.details["log"] = log.name
        return self.add(step)

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        print(f"gpu_check: {step.name}: {step.status} ({step.seconds} s) {step.summary}")
        return step


def install(runner: Runner, wheels: Path, site: Path) -> None:
    found = sorted(wheels.glob("*.whl"))
    if not found:
        runner.add(Step("install wheels", "skipped", summary=f"no wheels in {wheels}: run "
                        "`make gpu-wheels` where a package index is reachable"))
        return
    stamp = site / ".wheels"
    listing = "\n".join(p.name for p in found)
    if stamp.is_file() and stamp.read_text() == listing:
        runner.add(Step("install wheels", "passed", summary=f"{len(found)} wheels already in "
                        f"{site}"))
        return
    shutil.rmtree(site, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
           "--disable-pip-version-check", "--target", str(site), *map(str, found)]
    step = runner.run("install wheels", cmd, 180)
    if step.status == "passed":
        stamp.write_text(listing)
        step.summary = f"{len(found)} wheels into {site}"


def answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def datastores() -> str | None:
    """Why the service cannot run here, or None when Redis and PostgreSQL can be had."""
    redis = answers(6379) or shutil.which("redis-server")
    postgres = answers(5432) or shutil.which("pg_ctlcluster")
    if redis and postgres:
        return None
    missing = [n for n, ok in (("Redis", redis), ("PostgreSQL", postgres)) if not ok]
    return f"no {' or '.join(missing)} on this host"


def load_test(runner: Runner, full: dict[str, str]) -> None:
    why = datastores()
    if why:
        runner.add(Step("load test", "skipped", summary=why))
        return
    port, key, tag = free_port(), "gpu-check-" + secrets.token_hex(8), secrets.token_hex(3)
    env = {
        **runner.env,
        **full,
        "GATEWAY_PORT": str(port),
        "ADMIN_API_KEY": key,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/cellseg_gpucheck_{tag}",
        "REDIS_URL": "redis://127.0.0.1:6379/12",
        "DISPATCH_QUEUES": f"gpucheck{tag}",
        "WORKER_QUEUE": f"gpucheck{tag}",
        "WORKER_METRICS_PORT": str(free_port()),
        "UPLOAD_DIR": str(runner.out / "uploads"),
    }
    log = (runner.out / "service.log").open("w")
    service = subprocess.Popen(
        [sys.executable, "-m", "scripts.run_local"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if not _ready(url, min(150.0, runner.left() - 60), service):
            runner.add(Step("load test", "failed", summary="the service did not get ready "
                            "(service.log)"))
            return
        report = runner.out / "loadtest.json"
        cmd = [sys.executable, "-m", "loadtest", "--url", url, "--users", "8",
               "--images-per-user", "6", "--size", "1024", "--admin-key", key,
               "--timeout", "120", "--json", str(report)]
        step = runner.run("load test", cmd, 150)
        if report.is_file():
            run = json.loads(report.read_text())["run"]
            step.details["summary"] = run
            step.summary = (f"{run['done']}/{run['images']} images, {run['images_per_s']} img/s, "
                            f"p95 {run['latency_s']['p95']} s, events lost {run['events_lost']}")
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
        log.close()


def _ready(url: str, within_s: float, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(1)
    return False


def pytest_summary(tail: str) -> str:
    found = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|error).*?)\s*=*$", tail, re.M)
    return found[-1] if found else ""


def write(out: Path, report: dict[str, Any]) -> None:
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    lines = ["# GPU check", "", f"- when: {report['started']}", f"- host: {report['host']}"]
    gpu = report.get("gpu")
    lines.append(f"- GPU: {json.dumps(gpu) if gpu else report.get('note', 'none')}")
    lines += ["", "| step | status | seconds | summary |", "|---|---|---|---|"]
    for s in report["steps"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']} | {s['summary']} |")
    for s in report["steps"]:
        if s["tail"]:
            lines += ["", f"## {s['name']}", "", f"`{s['command']}`", "", "```", s["tail"], "```"]
    if report.get("profile"):
        lines += ["", "## Profile entry", "", "```json", json.dumps(report["profile"], indent=1)
                  [:20000], "```"]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or
                                                          ROOT / "var" / "gpu_check"))
    parser.add_argument("--wheels", type=Path, default=WHEELS)
    parser.add_argument("--budget-s", type=float, default=450.0)
    parser.add_argument("--no-load-test", action="store_true")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": f"{platform.node()}, Python {platform.python_version()}, {platform.machine()}",
        "steps": [],
    }
    gpu = cuda_device()
    report["gpu"] = gpu
    if gpu is None:
        report["note"] = "no GPU: torch is missing or torch.cuda.is_available() is False"
        print(f"gpu_check: {report['note']}; nothing to check")
        write(out, report)
        return 0
    site = out / "site"
    path = [str(site), str(ROOT), str(ROOT / "client"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p),
           "PYTHONUNBUFFERED": "1"}
    runner = Runner(out, args.budget_s, env)
    install(runner, args.wheels, site)
    tests = runner.run("GPU tests", [sys.executable, "-m", "pytest", "-q", "-p",
                                     "no:cacheprovider", "-rs", "tests/gpu"], 180)
    tests.summary = pytest_summary(tests.tail) or tests.summary
    profiles = out / "batch_sizes.json"
    if not profiles.exists() and (ROOT / "batch_sizes.json").exists():
        shutil.copy(ROOT / "batch_sizes.json", profiles)
    full = {"ML_DEVICE": "cuda", "ML_VARIANT": "full", "ML_ALLOW_RANDOM_WEIGHTS": "1",
            "ML_PROFILES_PATH": str(profiles), "ML_COMPILE_CACHE_DIR": str(out / "inductor"),
            "ML_ONNX_CACHE_DIR": str(out / "onnx")}
    runner.run("profile", [sys.executable, "-m", "ml_service.tools.profile", "--backends",
                           "torch", "--compile", "off", "--max-batch", "16", "--repeats", "5",
                           "--no-pipeline"], 170, full)
    if profiles.exists():
        report["profile"] = json.loads(profiles.read_text()).get("devices", {}).get(gpu["name"])
    bench = runner.run("bench", [sys.executable, "-m", "ml_service.tools.bench", "--device",
                                 "cuda", "--variant", "full", "--callers", "8", "--images",
                                 "64", "--repeats", "3", "--json", str(out / "bench.json")],
                       110, full)
    if (out / "bench.json").is_file():
        bench.details["results"] = json.loads((out / "bench.json").read_text())
    if args.no_load_test:
        runner.add(Step("load test", "skipped", summary="--no-load-test"))
    else:
        load_test(runner, full)
    report["steps"] = [asdict(s) for s in runner.steps]
    write(out, report)
    print(f"gpu_check: report in {out / 'gpu_check.md'}")
    return 0 if all(s.status in ("passed", "skipped") for s in runner.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
