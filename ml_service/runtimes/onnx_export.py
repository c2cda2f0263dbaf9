"""ONNX exports of registry models, cached and verified.

A model is exported from the very module the PyTorch runtime runs (weights loaded from the
verified safetensors file, fp32, eval mode) with a dynamic batch axis: input ``input``
``(N, C, S, S)``, output ``logits`` ``(N, 1, S, S)``. The export lands in ``ML_ONNX_CACHE_DIR``
as ``<model>-<variant>.onnx`` (git-ignored: ``*.onnx``), and carries in its metadata:

- ``cellseg.model``: ``<model>/<variant>``;
- ``cellseg.source_sha256``: sha256 of the safetensors file it was exported from;
- ``cellseg.export_version``: bumped when this exporter changes (opset, names, wrapper);
- ``cellseg.graph_sha256``: sha256 of the serialised graph (nodes and initializers).

A cached file is used only if it parses, names this model, was exported from the same weights
by this exporter version, and its graph hashes to the recorded value; otherwise (stale or
corrupt) it is rebuilt, and the reason logged. The file is read once and the session is built
from those verified bytes, so a file changed after the check is never run. Several processes may
start at once: check-and-rebuild holds an exclusive ``flock`` on the cache directory and files
are replaced atomically. Random weights (benchmarks) are exported in memory, never cached; so is
everything when the cache directory cannot be written (a warning says so). The ONNX Runtime and
OpenVINO runtimes both run this export (:func:`exported`).
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import onnx
import torch
from torch import nn

from ml_service.errors import ExportError
from ml_service.runtimes.base import BuildRequest
from models.registry import ModelSpec

log = logging.getLogger(__name__)

EXPORT_VERSION = "1"
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
META_MODEL = "cellseg.model"
META_SOURCE = "cellseg.source_sha256"
META_VERSION = "cellseg.export_version"
META_GRAPH = "cellseg.graph_sha256"


@dataclass(frozen=True)
class OnnxArtifact:
    """Verified ONNX bytes of one model, and where they came from."""

    data: bytes
    path: Path | None  # None: exported in memory, not cached
    rebuilt: bool  # exported by this call (else read from the cache)
    reason: str  # why it was (re)built, or "cached"


def onnx_path(spec: ModelSpec, cache_dir: Path) -> Path:
    return cache_dir / f"{spec.name}-{spec.variant}.onnx"


def _graph_sha256(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def export_onnx(module: nn.Module, spec: ModelSpec, source_sha256: str) -> bytes:
    """Serialised ONNX of ``module`` (fp32, eval) with a dynamic batch axis and our metadata."""
    size = spec.input_size
    example = torch.zeros(1, spec.in_channels, size, size)
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in module.parameters()):
        module = copy.deepcopy(module).float().cpu()  # never move the caller's module
    module.eval()
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter is deprecated in favour of the dynamo one (which needs
            # onnxscript); it is the one checked on the build machines. Tracer warnings come
            # from shape comparisons that are constant at the fixed input size exported here.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            target = Path(tmp) / "model.onnx"
            torch.onnx.export(
                module,
                (example,),
                target,
                opset_version=OPSET,
                dynamo=False,
                do_constant_folding=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
            model = onnx.load_from_string(target.read_bytes())
    except Exception as exc:  # the exporter raises many types; the caller needs one
        raise ExportError(f"{spec.key}: ONNX export failed: {exc}") from exc
    meta = {
        META_MODEL: spec.key,
        META_SOURCE: source_sha256,
        META_VERSION: EXPORT_VERSION,
        META_GRAPH: _graph_sha256(model),
        "cellseg.opset": str(OPSET),
        "cellseg.torch": torch.__version__,
        "cellseg.created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    return bytes(model.SerializeToString())


def verify_onnx(data: bytes, spec: ModelSpec, source_sha256: str) -> str | None:
    """Why ``data`` must not be used for ``spec`` exported from ``source_sha256``; None if fine."""
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        return f"corrupt: does not parse ({type(exc).__name__})"
    meta = _metadata(model)
    if meta.get(META_MODEL) != spec.key:
        return f"corrupt: made for {meta.get(META_MODEL)!r}, not {spec.key!r}"
    if meta.get(META_VERSION) != EXPORT_VERSION:
        return f"stale: export version {meta.get(META_VERSION)!r}, current {EXPORT_VERSION}"
    if meta.get(META_SOURCE) != source_sha256:
        return f"stale: exported from weights {meta.get(META_SOURCE)}, now {source_sha256}"
    if meta.get(META_GRAPH) != _graph_sha256(model):
        return "corrupt: graph checksum mismatch"
    return None


def _atomic_write(path: Path, data: bytes) -> None:
    # the temporary name ends in .onnx too, so a leftover is git-ignored like the export
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".onnx")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Exclusive lock on the cache directory (no lock file to leave behind)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def ensure_onnx(
    module: nn.Module, spec: ModelSpec, source_sha256: str | None, cache_dir: Path
) -> OnnxArtifact:
    """Verified ONNX bytes for ``spec``: from the cache when valid, else exported (and cached).

    ``source_sha256`` None means random weights: exported in memory, never cached.
    """
    if source_sha256 is None:
        data = export_onnx(module, spec, "random")
        return OnnxArtifact(data, None, True, "random weights: exported in memory")
    path = onnx_path(spec, cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with _locked(cache_dir):
            return _cached_or_rebuilt(module, spec, source_sha256, path)
    except OSError as exc:
        log.warning("%s: ONNX cache %s not usable (%s); exporting in memory", spec.key, path, exc)
        data = export_onnx(module, spec, source_sha256)
        return OnnxArtifact(data, None, True, f"cache not usable: {exc}")


def exported(request: BuildRequest) -> bytes:
    """The verified export of the model a runtime is asked to build (``ML_ONNX_CACHE_DIR``)."""
    cache_dir = request.settings.onnx_cache_dir
    return ensure_onnx(request.module, request.spec, request.weights_sha256, cache_dir).data


def _cached_or_rebuilt(
    module: nn.Module, spec: ModelSpec, source_sha256: str, path: Path
) -> OnnxArtifact:
    if path.exists():
        data = path.read_bytes()
        problem = verify_onnx(data, spec, source_sha256)
        if problem is None:
            log.info("%s: using cached ONNX export %s", spec.key, path)
            return OnnxArtifact(data, path, False, "cached")
        log.warning("%s: cached ONNX export %s is %s; rebuilding", spec.key, path, problem)
        reason = problem
    else:
        reason = "no export yet"
    data = export_onnx(module, spec, source_sha256)
    problem = verify_onnx(data, spec, source_sha256)
    if problem is not None:  # an exporter bug, not a cache problem
        raise ExportError(f"{spec.key}: fresh ONNX export does not verify: {problem}")
    _atomic_write(path, data)
    log.info("%s: exported ONNX to %s (%s)", spec.key, path, reason)
    return OnnxArtifact(data, path, True, reason)
