"""The Celery application of the GPU workers (broker: Redis).

Policy is declared here and at the task: late acks (tasks are idempotent), prefetch 1, tasks of
a worker lost mid-run are redelivered, the broker's visibility timeout is above the longest
task, one queue per device so ops can pin workers to GPUs.
"""

from __future__ import annotations

from celery import Celery

from contracts.requests import TASK_SEGMENT  # noqa: F401 (the task's name)
from contracts.settings import get_settings


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("cellseg", broker=settings.redis_url, include=["workers.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_time_limit=settings.task_time_limit_s,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,
    )
    return app


app = make_celery()
