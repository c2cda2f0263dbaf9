"""Weight files: safetensors plus a JSON sidecar, verified on load.

A weight file ``<name>-<variant>.safetensors`` holds tensors only (no optimizer state, no
pickle); its sidecar ``<name>-<variant>.json`` records the architecture, variant, input size,
the file's sha256, an architecture fingerprint (parameter names and shapes), how the weights
were trained and their validation score. Loading refuses a checksum or architecture mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from models.errors import WeightsError
from models.registry import ModelSpec

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SIDECAR_VERSION = 1


@dataclass(frozen=True)
class WeightPaths:
    tensors: Path
    sidecar: Path


def weight_paths(spec: ModelSpec, weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> WeightPaths:
    stem = f"{spec.name}-{spec.variant}"
    return WeightPaths(weights_dir / f"{stem}.safetensors", weights_dir / f"{stem}.json")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def architecture_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over sorted (name, shape) pairs: equal iff the tensors fit the same architecture."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(f"{name}:{tuple(state[name].shape)};".encode())
    return digest.hexdigest()


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(
    model: nn.Module,
    spec: ModelSpec,
    weights_dir: Path = DEFAULT_WEIGHTS_DIR,
    *,
    training: Mapping[str, Any] | None = None,
    validation: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float16,
) -> WeightPaths:
    """Write ``model``'s tensors (floats cast to ``dtype``) and the sidecar, atomically.

    ``extra`` adds top-level sidecar fields (e.g. ``train_diameter_px``: the median equivalent
    diameter of the training objects, in pixels)."""
    state = {
        k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    paths = weight_paths(spec, weights_dir)
    meta = {"name": spec.name, "variant": spec.variant, "architecture": spec.architecture}
    _atomic_write(paths.tensors, lambda p: save_file(state, str(p), metadata=meta))
    sidecar = {
        "sidecar_version": SIDECAR_VERSION,
        **meta,
        "input_size": [spec.input_size, spec.input_size],
        "in_channels": spec.in_channels,
        "normalisation": spec.normalisation,
        "dtype": str(dtype).removeprefix("torch."),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "architecture_fingerprint": architecture_fingerprint(state),
        "sha256": sha256_file(paths.tensors),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **dict(extra or {}),
        "training": dict(training or {}),
        "validation": dict(validation or {}),
    }
    text = json.dumps(sidecar, indent=2) + "\n"
    _atomic_write(paths.sidecar, lambda p: p.write_text(text))
    return paths


def read_sidecar(paths: WeightPaths) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(paths.sidecar.read_text())
    except FileNotFoundError:
        raise WeightsError(f"weight sidecar missing: {paths.sidecar}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"weight sidecar {paths.sidecar} is not valid JSON: {exc}") from None
    return data


def load_weights(
    model: nn.Module, spec: ModelSpec, weights_dir: Path = DEFAULT_WEIGHTS_DIR
) -> dict[str, Any]:
    """Verify and load a spec's weights into ``model``; returns the sidecar.

    Raises ``WeightsError`` when the file is missing, its checksum differs from the sidecar's,
    or it was made for another model, variant or architecture.
    """
    paths = weight_paths(spec, weights_dir)
    if not paths.tensors.exists():
        raise WeightsError(f"weight file missing for {spec.key}: {paths.tensors}")
    sidecar = read_sidecar(paths)
    for field_name, expected in (("name", spec.name), ("variant", spec.variant)):
        if sidecar.get(field_name) != expected:
            raise WeightsError(
                f"{paths.sidecar} is for {field_name}={sidecar.get(field_name)!r}, not {expected!r}"
            )
    actual = sha256_file(paths.tensors)
    if actual != sidecar.get("sha256"):
        raise WeightsError(
            f"checksum mismatch for {paths.tensors}: file sha256 {actual}, "
            f"sidecar says {sidecar.get('sha256')}"
        )
    try:
        state = load_file(str(paths.tensors))
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"cannot read {paths.tensors}: {exc}") from None
    expected_state = model.state_dict()
    if architecture_fingerprint(state) != architecture_fingerprint(expected_state):
        missing = sorted(set(expected_state) - set(state))[:5]
        extra = sorted(set(state) - set(expected_state))[:5]
        raise WeightsError(
            f"{paths.tensors} does not fit architecture {spec.architecture!r} "
            f"(missing {missing}, unexpected {extra}, or shapes differ)"
        )
    model.load_state_dict({k: v.to(expected_state[k].dtype) for k, v in state.items()}, strict=True)
    return sidecar


def extract_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The model tensors of a PyTorch checkpoint: a bare state_dict, or a training checkpoint
    dict holding ``model_state_dict``/``state_dict``/``model`` beside optimizer state.
    ``module.`` prefixes (DataParallel/DDP) are removed."""
    if not isinstance(checkpoint, Mapping):
        raise WeightsError(f"checkpoint is a {type(checkpoint).__name__}, not a dict")
    state: Any = checkpoint
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(checkpoint.get(key), Mapping):
            state = checkpoint[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError("checkpoint holds no tensors (expected a state_dict)")
    return {k.removeprefix("module."): v for k, v in tensors.items()}


def import_checkpoint(
    checkpoint_path: Path,
    spec: ModelSpec,
    weights_dir: Path = DEFAULT_WEIGHTS_DIR,
    *,
    dtype: torch.dtype = torch.float32,
    note: str = "",
) -> WeightPaths:
    """Turn a PyTorch checkpoint into a lean safetensors file (model tensors only)."""
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise WeightsError(f"cannot read checkpoint {checkpoint_path}: {exc}") from None
    state = extract_state_dict(checkpoint)
    model = spec.build()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"checkpoint {checkpoint_path} does not fit {spec.key}: {str(exc)[:500]}"
        ) from None
    training = {"source": "imported", "checkpoint": checkpoint_path.name, "note": note}
    return save_weights(model, spec, weights_dir, training=training, dtype=dtype)
