"""Worker-process settings (the engine's own are ``ML_*`` in ml_service.settings)."""

from __future__ import annotations

import socket
from functools import lru_cache

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    worker_queue: str = Field("gpu0", description="Celery queue of this worker's device")
    worker_name: str = Field(default_factory=lambda: f"worker-{socket.gethostname()}")
    ml_inference_workers: int = Field(8, ge=1, le=256, description="task threads per worker")
    worker_heartbeat_s: float = Field(5.0, gt=0, le=300)
    worker_db_pool_size: int = Field(4, ge=2, le=100)
    worker_metrics_port: int = Field(9101, ge=0, le=65535, description="0: no metrics server")


class WorkerSettingsError(ValueError):
    pass


@lru_cache(maxsize=1)
def get_worker_settings() -> WorkerSettings:
    try:
        return WorkerSettings()
    except ValidationError as exc:
        problems = "; ".join(f"{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors())
        raise WorkerSettingsError(f"invalid worker configuration: {problems}") from None
