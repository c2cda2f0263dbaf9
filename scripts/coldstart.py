"""Worker cold start, per model: process start → models loaded → warmed → accepting tasks.

    python -m scripts.coldstart [--models hrnet,unet,cbam_resunet] [--json out.json]

For each model it starts a fresh ``python -m workers`` with only that model (weights from
safetensors), and times: the worker's heartbeat appearing in Redis (the engine has loaded,
verified, calibrated and warmed up its model; the heartbeat carries the engine's own load and
warm-up durations) and Celery's ``ready`` line (the worker consumes tasks). Needs PostgreSQL and
Redis running (``make run`` starts them).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent


def measure(model: str, redis_url: str, timeout: float = 300) -> dict[str, Any]:
    name = f"coldstart-{model}-{secrets.token_hex(3)}"
    env = {
        **os.environ,
        "ML_MODELS": model,
        "WORKER_NAME": name,
        "WORKER_QUEUE": f"coldstart-{secrets.token_hex(3)}",
        "WORKER_METRICS_PORT": "0",
        "WORKER_HEARTBEAT_S": "0.2",
        "REDIS_URL": redis_url,
    }
    client = redis.Redis.from_url(redis_url)
    with tempfile.NamedTemporaryFile("w+b", suffix=".log") as log:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        heartbeat: dict[str, Any] | None = None
        t_heartbeat = t_ready = None
        try:
            while time.monotonic() - started < timeout and (t_ready is None or heartbeat is None):
                if heartbeat is None:
                    raw = client.get(f"cellseg:worker:{name}")
                    if raw:
                        heartbeat = json.loads(raw)
                        t_heartbeat = time.monotonic() - started
                if t_ready is None and b" ready." in Path(log.name).read_bytes():
                    t_ready = time.monotonic() - started
                if proc.poll() is not None:
                    raise RuntimeError(Path(log.name).read_text()[-3000:])
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(30)
    if heartbeat is None or t_ready is None:
        raise TimeoutError(f"{model}: worker not ready after {timeout} s")
    return {
        "model": model,
        "device": heartbeat["device"],
        "engine_load_s": heartbeat["startup_s"]["load"],
        "engine_calibrate_and_warm_up_s": heartbeat["startup_s"]["calibrate_and_warm_up"],
        "process_start_to_warm_s": round(t_heartbeat or 0.0, 2),
        "process_start_to_accepting_tasks_s": round(t_ready, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure worker cold start per model")
    parser.add_argument("--models", default="hrnet,cbam_resunet,unet")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = [measure(m, args.redis_url) for m in args.models.split(",")]
    for row in rows:
        sys.stdout.write(json.dumps(row) + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
