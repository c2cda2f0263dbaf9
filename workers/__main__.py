"""``python -m workers``: one Celery worker process for one device queue.

Threads (``ML_INFERENCE_WORKERS``) run tasks and feed the engine's batchers; the engine is loaded
and warmed up (``worker_init``) before the first task is taken.
"""

from __future__ import annotations

import logging

from workers.celery_app import app
from workers.settings import get_worker_settings


def main() -> None:
    ws = get_worker_settings()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app.worker_main(
        [
            "worker",
            "--queues",
            ws.worker_queue,
            "--pool",
            "threads",
            "--concurrency",
            str(ws.ml_inference_workers),
            "--hostname",
            f"{ws.worker_name}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ]
    )


if __name__ == "__main__":
    main()
