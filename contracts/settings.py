"""Gateway, dispatcher and shared-contract settings, read once from the environment.

Invalid values stop start-up with a message naming the variable (``load_settings``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.storage import InvalidStorageUrl, parse_storage_url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    database_url: str = "postgresql://postgres@127.0.0.1:5432/cellseg"
    database_connection_pool_size: int = Field(20, ge=2, le=1000)
    redis_url: str = "redis://127.0.0.1:6379/0"
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8000, ge=1, le=65535)
    gateway_workers: int = Field(1, ge=1, le=64)
    upload_dir: Path = Path("var/uploads")
    storage_url: str | None = Field(
        None, description="file:///path or s3://bucket/prefix (default: file://<UPLOAD_DIR>)"
    )
    aws_region: str | None = Field(
        None,
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"),
        description="S3 region (boto3 reads the endpoint and credentials itself)",
    )
    retention_days: int = Field(0, ge=0, le=36_500, description="0: keep forever")
    retention_interval_s: float = Field(3600.0, gt=0, le=7 * 86_400)
    retention_batch_jobs: int = Field(500, ge=1, le=100_000)
    max_upload_mb: int = Field(50, ge=1, le=10_000)
    max_files_per_job: int = Field(100, ge=1, le=100_000)
    max_image_pixels: int = Field(100_000_000, ge=1)
    sync_timeout_s: float = Field(60.0, gt=0, le=3600)
    admin_api_key: SecretStr | None = None
    # dispatcher: images released to Celery per worker taking work; by default each worker's
    # window follows its heartbeat (about two full batches, backend.fairness.worker_window)
    dispatch_in_flight_per_queue: int | None = Field(
        None, ge=1, le=10_000, description="override: images in flight per live worker"
    )
    dispatch_interval_s: float = Field(0.2, gt=0, le=60)
    dispatch_queues: str = Field("gpu0", description="comma-separated Celery device queues")
    dispatch_orphan_grace_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="requeue work of a queue that has had no live worker for this long",
    )
    task_time_limit_s: int = Field(600, ge=10, le=86_400)
    broker_visibility_timeout_s: int | None = Field(
        None, ge=1, description="redelivery delay of a lost worker's task (default: limit + 60)"
    )

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            return parse_storage_url(value).url
        except InvalidStorageUrl as exc:
            raise ValueError(str(exc)) from None

    @property
    def storage_location(self) -> str:
        """``STORAGE_URL``, or ``file://<UPLOAD_DIR>`` (absolute) when it is unset."""
        return self.storage_url or f"file://{quote(str(self.upload_dir.resolve()))}"

    @property
    def visibility_timeout_s(self) -> int:
        return self.broker_visibility_timeout_s or self.task_time_limit_s + 60

    @property
    def queues(self) -> list[str]:
        return [q.strip() for q in self.dispatch_queues.split(",") if q.strip()]


class SettingsError(ValueError):
    """Invalid environment: the message names each offending variable."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{str(err['loc'][0]).upper()}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        )
        raise SettingsError(f"invalid configuration: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
