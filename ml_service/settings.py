"""Engine settings, read once from the environment (``ML_*`` and ``MAX_IMAGE_PIXELS``).

Invalid values stop start-up with pydantic's message, which names the variable.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.registry import MODEL_NAMES
from models.weights import DEFAULT_WEIGHTS_DIR

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROFILES = REPO_ROOT / "batch_sizes.json"
DEFAULT_ONNX_CACHE = REPO_ROOT / "var" / "onnx"
DEFAULT_COMPILE_CACHE = REPO_ROOT / "var" / "inductor"
PrecisionSetting = Literal["auto", "fp32", "tf32", "bf16", "fp16"]
CompileSetting = Literal["auto", "off", "on"]
DevicePreprocessSetting = Literal["auto", "on", "off"]



BF16_AT = "bf16@"


def parse_precision(precision: str) -> tuple[str, tuple[int, ...] | None]:
    """``fp32`` → ("fp32", None); ``bf16`` → ("bf16", None) (stem rule); ``bf16@4,8`` →
    ("bf16", (4, 8)). Raises ``ValueError`` naming the valid forms."""
    if precision in ("fp32", "bf16"):
        return precision, None
    if precision.startswith(BF16_AT):
        parts = precision[len(BF16_AT) :].split(",")
        if all(p.isdigit() for p in parts):
            strides = tuple(sorted({int(p) for p in parts}))
            if all(s > 0 and s & (s - 1) == 0 for s in strides):
                return "bf16", strides
    raise ValueError(
        f"OpenVINO precision must be fp32, bf16 (stem in fp32) or bf16@S[,S...] (bf16 only "
        f"at 1/S resolution, S a power of two), got {precision!r}"
    )


def precision_at(strides: Iterable[int]) -> str:
    """The precision that runs bf16 only at ``strides``: ``precision_at([8, 4]) == "bf16@4,8"``."""
    return BF16_AT + ",".join(str(s) for s in sorted(set(strides)))


class EngineSettings(BaseSettings):
    """Settings of the inference engine (one per worker process)."""

    model_config = SettingsConfigDict(env_prefix="ML_", extra="ignore", frozen=True)

    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    models: Annotated[tuple[str, ...], NoDecode] = Field(
        MODEL_NAMES, description="comma-separated models to load"
    )
    variant: Literal["small", "full"] = "small"
    weights_dir: Path = DEFAULT_WEIGHTS_DIR
    allow_random_weights: bool = Field(
        False, description="benchmarks only: run models whose weight file is missing"
    )
    memory_limit_gb: float | None = Field(
        None, gt=0, description="CPU: host memory the engine may use (default: all available)"
    )
    memory_safety_mb: int = Field(512, ge=0, description="device memory kept free")
    max_queue_delay_ms: float = Field(10.0, ge=0, le=10_000)
    max_batch_size: int = Field(32, ge=1, le=1024)
    batch_concurrency: int | None = Field(
        None, ge=1, le=64, description="batches in flight per device (default: 2 GPU, 1 CPU)"
    )
    cpu_threads: int = Field(2, ge=1, le=256, description="pre/postprocessing threads")
    cpu_workers: int | None = Field(
        None,
        ge=0,
        le=64,
        description="processes decoding and postprocessing (0: in the CPU threads; "
        "default: min(cores − 1, 8), 0 on one core)",
    )
    precision: PrecisionSetting = Field(
        "auto", description="torch runtime: auto (the profile's choice, else fp32) or forced"
    )
    compile: CompileSetting = Field(
        "auto", description="torch runtime: torch.compile as recorded (auto), off or on"
    )
    compile_cache_dir: Path = Field(
        DEFAULT_COMPILE_CACHE,
        description="torch.compile's on-disk cache (TORCHINDUCTOR_CACHE_DIR, unless that is "
        "set): a restarted worker compiles from it in seconds",
    )
    device_preprocess: DevicePreprocessSetting = Field(
        "auto",
        description="torch runtime: normalise and letterbox/tile on the device from the decoded "
        "pixels (auto: on CUDA devices only)",
    )
    backend: str = Field(
        "auto",
        description="ML_BACKEND picks the inference runtime: auto (per model the faster one "
        "recorded for this device) or a registered runtime's name (torch, onnxruntime, "
        "openvino), checked against ml_service.runtimes.registry when the engine starts",
    )
    torch_threads: int | None = Field(
        None, ge=1, le=256, description="PyTorch intra-op threads (default: cores given / batches)"
    )
    onnx_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="ONNX Runtime and OpenVINO threads per batch (default: as for torch)",
    )
    openvino_precision: str = Field(
        "auto",
        description="openvino runtime: auto (the profile's choice, else fp32), fp32, bf16 "
        "with the stem in fp32, or bf16@S[,S...] (bf16 only at 1/S resolution, e.g. bf16@4)",
    )
    onnx_cache_dir: Path = Field(
        DEFAULT_ONNX_CACHE, description="ONNX exports of the weights (rebuilt when stale)"
    )
    profiles_path: Path = DEFAULT_PROFILES
    tile_overlap: int = Field(32, ge=0, le=512)
    max_image_pixels: int = Field(
        100_000_000,
        ge=1,
        validation_alias=AliasChoices("MAX_IMAGE_PIXELS", "ML_MAX_IMAGE_PIXELS"),
    )

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in value if m not in MODEL_NAMES]
        if unknown or not value:
            raise ValueError(f"unknown model(s) {unknown}; valid: {', '.join(MODEL_NAMES)}")
        return tuple(dict.fromkeys(value))

    @field_validator("openvino_precision")
    @classmethod
    def _openvino_precision(cls, value: str) -> str:
        v = value.strip().lower()
        if v == "auto":
            return v
        _, strides = parse_precision(v)  # its ValueError names the valid forms
        return v if strides is None else precision_at(strides)  # as the profiler writes it

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        v = value.strip().lower()
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("must be auto, cpu, cuda or cuda:N")


class SettingsError(ValueError):
    """Invalid environment: the message names each offending variable."""


def _env_name(field: str) -> str:
    if field == "max_image_pixels":
        return "MAX_IMAGE_PIXELS"
    return f"ML_{field.upper()}"


def load_settings() -> EngineSettings:
    """Read the environment; on error raise ``SettingsError`` naming the variables."""
    try:
        return EngineSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{_env_name(str(err['loc'][0]))}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        )
        raise SettingsError(f"invalid engine configuration: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> EngineSettings:
    return load_settings()
